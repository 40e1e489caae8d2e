package io.lazyblk.tools;

import io.lazyblk.tools.frontend.DriverQueue;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;

import java.lang.foreign.MemorySegment;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Write requests that a driver keeps on the ring: each one it reaps it puts back at once, so the avail ring
 * never runs dry. Request {@code i} always writes its own pattern at sector {@code i * 8}. {@link #run()} drives
 * the queue on its own thread until {@link #stop}; the other methods are for the test thread once that ended.
 */
final class RequestFlood implements Runnable {
    final int count;
    final DriverQueue q;
    final GuestRam ram;
    final long headers;
    final long statuses;
    final long datas;
    final int[] requestOfHead;
    /** Where request i sits in the avail ring while outstanding (free-running 16-bit index), or -1. */
    final int[] availPos;
    final AtomicBoolean stop = new AtomicBoolean();
    final AtomicReference<Throwable> failure = new AtomicReference<>();
    volatile long completed;

    RequestFlood(final VhostUserFrontend fe, final int count) {
        this.count = count;
        this.q = fe.queue(0);
        this.ram = fe.ram();
        this.headers = ram.allocate(16L * count, 16);
        this.statuses = ram.allocate(count, 1);
        this.datas = ram.allocate(4096L * count, 4096);
        this.requestOfHead = new int[q.size()];
        this.availPos = new int[count];
        for (int i = 0; i < count; i++) {
            final MemorySegment h = ram.segment(headers + 16L * i, 16);
            h.set(JAVA_INT_UNALIGNED, VirtioBlk.HEADER_TYPE, VirtioBlk.T_OUT);
            h.set(JAVA_INT_UNALIGNED, 4, 0);
            h.set(JAVA_LONG_UNALIGNED, VirtioBlk.HEADER_SECTOR, i * 8L);
            MemorySegment.copy(data(i), 0, ram.memory(), JAVA_BYTE, datas + 4096L * i, 4096);
            availPos[i] = -1;
        }
    }

    static byte[] data(final int i) {
        return TestImage.pattern(4096, 0xf100d + i);
    }

    int status(final int i) {
        return Byte.toUnsignedInt(ram.memory().get(JAVA_BYTE, statuses + i));
    }

    void submit(final int i) {
        ram.memory().set(JAVA_BYTE, statuses + i, (byte) RawChains.NO_STATUS);
        q.add(headers + 16L * i, VirtioBlk.HEADER_SIZE, false).add(datas + 4096L * i, 4096, false).add(statuses + i, 1, true);
        availPos[i] = q.availIdx();
        final int head = q.submitIndirect();
        if (head < 0) {
            throw new IllegalStateException("no room for request " + i);
        }
        requestOfHead[head] = i;
    }

    /** Reaps one used entry if there is one; returns the request it completed, or -1. */
    int reapOne() {
        final int head = q.reap();
        if (head < 0) {
            return -1;
        }
        final int i = requestOfHead[head];
        availPos[i] = -1;
        return i;
    }

    @Override
    public void run() {
        try {
            for (int i = 0; i < count; i++) {
                submit(i);
            }
            q.publish();
            while (!stop.get()) {
                final int i = reapOne();
                if (i < 0) {
                    Thread.onSpinWait();
                    continue;
                }
                assertEquals(VirtioBlk.S_OK, status(i), "request " + i + " completed OK");
                completed++;
                submit(i);
                q.publish();
            }
        } catch (final Throwable t) {
            failure.set(t);
        }
    }
}
