package io.lazyblk.tools.frontend;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;

/**
 * One queue of a benchmark: keeps {@code iodepth} requests in flight, resubmitting each completed slot at once;
 * publishes (and kicks, when the device asks) once per harvested batch. With nothing completed it either spins on
 * the used ring ({@link BenchWait#POLL}) or sleeps on the call eventfd ({@link BenchWait#INTERRUPT},
 * {@link DriverQueue#awaitUsed}), as an interrupt-driven guest driver does.
 *
 * <p>Everything a request needs is laid out at construction: per slot a header, a status byte, an indirect table
 * written once (it never changes: only the header's sector does) and a data buffer. The loop touches guest RAM
 * through one segment and {@code long} offsets, so it allocates nothing. Runs on one thread.
 */
final class BenchWorker implements Runnable {
    /** No completion for this long with requests in flight means the back end is stuck: fail instead of hanging. */
    private static final long STALL_NANOS = 10_000_000_000L;
    private static final ValueLayout.OfByte U8 = ValueLayout.JAVA_BYTE;
    private static final ValueLayout.OfLong U64 = ValueLayout.JAVA_LONG_UNALIGNED;
    private static final ValueLayout.OfInt U32 = ValueLayout.JAVA_INT_UNALIGNED;
    private static final byte NO_STATUS = (byte) 0xff;
    private static final java.lang.management.ThreadMXBean THREADS = java.lang.management.ManagementFactory.getThreadMXBean();

    private final DriverQueue queue;
    private final MemorySegment mem;
    private final BenchPattern pattern;
    private final int blockSize;
    private final int iodepth;
    private final boolean indirect;
    private final int chainLength;
    private final int segmentBytes;
    private final long[] headerGpa;
    private final long[] statusGpa;
    private final long[] dataGpa;
    private final long[] tableGpa;
    private final long[] submittedAt;
    private final int[] slotOfHead;
    private final SplittableRandom random;
    private final long blocks;
    private static final long STRIDE_PRIME = 1_000_003L;
    private final long strideBlocks;
    private final long strides;
    private long nextStride;
    private final long firstBlock;
    private long nextBlock;
    private final boolean singlePass;
    private final boolean sleepWhenIdle;
    private final long measureStart;
    private long measureEnd;
    private final long measureNanos;
    private boolean distinctWarm;
    private final LatencyHistogram histogram = new LatencyHistogram();
    private final BenchRunner.StopFlag stop;
    private long ops;
    private long errors;
    /** Thread allocation counter at the first and last completion of the measured window (-1: not yet). */
    private long allocatedAtStart = -1;
    private long allocatedBytes = -1;
    /** This thread's CPU time at the first and last completion of the measured window (-1: not yet, or unsupported). */
    private long cpuAtStart = -1;
    private long cpuNanos = -1;

