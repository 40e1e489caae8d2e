package io.lazyblk.blk;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * A request for backend tests: one native data buffer, run with {@link #run} and waited for whether the backend
 * answers at once or parks it. Counts its completions, so a test sees a request completed twice.
 */
final class TestRequest extends IoRequest implements AutoCloseable {
    private final Arena arena = Arena.ofShared();
    final MemorySegment data;
    private volatile CountDownLatch done;
    private volatile int status;
    final AtomicInteger completions = new AtomicInteger();
    volatile boolean abandoned;

    TestRequest(final int capacity) {
        super(Arena.ofAuto().allocate(16, 8));
        this.data = arena.allocate(Math.max(1, capacity), 4096);
    }

    /** Runs a read or write of {@code length} bytes at {@code offset} against {@code b}; returns the status (0 OK) or -errno. */
    int run(final BlockBackend b, final int op, final long offset, final int length) {
        final int rc = submit(b, op, offset, length);
        return rc != BlockBackend.PENDING ? rc : await();
    }

    /** Starts a read or write; returns {@link BlockBackend#PENDING} if it parked (then {@link #await()} it), else its result. */
    int submit(final BlockBackend b, final int op, final long offset, final int length) {
        iov.set(JAVA_LONG, 0, data.address());
        iov.set(JAVA_LONG, 8, length);
        set(op, offset, length, 1);
        done = new CountDownLatch(1);
        completions.set(0);
        return op == READ ? b.read(this) : b.write(this);
    }

    /** Waits (30 s at most) for a request {@link #submit} parked; its status (0 OK) or -5. */
    int await() {
        try {
            if (!done.await(30, TimeUnit.SECONDS)) {
                throw new AssertionError("a parked request at " + offset + " never completed");
            }
        } catch (final InterruptedException e) {
            throw new AssertionError(e);
        }
        return status == VirtioBlk.S_OK ? 0 : -5;
    }

    int writeZeroes(final BlockBackend b, final long offset, final long length, final MemorySegment zeroIov, final int zeroLen) {
        setRange(WRITE_ZEROES, offset, length, false);
        return b.writeZeroes(this, zeroIov.address(), zeroLen);
    }

    byte[] bytes(final int length) {
        final byte[] out = new byte[length];
        MemorySegment.copy(data, JAVA_BYTE, 0, out, 0, length);
        return out;
    }

    void fill(final byte[] src, final int from, final int length) {
        MemorySegment.copy(src, from, data, JAVA_BYTE, 0, length);
    }

    @Override
    protected boolean enter() {
        return !abandoned;
    }

    @Override
    protected void exit() {
    }

    @Override
    protected void completeParked(final byte s) {
        status = s;
        completions.incrementAndGet();
        done.countDown();
    }

    @Override
    public void close() {
        arena.close();
    }
}
