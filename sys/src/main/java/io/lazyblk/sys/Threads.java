package io.lazyblk.sys;

import java.lang.invoke.MethodHandle;

import static io.lazyblk.sys.Downcalls.plain;
import static io.lazyblk.sys.Downcalls.rethrow;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The calling thread's place in the host's CPU scheduling ({@code gettid}, {@code setpriority}): a thread that does
 * work nobody waits for (the background fill) gives way to the guest's vCPU and the request threads when cores are
 * short, and still runs flat out on a core nobody wants. Stateless; thread-safe.
 */
public final class Threads {
    /** x86-64 syscall number of gettid(2) (glibc 2.30+ also exports gettid, but Debian 12's JDK may run on older hosts). */
    private static final long SYS_GETTID = 186;
    private static final int PRIO_PROCESS = 0;
    private static final MethodHandle SYSCALL = plain("syscall", JAVA_LONG, JAVA_LONG);
    private static final MethodHandle SETPRIORITY = plain("setpriority", JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT);

    private Threads() {
    }

    /** The calling thread's kernel thread id. */
    public static int currentTid() {
        try {
            return (int) (long) SYSCALL.invokeExact(SYS_GETTID);
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * Sets the calling thread's nice value (-20..19; Linux keeps it per thread). Raising it needs no privilege; lowering
     * it below what it was does ({@code CAP_SYS_NICE}).
     *
     * @return 0, or {@code -errno} (e.g. {@code EACCES} for a lower value without the privilege)
     */
    public static int niceCurrentThread(final int nice) {
        try {
            final int rc = (int) SETPRIORITY.invokeExact(PRIO_PROCESS, currentTid(), nice);
            return rc < 0 ? -Downcalls.lastErrno() : 0;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * The nice values of this process's threads whose kernel name is {@code comm} (a thread's name cut to 15 bytes),
     * sorted: what {@code top -H} shows an operator. Reads {@code /proc/self/task}; for diagnostics and tests.
     */
    public static java.util.List<Integer> niceValues(final String comm) {
        final java.util.List<Integer> nice = new java.util.ArrayList<>();
        try (var tasks = java.nio.file.Files.list(java.nio.file.Path.of("/proc/self/task"))) {
            for (final java.nio.file.Path t : (Iterable<java.nio.file.Path>) tasks::iterator) {
                final String stat;
                try {
                    stat = java.nio.file.Files.readString(t.resolve("stat"));
                } catch (final java.io.IOException gone) {
                    continue; // the thread ended meanwhile
                }
                final int close = stat.lastIndexOf(')');
                if (stat.substring(stat.indexOf('(') + 1, close).equals(comm)) {
                    // The fields after the name start with the state (field 3 of stat(5)); nice is field 19.
                    nice.add(Integer.parseInt(stat.substring(close + 2).split(" ")[16]));
                }
            }
        } catch (final java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
        java.util.Collections.sort(nice);
        return nice;
    }
}
