package io.lazyblk.tools;

import io.lazyblk.sys.LibC;
import io.lazyblk.sys.NativeException;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * What {@code lazyblk doctor} asks the host: io_uring, memfd, UNIX sockets, programs on PATH. Each check answers
 * with a verdict and a one-line detail and never throws. The io_uring check is the one native surface here: a raw
 * {@code syscall(SYS_io_uring_setup)} (no liburing needed), looked up once.
 */
final class HostChecks {
    /** x86-64 syscall number of io_uring_setup. */
    private static final long SYS_IO_URING_SETUP = 425;
    /** sizeof(struct io_uring_params) on Linux 5.x/6.x: 120 bytes, zeroed asks for defaults. */
    private static final int IO_URING_PARAMS_BYTES = 120;
    private static final int ENOSYS = 38;
    private static final int EPERM = 1;
    private static final int EACCES = 13;

    private static final Linker LINKER = Linker.nativeLinker();
    private static final StructLayout CAPTURE = Linker.Option.captureStateLayout();
    private static final VarHandle ERRNO = CAPTURE.varHandle(java.lang.foreign.MemoryLayout.PathElement.groupElement("errno"));
    private static final MethodHandle SYSCALL = LINKER.downcallHandle(LINKER.defaultLookup().find("syscall").orElseThrow(),
        FunctionDescriptor.of(JAVA_LONG, JAVA_LONG, JAVA_INT, ADDRESS), Linker.Option.captureCallState("errno"),
        Linker.Option.firstVariadicArg(1));

    record Verdict(String value, String detail) {
    }

    private HostChecks() {
    }

    /** available / disabled / not-supported, from /proc/sys/kernel/io_uring_disabled and a real io_uring_setup. */
    static Verdict ioUring(final Path procRoot) {
        final Path knob = procRoot.resolve("sys/kernel/io_uring_disabled");
        String setting = null;
        try {
            setting = Files.readString(knob).trim();
        } catch (final IOException e) {
            // absent before Linux 6.6: then only the syscall tells
        }
        if ("2".equals(setting)) {
            return new Verdict("disabled", knob + " is 2 (io_uring disabled for everyone; set it to 0 to enable)");
        }
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment params = a.allocate(IO_URING_PARAMS_BYTES, 8);
            final MemorySegment st = a.allocate(CAPTURE);
            final long fd = (long) SYSCALL.invokeExact(st, SYS_IO_URING_SETUP, 1, params);
            if (fd >= 0) {
                LibC.close((int) fd);
                return new Verdict("available", "io_uring_setup works" + (setting == null ? "" : " (" + knob + " is " + setting + ")"));
            }
            final int errno = (int) ERRNO.get(st, 0L);
            if (errno == ENOSYS) {
                return new Verdict("not-supported", "the kernel has no io_uring (io_uring_setup: ENOSYS)");
            }
            if (errno == EPERM || errno == EACCES) {
                return new Verdict("disabled", "io_uring_setup refused: " + LibC.strerror(errno)
                    + (setting == null ? "" : " (" + knob + " is " + setting + "; 1 allows only the io_uring_group)"));
            }
            return new Verdict("not-supported", "io_uring_setup failed: " + LibC.strerror(errno));
        } catch (final Throwable t) {
            return new Verdict("not-supported", "cannot call io_uring_setup: " + t);
        }
    }

    /** memfd_create works (shm:// images are passed as read-only fds, engines map guest memory from memfds). */
    static Verdict memfd() {
        try {
            LibC.close(LibC.memfdCreate("lazyblk-doctor"));
            return new Verdict("available", "memfd_create works");
        } catch (final NativeException | RuntimeException e) {
            return new Verdict("unavailable", e.getMessage());
        }
    }

    /** AF_UNIX stream sockets (vhost-user, shm:// fd passing). */
    static Verdict unixSockets() {
        try {
            LibC.close(LibC.socketUnix());
            return new Verdict("available", "AF_UNIX sockets work");
        } catch (final NativeException | RuntimeException e) {
            return new Verdict("unavailable", e.getMessage());
        }
    }

    /** The program's path on PATH, or null. */
    static Path onPath(final String program) {
        final String path = System.getenv("PATH");
        if (path == null) {
            return null;
        }
        for (final String d : path.split(File.pathSeparator)) {
            if (d.isEmpty()) {
                continue;
            }
            final Path p = Path.of(d, program);
            if (Files.isExecutable(p) && !Files.isDirectory(p)) {
                return p;
            }
        }
        return null;
    }

    /** The first line {@code program --version} prints, within 10 s, or a note why not. */
    static String version(final Path program) {
        try {
            final Process p = new ProcessBuilder(program.toString(), "--version").redirectErrorStream(true)
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null"))).start();
            final String first;
            try (BufferedReader r = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
                first = r.readLine();
                while (r.readLine() != null) {
                    // drain, so the child is not blocked on a full pipe
                }
            }
            if (!p.waitFor(10, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                return "(did not answer --version within 10 s)";
            }
            return first == null ? "(no version printed)" : first.trim();
        } catch (final IOException e) {
            return "(cannot run: " + e.getMessage() + ")";
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
            return "(interrupted)";
        }
    }
}
