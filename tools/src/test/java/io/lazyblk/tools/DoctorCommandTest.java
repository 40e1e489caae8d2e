package io.lazyblk.tools;

import io.lazyblk.pull.rdma.RdmaProbe;
import org.junit.jupiter.api.Test;

import java.util.LinkedHashMap;
import java.util.Map;

import static io.lazyblk.tools.CliRun.run;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

/** {@code lazyblk doctor} as an operator and a script read it, on this host (no RDMA, no libdisni). */
class DoctorCommandTest {
    private static Map<String, String> kv(final String out) {
        final Map<String, String> m = new LinkedHashMap<>();
        for (final String line : out.split("\n")) {
            final int eq = line.indexOf('=');
            assertTrue(eq > 0, "not a key=value line: '" + line + "'");
            m.put(line.substring(0, eq), line.substring(eq + 1));
        }
        return m;
    }

    @Test
    void shouldReportFromItsOwnProcessWithTheEnginesJvmFlagsAndExitZero(@org.junit.jupiter.api.io.TempDir final java.nio.file.Path dir)
        throws java.io.IOException {
        try (LazyblkProcess p = LazyblkProcess.start("doctor", dir, "doctor", "--format", "kv")) {
            assertEquals(0, p.awaitExit(java.time.Duration.ofSeconds(60)), p.output());
            final Map<String, String> m = kv(String.join("\n", p.output().lines().filter(l -> l.contains("=")).toList()));
            assertEquals("available", m.get("transport.tcp"));
            assertEquals(RdmaProbe.probe().usable() ? "available" : "fallback-tcp", m.get("transport.rdma"), p.output());
            assertTrue(!p.output().contains("UnsatisfiedLinkError") && !p.output().contains("Exception"), p.output());
        }
    }

    @Test
    void shouldPrintHelp() {
        final CliRun r = run("doctor", "--help");
        assertEquals(0, r.code());
        assertTrue(r.out().contains("Usage: lazyblk doctor") && r.out().contains("--format"), r.out());
    }

    @Test
    void shouldReportOneLinePerTransportAndExitZeroAlthoughRdmaIsMissing() {
        final CliRun r = run("doctor");
        assertEquals(0, r.code(), r.out() + r.err());
        final String tcp = line(r.out(), "tcp://");
        assertTrue(tcp.contains("available"), tcp);
        final String shm = line(r.out(), "shm://");
        assertTrue(shm.contains("available") && !shm.contains("unavailable"), "memfd and UNIX sockets work here: " + shm);
        assertTrue(line(r.out(), "jdk").contains("ok") && line(r.out(), "jdk").contains(System.getProperty("java.home")), r.out());
        assertTrue(line(r.out(), "io_uring").matches("io_uring +(available|disabled|not-supported) .*"), r.out());
        final RdmaProbe.Availability rdma = RdmaProbe.probe();
        assumeFalse(rdma.usable(), "RDMA is usable on this host");
        final String rd = line(r.out(), "rdma://");
        assertTrue(rd.contains("falls back to tcp:// because " + rdma.reason()), rd);
        if (rdma.libdisni() == null) {
            assertTrue(rd.contains("libdisni"), "the fallback names the missing library: " + rd);
            assertTrue(line(r.out(), "libdisni").contains("missing"), r.out());
        }
    }

    @Test
    void shouldPrintKeyValueLinesForScripts() {
        final CliRun r = run("doctor", "--format", "kv");
        assertEquals(0, r.code(), r.out() + r.err());
        final Map<String, String> m = kv(r.out());
        assertEquals("available", m.get("transport.tcp"));
        assertEquals("available", m.get("transport.shm"));
        assertEquals("ok", m.get("jdk"));
        assertEquals(String.valueOf(Runtime.version()), m.get("jdk.version"));
        assertTrue(java.util.Set.of("available", "disabled", "not-supported").contains(m.get("io_uring")), m.toString());
        if (readKnob().equals("2")) {
            assertEquals("disabled", m.get("io_uring"), "io_uring_disabled=2");
        }
        assertEquals("available", m.get("memfd"));
        assertEquals("available", m.get("unix_sockets"));
        assertTrue(m.containsKey("qemu.system") && m.containsKey("qemu.storage_daemon"), m.toString());
        final RdmaProbe.Availability rdma = RdmaProbe.probe();
        assumeFalse(rdma.usable(), "RDMA is usable on this host");
        assertEquals("fallback-tcp", m.get("transport.rdma"));
        assertEquals(rdma.reason(), m.get("transport.rdma.reason"));
        if (rdma.libdisni() == null) {
            assertEquals("missing", m.get("libdisni"));
            assertTrue(m.get("transport.rdma.reason").contains("libdisni"), m.toString());
        }
    }

    private static String readKnob() {
        try {
            return java.nio.file.Files.readString(java.nio.file.Path.of("/proc/sys/kernel/io_uring_disabled")).trim();
        } catch (final java.io.IOException e) {
            return "";
        }
    }

    private static String line(final String out, final String prefix) {
        for (final String l : out.split("\n")) {
            if (l.startsWith(prefix + " ")) {
                return l;
            }
        }
        throw new AssertionError("no line starting with '" + prefix + "':\n" + out);
    }
}
