package io.lazyblk.tools;

import io.lazyblk.tools.frontend.DriverQueue;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;

import java.lang.foreign.MemorySegment;
import java.time.Duration;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Many writes in flight at once on one queue: request {@code i} writes its own pattern at
 * {@code firstSector + i * bytesEach / 512}, with its own header, data and status byte in guest RAM, each through
 * an indirect table (one ring descriptor per request, so up to a queue's size fit). Not thread-safe.
 */
final class WriteBatch {
    final int count;
    private final DriverQueue q;
    private final int bytesEach;
    private final long firstSector;
    private final long headers;
    private final long statuses;
    private final long datas;
    private final GuestRam ram;
    private final byte[][] data;
    private int reaped;

    WriteBatch(final VhostUserFrontend fe, final int queue, final int count, final int bytesEach, final long firstSector,
               final long seed) {
        this.count = count;
        this.q = fe.queue(queue);
        this.ram = fe.ram();
        this.bytesEach = bytesEach;
        this.firstSector = firstSector;
        this.headers = ram.allocate(16L * count, 16);
        this.statuses = ram.allocate(count, 1);
        this.datas = ram.allocate((long) bytesEach * count, 4096);
        this.data = new byte[count][];
        for (int i = 0; i < count; i++) {
            data[i] = TestImage.pattern(bytesEach, seed + i);
            final MemorySegment h = ram.segment(headers + 16L * i, 16);
            h.set(JAVA_INT_UNALIGNED, VirtioBlk.HEADER_TYPE, VirtioBlk.T_OUT);
            h.set(JAVA_INT_UNALIGNED, 4, 0);
            h.set(JAVA_LONG_UNALIGNED, VirtioBlk.HEADER_SECTOR, sector(i));
            MemorySegment.copy(data[i], 0, ram.memory(), JAVA_BYTE, datas + (long) bytesEach * i, bytesEach);
            ram.memory().set(JAVA_BYTE, statuses + i, (byte) RawChains.NO_STATUS);
        }
    }

    long sector(final int i) {
        return firstSector + (long) i * bytesEach / VirtioBlk.SECTOR_SIZE;
    }

    long offset(final int i) {
        return sector(i) * VirtioBlk.SECTOR_SIZE;
    }

    byte[] data(final int i) {
        return data[i];
    }

    int bytesEach() {
        return bytesEach;
    }

    /** Puts every request on the avail ring, then publishes them at once (kicking as the device asked). */
    void submitAll() {
        for (int i = 0; i < count; i++) {
            q.add(headers + 16L * i, VirtioBlk.HEADER_SIZE, false)
                .add(datas + (long) bytesEach * i, bytesEach, false)
                .add(statuses + i, 1, true);
            assertTrue(q.submitIndirect() >= 0, "room on the queue for request " + i);
        }
        q.publish();
    }

    /** Reaps completions until all {@link #count} requests have completed or {@code deadline} passes. */
    void awaitAll(final Duration deadline) {
        final long end = System.nanoTime() + deadline.toNanos();
        while (reaped < count) {
            if (q.reap() >= 0) {
                reaped++;
                continue;
            }
            final long left = end - System.nanoTime();
            if (left <= 0 || !q.awaitUsed(left)) {
                fail(reaped + " of " + count + " requests completed within " + deadline);
            }
        }
    }

    /** Reaps whatever has completed now, without waiting. */
    int reapCompleted() {
        while (q.reap() >= 0) {
            reaped++;
        }
        return reaped;
    }

    int status(final int i) {
        return Byte.toUnsignedInt(ram.memory().get(JAVA_BYTE, statuses + i));
    }

    void assertOk(final int from, final int to) {
        for (int i = from; i < to; i++) {
            assertEquals(VirtioBlk.statusName(VirtioBlk.S_OK), VirtioBlk.statusName(status(i)), "status of request " + i);
        }
    }
}