    BenchWorker(final DriverQueue queue, final GuestRam ram, final BenchOptions o, final boolean indirect,
                final int segmentBytes, final long diskBytes, final long measureStart, final long measureEnd,
                final BenchRunner.StopFlag stop) {
        this.queue = queue;
        this.mem = ram.memory();
        this.pattern = o.pattern();
        this.blockSize = o.blockSize();
        this.iodepth = o.iodepth();
        this.indirect = indirect;
        this.segmentBytes = segmentBytes;
        this.chainLength = 2 + (blockSize + segmentBytes - 1) / segmentBytes;
        this.measureStart = measureStart;
        this.measureEnd = measureEnd;
        this.measureNanos = o.seconds() * 1_000_000_000L;
        this.stop = stop;
        this.random = new SplittableRandom(o.seed() * 0x9E3779B97F4A7C15L + queue.index());
        this.strideBlocks = o.distinctStride() / blockSize;
        this.singlePass = o.singlePass();
        this.sleepWhenIdle = o.waitMode() == BenchWait.INTERRUPT;
        this.strides = strideBlocks > 0 ? diskBytes / o.distinctStride() : 0;
        final long diskBlocks = diskBytes / blockSize;
        if (pattern.random) {
            this.blocks = diskBlocks;
            this.firstBlock = 0;
        } else {
            this.blocks = Math.max(1, diskBlocks / o.queues()); // each queue streams through its own stripe
            this.firstBlock = queue.index() * blocks;
        }
        this.headerGpa = new long[iodepth];
        this.statusGpa = new long[iodepth];
        this.dataGpa = new long[iodepth];
        this.tableGpa = new long[iodepth];
        this.submittedAt = new long[iodepth];
        this.slotOfHead = new int[queue.size()];
        final boolean write = pattern.write;
        for (int s = 0; s < iodepth; s++) {
            headerGpa[s] = ram.allocate(VirtioBlk.HEADER_SIZE, 16);
            statusGpa[s] = ram.allocate(1, 1);
            dataGpa[s] = ram.allocate(blockSize, 4096);
            mem.set(U32, headerGpa[s] + VirtioBlk.HEADER_TYPE, write ? VirtioBlk.T_OUT : VirtioBlk.T_IN);
            mem.set(U32, headerGpa[s] + 4, 0);
            if (write) {
                fill(dataGpa[s], s);
            }
            if (indirect) {
                tableGpa[s] = ram.allocate((long) chainLength * VringLayout.DESC_SIZE, 16);
                final MemorySegment table = ram.segment(tableGpa[s], (long) chainLength * VringLayout.DESC_SIZE);
                int k = 0;
                VringLayout.writeDescriptor(table, k, headerGpa[s], VirtioBlk.HEADER_SIZE, VringLayout.VIRTQ_DESC_F_NEXT, k + 1);
                for (int off = 0; off < blockSize; off += segmentBytes) {
                    k++;
                    VringLayout.writeDescriptor(table, k, dataGpa[s] + off, Math.min(segmentBytes, blockSize - off),
                        (write ? 0 : VringLayout.VIRTQ_DESC_F_WRITE) | VringLayout.VIRTQ_DESC_F_NEXT, k + 1);
                }
                k++;
                VringLayout.writeDescriptor(table, k, statusGpa[s], 1, VringLayout.VIRTQ_DESC_F_WRITE, 0);
            }
        }
    }

    private void fill(final long gpa, final int slot) {
        final SplittableRandom r = new SplittableRandom(slot);
        for (long off = 0; off + 8 <= blockSize; off += 8) {
            mem.set(U64, gpa + off, r.nextLong());
        }
    }

    /** Heap bytes this thread has allocated so far (HotSpot's per-thread TLAB accounting), or 0 if unknown. */
    private static long allocatedByThisThread() {
        return THREADS instanceof com.sun.management.ThreadMXBean t ? t.getCurrentThreadAllocatedBytes() : 0;
    }

