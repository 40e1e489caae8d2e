package io.lazyblk.tools;

import io.lazyblk.pull.rdma.RdmaProbe;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

/**
 * {@code lazyblk doctor}: what this host can use (JDK, QEMU, libdisni and RDMA devices, memfd, UNIX sockets; and
 * io_uring, which lazyblk does not use but the benchmarks' qemu-storage-daemon does) and so which transports ({@code tcp://}, {@code shm://}, {@code rdma://}) will work, each with what to do
 * about a missing piece. A report: it exits 0 whatever is missing, nonzero only if it cannot report.
 */
@Command(name = "doctor", mixinStandardHelpOptions = true,
    description = {"Report what this host can use: JDK, QEMU, libdisni and RDMA devices, memfd and UNIX sockets,",
        "and which transports (tcp://, shm://, rdma://) will work here, with what to do about what is missing.",
        "Also io_uring, which lazyblk does not use: the benchmarks' qemu-storage-daemon reference runs with aio=io_uring.",
        "Exits 0 even when something is missing; --format kv prints key=value lines for scripts."})
public final class DoctorCommand implements Callable<Integer> {
    enum Format { human, kv }

    /** The oldest JDK lazyblk runs on (FFM, docs/architecture.md). */
    static final int MIN_JDK = 25;

    @Option(names = "--format", defaultValue = "human",
        description = "human or kv (key=value lines: jdk=ok, libdisni=found|missing, io_uring=available|disabled|not-supported, "
            + "transport.tcp=available, transport.shm=available|unavailable, transport.rdma=available|fallback-tcp, ...)")
    Format format;

    /** One finding: its kv key and value, and the human line (null: kv only). */
    private record Line(String key, String value, String human) {
    }

    @Override
    public Integer call() {
        final List<Line> lines = report();
        if (format == Format.kv) {
            final Map<String, String> kv = new LinkedHashMap<>();
            for (final Line l : lines) {
                kv.put(l.key(), l.value());
            }
            final StringBuilder b = new StringBuilder();
            kv.forEach((k, v) -> b.append(k).append('=').append(v.replace('\n', ' ')).append('\n'));
            System.out.print(b);
        } else {
            for (final Line l : lines) {
                if (l.human() != null) {
                    System.out.println(l.human());
                }
            }
        }
        System.out.flush();
        return 0;
    }

    private static List<Line> report() {
        final List<Line> out = new java.util.ArrayList<>();
        // JDK
        final int feature = Runtime.version().feature();
        final String javaHome = System.getProperty("java.home");
        final boolean jdkOk = feature >= MIN_JDK;
        out.add(new Line("jdk", jdkOk ? "ok" : "too-old", String.format("%-10s %-14s %s at %s%s", "jdk", jdkOk ? "ok" : "FAIL",
            Runtime.version(), javaHome, jdkOk ? "" : " (lazyblk needs JDK " + MIN_JDK + "+: install Temurin 25)")));
        out.add(new Line("jdk.version", Runtime.version().toString(), null));
        out.add(new Line("jdk.path", javaHome, null));
        // QEMU
        qemu(out, "qemu.system", "qemu-system-x86_64", "qemu-system-x86");
        qemu(out, "qemu.storage_daemon", "qemu-storage-daemon", "qemu-system-common");
        // RDMA
        final RdmaProbe.Availability rdma = RdmaProbe.probe();
        final Path lib = rdma.libdisni();
        out.add(new Line("libdisni", lib == null ? "missing" : "found", String.format("%-10s %-14s %s", "libdisni",
            lib == null ? "missing" : "found", lib == null ? "not on java.library.path or LD_LIBRARY_PATH: build it from DiSNI's "
                + "source (docs/rdma.md)" : lib.toString())));
        if (lib != null) {
            out.add(new Line("libdisni.path", lib.toString(), null));
        }
        final String ports = String.join(",", rdma.ports().stream().map(p -> p.device() + ":" + p.port() + ":" + p.state()).toList());
        out.add(new Line("rdma.devices", String.join(",", rdma.devices()), String.format("%-10s %-14s %s", "rdma",
            rdma.devices().isEmpty() ? "none" : rdma.devices().size() + " device" + (rdma.devices().size() == 1 ? "" : "s"),
            rdma.devices().isEmpty() ? "no RDMA device (/sys/class/infiniband is empty or missing)"
                : rdma.ports().isEmpty() ? String.join(", ", rdma.devices()) + " (no ports reported)"
                : String.join(", ", rdma.ports().stream().map(RdmaProbe.Port::toString).toList()))));
        out.add(new Line("rdma.ports", ports, null));
        // kernel facilities
        final HostChecks.Verdict uring = HostChecks.ioUring(Path.of("/proc"));
        out.add(new Line("io_uring", uring.value(), String.format("%-10s %-14s %s", "io_uring", uring.value(), uring.detail()
            + " (not used by lazyblk; the benchmarks' qemu-storage-daemon runs with aio=io_uring)")));
        final HostChecks.Verdict memfd = HostChecks.memfd();
        out.add(new Line("memfd", memfd.value(), String.format("%-10s %-14s %s", "memfd", memfd.value(), memfd.detail())));
        final HostChecks.Verdict unix = HostChecks.unixSockets();
        out.add(new Line("unix_sockets", unix.value(), String.format("%-10s %-14s %s", "unix", unix.value(), unix.detail())));
        // transports
        out.add(new Line("transport.tcp", "available", String.format("%-10s %-14s %s", "tcp://", "available",
            "always (the image provider's own protocol)")));
        final boolean shm = "available".equals(memfd.value()) && "available".equals(unix.value());
        out.add(new Line("transport.shm", shm ? "available" : "unavailable", String.format("%-10s %-14s %s", "shm://",
            shm ? "available" : "unavailable", shm ? "same-host image server: its read-only fd of the image is passed over the UNIX socket and pages are"
                + " read from the host's page cache, no copy over a socket"
                : "needs memfd and UNIX sockets: memfd " + memfd.value() + ", UNIX sockets " + unix.value())));
        out.add(new Line("transport.rdma", rdma.usable() ? "available" : "fallback-tcp", String.format("%-10s %-14s %s", "rdma://",
            rdma.usable() ? "available" : "fallback-tcp", rdma.usable() ? rdma.reason()
                : "falls back to tcp:// because " + rdma.reason())));
        out.add(new Line("transport.rdma.reason", rdma.reason(), null));
        return out;
    }

    private static void qemu(final List<Line> out, final String key, final String program, final String aptPackage) {
        final Path p = HostChecks.onPath(program);
        if (p == null) {
            out.add(new Line(key, "missing", String.format("%-10s %-14s %s not on PATH: apt-get install %s", "qemu", "missing",
                program, aptPackage)));
            return;
        }
        final String version = HostChecks.version(p);
        out.add(new Line(key, p.toString(), String.format("%-10s %-14s %s: %s", "qemu", "found", p, version)));
        out.add(new Line(key + ".version", version, null));
    }
}
