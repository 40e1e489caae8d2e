package io.lazyblk.blk;

import org.agrona.concurrent.ManyToManyConcurrentArrayQueue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The page buffers fetches land in, allocated once: each belongs to whichever thread took it off the free list until
 * that thread releases it (or hands it on through a queue, which orders the accesses). Also records, per buffer, the
 * page and priority of the fetch using it (written by its issuer before the fetch is submitted, published to the
 * completing thread by the source's submit). Thread-safe; no allocation after construction.
 */
final class PageBuffers implements AutoCloseable {
    private final Arena arena = Arena.ofShared();
    final MemorySegment[] buffers;
    final int[] page;
    final boolean[] demand;
    /** Each index boxed once: the queues carry these objects, so no fetch allocates a box. */
    final Integer[] boxes;
    private final ManyToManyConcurrentArrayQueue<Integer> free;
    /**
     * The buffer freed last, or -1: the next demand fetch takes it, as it is likely still in the CPU caches (the free
     * queue hands out the buffer freed longest ago, which a miss would first have to bring in from memory).
     */
    private final AtomicInteger hot = new AtomicInteger(-1);
    /**
     * The background fill's run buffers ({@link BackgroundRuns}): each holds a run of adjacent pages fetched at once,
     * contiguous, so the run is received, and written to the local file, in one piece. Owned as the page buffers are.
     */
    final MemorySegment[] runs;
    /** A scratch iovec per thread that merges, allocated once per thread in this arena (a shared arena allocates from any thread). */
    final ThreadLocal<MemorySegment> scratchIov;

    PageBuffers(final int count, final int pageSize) {
        this(count, pageSize, 0, 0);
    }

    /** {@code count} page buffers of {@code pageSize}, and {@code runCount} run buffers of {@code runBytes} each. */
    PageBuffers(final int count, final int pageSize, final int runCount, final long runBytes) {
        runs = new MemorySegment[runCount];
        for (int i = 0; i < runCount; i++) {
            runs[i] = arena.allocate(runBytes, 4096);
        }
        buffers = new MemorySegment[count];
        page = new int[count];
        demand = new boolean[count];
        boxes = new Integer[count];
        free = new ManyToManyConcurrentArrayQueue<>(count);
        for (int i = 0; i < count; i++) {
            buffers[i] = arena.allocate(pageSize, 4096);
            boxes[i] = i;
            free.offer(boxes[i]);
        }
        scratchIov = ThreadLocal.withInitial(() -> arena.allocate(16, 8));
    }

    int count() {
        return buffers.length;
    }

    /** A free buffer for a demand fetch, the hot one if there is one; null if none is free. Any thread. */
    Integer takeForDemand() {
        final int h = hot.getAndSet(-1); // acquires what its releaser did with it
        return h >= 0 ? boxes[h] : free.poll();
    }

    /** A free buffer for a background fetch (never the hot one: that is kept for the next miss); null if none. */
    Integer takeForBackground() {
        return free.poll();
    }

    /** Returns buffer {@code b} to the free ones, as the hot one if that place is empty; any thread. */
    void release(final int b) {
        // CAS and queue offer both release: the buffer's contents are done with before anyone takes it.
        if (!hot.compareAndSet(-1, b)) {
            free.offer(boxes[b]);
        }
    }

    /** Free buffers, the hot one included. */
    int freeCount() {
        return free.size() + (hot.get() >= 0 ? 1 : 0);
    }

    @Override
    public void close() {
        arena.close();
    }
}
