package io.lazyblk.tools;

import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.DriverQueue;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;

import java.lang.foreign.MemorySegment;
import java.time.Duration;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Many reads in flight at once on one queue: read {@code i} of {@code lengths[i]} bytes at {@code offsets[i]}, each
 * with its own header, data buffer (poisoned first, so bytes the device did not write show) and status byte in guest
 * RAM, each through an indirect table, published together. Not thread-safe: one burst per queue and thread.
 */
final class ReadBurst {
    private final DriverQueue q;
    private final GuestRam ram;
    private final long[] offsets;
    private final int[] lengths;
    private final long headers;
    private final long statuses;
    private final long[] datas;
    private int reaped;

    ReadBurst(final VhostUserFrontend fe, final int queue, final long[] offsets, final int[] lengths) {
        this.q = fe.queue(queue);
        this.ram = fe.ram();
        this.offsets = offsets.clone();
        this.lengths = lengths.clone();
        this.headers = ram.allocate(16L * offsets.length, 16);
        this.statuses = ram.allocate(offsets.length, 1);
        this.datas = new long[offsets.length];
        for (int i = 0; i < offsets.length; i++) {
            datas[i] = ram.allocate(lengths[i], 4096);
            final MemorySegment h = ram.segment(headers + 16L * i, 16);
            h.set(JAVA_INT_UNALIGNED, VirtioBlk.HEADER_TYPE, VirtioBlk.T_IN);
            h.set(JAVA_INT_UNALIGNED, 4, 0);
            h.set(JAVA_LONG_UNALIGNED, VirtioBlk.HEADER_SECTOR, offsets[i] / VirtioBlk.SECTOR_SIZE);
            ram.segment(datas[i], lengths[i]).fill(BlkClient.POISON);
            ram.memory().set(JAVA_BYTE, statuses + i, (byte) BlkClient.NO_STATUS);
        }
    }

    int count() {
        return offsets.length;
    }

    long offset(final int i) {
        return offsets[i];
    }

    /** Puts every read on the avail ring, then publishes them at once. */
    void submitAll() {
        for (int i = 0; i < offsets.length; i++) {
            q.add(headers + 16L * i, VirtioBlk.HEADER_SIZE, false)
                .add(datas[i], lengths[i], true)
                .add(statuses + i, 1, true);
            assertTrue(q.submitIndirect() >= 0, "room on the queue for read " + i);
        }
        q.publish();
    }

    /** Reaps completions until every read has completed; fails if {@code timeout} passes first. */
    void awaitAll(final Duration timeout) {
        final long end = System.nanoTime() + timeout.toNanos();
        while (reaped < offsets.length) {
            if (q.reap() >= 0) {
                reaped++;
                continue;
            }
            final long left = end - System.nanoTime();
            if (left <= 0 || !q.awaitUsed(left)) {
                fail(reaped + " of " + offsets.length + " reads on queue " + q.index() + " completed within " + timeout);
            }
        }
    }

    int status(final int i) {
        return Byte.toUnsignedInt(ram.memory().get(JAVA_BYTE, statuses + i));
    }

    byte[] data(final int i) {
        final byte[] b = new byte[lengths[i]];
        MemorySegment.copy(ram.memory(), JAVA_BYTE, datas[i], b, 0, lengths[i]);
        return b;
    }
}
