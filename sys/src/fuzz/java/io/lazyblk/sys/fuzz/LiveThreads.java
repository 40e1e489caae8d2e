package io.lazyblk.sys.fuzz;

import java.lang.management.ManagementFactory;
import java.lang.management.ThreadInfo;
import java.lang.management.ThreadMXBean;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;
import java.util.stream.Collectors;

/**
 * The JVM's live platform threads by id, for leak checks around one input: a thread the input started and left
 * running shows up as new. Compares identities, not counts: the JVM's own threads come and go (an idle pool worker
 * retires), which a count would take for a leak or hide one behind.
 */
public final class LiveThreads {
    private static final ThreadMXBean THREADS = ManagementFactory.getThreadMXBean();

    private LiveThreads() {
    }

    public static Set<Long> ids() {
        return Arrays.stream(THREADS.getAllThreadIds()).boxed().collect(Collectors.toSet());
    }

    /**
     * Names of the threads not in {@code before} that are still alive after up to {@code millis}: a thread whose owner
     * has closed it may still be on its way out (Agrona's AgentRunner.close returns once the agent has closed, and its
     * thread exits just after), which is not a leak; one that stays is.
     */
    public static List<String> addedAfter(final Set<Long> before, final long millis) throws InterruptedException {
        final long deadline = System.nanoTime() + millis * 1_000_000;
        List<String> added = added(before);
        while (!added.isEmpty() && System.nanoTime() < deadline) {
            Thread.sleep(1); // waiting for threads to finish exiting: bounded by the deadline
            added = added(before);
        }
        return added;
    }

    /** Names of the live threads not in {@code before}: empty when the input left none behind. */
    public static List<String> added(final Set<Long> before) {
        final List<String> names = new ArrayList<>();
        for (final long id : THREADS.getAllThreadIds()) {
            if (!before.contains(id)) {
                final ThreadInfo info = THREADS.getThreadInfo(id);
                if (info != null) { // null: it ended meanwhile
                    names.add(info.getThreadName());
                }
            }
        }
        return names;
    }
}