    @Override
    public void run() {
        for (int s = 0; s < iodepth; s++) {
            submit(s, System.nanoTime());
        }
        queue.publish();
        int outstanding = iodepth;
        long lastProgress = System.nanoTime();
        while (outstanding > 0) {
            int head;
            int reaped = 0;
            long now = 0;
            while ((head = queue.reap()) >= 0) {
                now = System.nanoTime();
                final int s = slotOfHead[head];
                // Plain read: reap()'s acquire load of used->idx ordered the device's status write before it.
                if (mem.get(U8, statusGpa[s]) != VirtioBlk.S_OK) {
                    errors++;
                }
                // Distinct-stride mode measures for its seconds once the first tenth of the strides is done (its warm-up),
                // however long that took (the runner gives it up to a minute).
                if (strideBlocks > 0 && !distinctWarm && nextStride > strides / 10) {
                    distinctWarm = true;
                    measureEnd = Math.min(measureEnd, now + measureNanos);
                }
                if (strideBlocks > 0 ? distinctWarm && now < measureEnd : now >= measureStart && now < measureEnd) {
                    if (allocatedAtStart < 0) {
                        allocatedAtStart = allocatedByThisThread();
                        cpuAtStart = THREADS.getCurrentThreadCpuTime();
                    }
                    histogram.record(now - submittedAt[s]);
                    ops++;
                } else if (now >= measureEnd && allocatedAtStart >= 0 && allocatedBytes < 0) {
                    allocatedBytes = Math.max(0, allocatedByThisThread() - allocatedAtStart);
                    cpuNanos = cpuAtStart < 0 ? -1 : Math.max(0, THREADS.getCurrentThreadCpuTime() - cpuAtStart);
                }
                if (now < measureEnd && !stop.stopped && !exhausted()) {
                    submit(s, now);
                } else {
                    outstanding--;
                }
                reaped++;
            }
            if (reaped > 0) {
                queue.publish();
                lastProgress = now;
                continue;
            }
            final long idle = System.nanoTime() - lastProgress;
            if (idle > STALL_NANOS) {
                throw new IllegalStateException("queue " + queue.index() + ": no completion for " + STALL_NANOS / 1_000_000_000L
                    + " s with " + outstanding + " requests in flight (avail idx " + queue.availIdx() + ", used idx "
                    + queue.usedIdx() + ", avail_event " + queue.availEvent() + ", " + queue.kicks() + " kicks)");
            }
            if (sleepWhenIdle) {
                // Until the stall deadline at most: awaitUsed returns false then, and the check above fails the run.
                queue.awaitUsed(STALL_NANOS - idle + 1);
            } else {
                Thread.onSpinWait();
            }
        }
    }

    /** Distinct-stride mode: strides left to read; single pass: blocks left; no new request once none is left. */
    private boolean exhausted() {
        return strideBlocks > 0 ? nextStride >= strides : singlePass && nextBlock >= blocks;
    }

    private long nextBlock() {
        if (strideBlocks > 0) {
            // i -> i * P mod n with P a prime that does not divide n: each stride once, in a scattered order.
            final long i = nextStride++;
            return Math.floorMod(i * STRIDE_PRIME + queue.index() * 7919L, strides) * strideBlocks;
        }
        return firstBlock + (pattern.random ? random.nextLong(blocks) : nextBlock++ % blocks);
    }

    private void submit(final int s, final long now) {
        final long block = nextBlock();
        // Plain writes: publish()'s release store of avail->idx makes them visible to the device first.
        mem.set(U64, headerGpa[s] + VirtioBlk.HEADER_SECTOR, block * (blockSize / VirtioBlk.SECTOR_SIZE));
        mem.set(U8, statusGpa[s], NO_STATUS);
        final int head;
        if (indirect) {
            head = queue.submitIndirectTable(tableGpa[s], chainLength);
        } else {
            queue.add(headerGpa[s], VirtioBlk.HEADER_SIZE, false);
            for (int off = 0; off < blockSize; off += segmentBytes) {
                queue.add(dataGpa[s] + off, Math.min(segmentBytes, blockSize - off), !pattern.write);
            }
            queue.add(statusGpa[s], 1, true);
            head = queue.submit();
        }
        if (head < 0) {
            throw new IllegalStateException("queue " + queue.index() + " full with " + queue.inFlight() + " requests in flight");
        }
        slotOfHead[head] = s;
        submittedAt[s] = now;
    }

    LatencyHistogram histogram() {
        return histogram;
    }

    long ops() {
        return ops;
    }

    long errors() {
        return errors;
    }

    /** Heap bytes this thread allocated during the measured window (0 if unknown). */
    long allocatedBytes() {
        return Math.max(0, allocatedBytes);
    }

    /** CPU time this thread used during the measured window, in nanoseconds (-1 if unknown). */
    long cpuNanos() {
        return cpuNanos;
    }
}
