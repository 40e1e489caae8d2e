package io.lazyblk.tools;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Running under systemd: the units pass {@code systemd-analyze verify} (with the install path pointed at this checkout),
 * and {@code serve} and {@code image-server} tell a {@code $NOTIFY_SOCKET} they are ready only once they accept: the
 * vhost-user socket exists and takes a front end, with the mode and group asked for.
 */
class SystemdTest {
    @TempDir
    Path dir;

    private static final Path REPO = Path.of("").toAbsolutePath().getParent();

    @Test
    void shouldShipUnitsThatSystemdAnalyzeVerifies() throws Exception {
        final Path analyze = Path.of("/usr/bin/systemd-analyze");
        assumeTrue(Files.isExecutable(analyze), "systemd-analyze is not installed (Debian package systemd)");
        final Path units = REPO.resolve("tools/systemd");
        Files.writeString(dir.resolve("lazyblk@vm1.service"),
            Files.readString(units.resolve("lazyblk@.service")).replace("/opt/lazyblk", REPO.toString()));
        Files.writeString(dir.resolve("lazyblk-image-server.service"),
            Files.readString(units.resolve("lazyblk-image-server.service")).replace("/opt/lazyblk", REPO.toString()));
        final Process p = new ProcessBuilder(analyze.toString(), "verify", "lazyblk@vm1.service", "lazyblk-image-server.service")
            .directory(dir.toFile()).redirectErrorStream(true).start();
        final String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor(), out);
        assertEquals("", out.strip(), "no warning either (a misspelt key is only a warning)");
    }

    @Test
    void shouldNotifyReadyOnlyOnceTheSocketAcceptsWithItsModeAndGroup() throws Throwable {
        final Path img = Files.write(dir.resolve("disk.img"), new byte[1 << 20]);
        final Path logs = Files.createDirectories(Path.of("target", "lazy-process-logs", "systemd"));
        final String group = Files.readAttributes(img, java.nio.file.attribute.PosixFileAttributes.class).group().getName();
        try (Datagrams notify = Datagrams.bind(dir.resolve("notify.sock"));
             LazyblkProcess engine = LazyblkProcess.start("engine", logs, Map.of("NOTIFY_SOCKET", dir.resolve("notify.sock").toString()),
                 "serve", "--socket", dir.resolve("vm.sock").toString(), "--local", img.toString(), "--socket-mode", "0660",
                 "--socket-group", group)) {
            final String ready = notify.receive(Duration.ofSeconds(30));
            assertTrue(ready.contains("READY=1") && ready.contains("MAINPID=" + engine.pid()), ready);
            // Ready means: QEMU may connect now.
            assertEquals("rw-rw----", java.nio.file.attribute.PosixFilePermissions.toString(
                Files.getPosixFilePermissions(dir.resolve("vm.sock"))));
            FrontEnds.assertEngineServesNewFrontEnd(dir.resolve("vm.sock"), img, 8);
            engine.stop();
            assertTrue(notify.receive(Duration.ofSeconds(10)).contains("STOPPING=1"));
        }
        final Path golden = Files.write(dir.resolve("golden.raw"), new byte[1 << 20]);
        final Path secret = Files.write(dir.resolve("secret"), TestImage.pattern(32, 3));
        Files.setPosixFilePermissions(secret, java.nio.file.attribute.PosixFilePermissions.fromString("rw-------"));
        try (Datagrams notify = Datagrams.bind(dir.resolve("notify2.sock"));
             LazyblkProcess server = LazyblkProcess.start("image-server", logs, Map.of("NOTIFY_SOCKET", dir.resolve("notify2.sock").toString()),
                 "image-server", "--listen", "127.0.0.1:0", "--export", "golden=" + golden, "--secret-file", secret.toString(),
                 "--cache-dir", dir.resolve("cache").toString())) {
            final String ready = notify.receive(Duration.ofSeconds(30));
            assertTrue(ready.contains("READY=1"), ready);
            assertTrue(server.printed("serving golden", 0), "ready after its exports are served:\n" + server.output());
        }
    }

    @Test
    void shouldRefuseASocketGroupThatDoesNotExistInOneLine() throws Exception {
        final Path img = Files.write(dir.resolve("disk.img"), new byte[1 << 20]);
        final CliRun r = CliRun.run("serve", "--socket", dir.resolve("g.sock").toString(), "--local", img.toString(),
            "--socket-group", "no-such-group-here");
        assertEquals(1, r.code(), r.err());
        assertTrue(r.err().contains("--socket-group no-such-group-here: no such group"), r.err());
    }

    /** An AF_UNIX datagram socket bound to a path: what systemd listens on for notifications. */
    static final class Datagrams implements AutoCloseable {
        private static final Linker L = Linker.nativeLinker();
        private static final MethodHandle SOCKET = fn("socket", JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT);
        private static final MethodHandle BIND = fn("bind", JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT);
        private static final MethodHandle POLL = fn("poll", JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT);
        private static final MethodHandle RECV = fn("recv", JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT);
        private static final MethodHandle CLOSE = fn("close", JAVA_INT, JAVA_INT);
        private final int fd;
        private final Arena arena = Arena.ofConfined();

        private static MethodHandle fn(final String name, final java.lang.foreign.MemoryLayout ret, final java.lang.foreign.MemoryLayout... args) {
            return L.downcallHandle(L.defaultLookup().find(name).orElseThrow(), FunctionDescriptor.of(ret, args));
        }

        private Datagrams(final int fd) {
            this.fd = fd;
        }

        static Datagrams bind(final Path path) throws Throwable {
            final int fd = (int) SOCKET.invokeExact(1, 2, 0); // AF_UNIX, SOCK_DGRAM
            try (Arena a = Arena.ofConfined()) {
                final MemorySegment addr = a.allocate(110, 2);
                addr.set(JAVA_SHORT, 0, (short) 1);
                final byte[] p = path.toString().getBytes(StandardCharsets.UTF_8);
                MemorySegment.copy(p, 0, addr, JAVA_BYTE, 2, p.length);
                assertEquals(0, (int) BIND.invokeExact(fd, addr, 2 + p.length + 1), "bind " + path);
            }
            return new Datagrams(fd);
        }

        String receive(final Duration timeout) throws Throwable {
            final MemorySegment pfd = arena.allocate(8, 4);
            pfd.set(JAVA_INT, 0, fd);
            pfd.set(JAVA_SHORT, 4, (short) 1); // POLLIN
            assertEquals(1, (int) POLL.invokeExact(pfd, 1L, (int) timeout.toMillis()), "a notification within " + timeout);
            final MemorySegment buf = arena.allocate(4096);
            final long n = (long) RECV.invokeExact(fd, buf, 4096L, 0);
            return new String(buf.asSlice(0, n).toArray(JAVA_BYTE), StandardCharsets.UTF_8);
        }

        @Override
        public void close() {
            try {
                final int ignored = (int) CLOSE.invokeExact(fd);
            } catch (final Throwable t) {
                throw new IllegalStateException(t);
            }
            arena.close();
        }
    }
}
