package io.lazyblk.pull.provider;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A hand-written {@link MigrationControl} for tests (the engine's is the real one): no switchover until
 * {@link #switchOver} is called; each wait before that lasts at most {@code waitNanos} (or the server's bound, if
 * shorter) and answers null. The guest's write-cache mode is {@link #writeback}. Records how often it was asked, the threads that waited and whether one was interrupted.
 */
public final class TestMigration implements MigrationControl {
    private final long waitNanos;
    private final CountDownLatch switched = new CountDownLatch(1);
    private volatile int[] finalPages;
    /** Calls of awaitFinal so far. */
    public final AtomicInteger asked = new AtomicInteger();
    /** Calls of destinationComplete so far. */
    public final AtomicInteger completed = new AtomicInteger();
    /** Waits that ended by an interrupt. */
    public final AtomicInteger interrupted = new AtomicInteger();
    /** The last thread that entered awaitFinal. */
    public volatile Thread waiter;
    /** What {@link #guestWriteback} answers: the guest's write-cache mode (writeback unless a test says otherwise). */
    public volatile boolean writeback = true;

    /** @param waitNanos the longest one wait lasts before the switchover ({@code Long.MAX_VALUE}: the server's whole bound) */
    public TestMigration(final long waitNanos) {
        this.waitNanos = waitNanos;
    }

    /** The switchover: every wait from now on answers {@code pages} at once. */
    public void switchOver(final int... pages) {
        finalPages = pages.clone(); // before the latch opens: await() orders it before the read below
        switched.countDown();
    }

    @Override
    public int[] awaitFinal(final long timeoutNanos) throws InterruptedException {
        waiter = Thread.currentThread();
        asked.incrementAndGet();
        try {
            return switched.await(Math.min(timeoutNanos, waitNanos), TimeUnit.NANOSECONDS) ? finalPages : null;
        } catch (final InterruptedException e) {
            interrupted.incrementAndGet();
            throw e;
        }
    }

    @Override
    public boolean guestWriteback() {
        return writeback;
    }

    @Override
    public void destinationComplete() {
        completed.incrementAndGet();
    }
}
