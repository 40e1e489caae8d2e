package io.lazyblk.pagemap;

import java.time.Duration;
import java.util.concurrent.locks.LockSupport;

import static org.junit.jupiter.api.Assertions.fail;

/** Waiting in tests for a condition no callback signals: checked every 200 µs until it holds or the deadline passes. */
public final class Await {
    private static final long POLL_NANOS = 200_000L;

    private Await() {
    }

    /** A condition that may do I/O (read a status socket, submit a fetch). */
    @FunctionalInterface
    public interface Condition {
        boolean holds() throws Exception;
    }

    /** Returns once {@code condition} holds; fails the test with {@code what} if it does not within {@code timeout}. */
    public static void until(final String what, final Duration timeout, final Condition condition) throws Exception {
        final long deadline = System.nanoTime() + timeout.toNanos();
        while (!condition.holds()) {
            if (System.nanoTime() - deadline > 0) {
                fail("timed out after " + timeout.toMillis() + " ms waiting for: " + what);
            }
            LockSupport.parkNanos(POLL_NANOS);
        }
    }
}
