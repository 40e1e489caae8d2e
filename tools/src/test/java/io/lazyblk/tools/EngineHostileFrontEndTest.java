package io.lazyblk.tools;

import io.lazyblk.pagemap.Await;
import io.lazyblk.tools.MemoryMessages.Region;
import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.DriverQueue;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.ReplyTimeoutException;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;
import io.lazyblk.vhost.VhostUserServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The engine against a front end that misuses what it hands over rather than the protocol's framing, over a real
 * socket with real memfds and eventfds: it floods a queue while stopping it, and takes the memory under a ring away
 * and brings it back. Each test shows the engine serving first, then misbehaves, and proves the engine kept its
 * threads and fds and serves a new front end that writes and reads back through it.
 */
class EngineHostileFrontEndTest {
    private static final int IMAGE_BYTES = 4 << 20;

    @TempDir
    Path dir;
    private Path image;
    private Path socket;
    private Engine engine;
    private VhostUserFrontend fe;
    /** Run at the end of each test before the engine closes (unblock what a failing engine is stuck on). */
    private final List<Runnable> cleanups = new ArrayList<>();

    @BeforeEach
    void createImage() throws IOException {
        image = TestImage.create(dir.resolve("disk.img"), IMAGE_BYTES, 4);
        socket = dir.resolve("vhost.sock");
    }

    @AfterEach
    void stop() {
        for (int i = cleanups.size() - 1; i >= 0; i--) {
            cleanups.get(i).run();
        }
        if (fe != null) {
            fe.close();
        }
        if (engine != null) {
            engine.close();
        }
    }

    private void startEngine(final int ioThreads, final long pollNanos) throws IOException {
        engine = Engine.start(new Engine.Options(socket, image, 0, 1, false, ioThreads, pollNanos));
    }

    private void startEngine() throws IOException {
        startEngine(0, VhostUserServer.DEFAULT_SPIN_NANOS);
    }

    // ---------------------------------------------------------------- item 7: stopping a queue

    /**
     * Write requests that a driver keeps on the ring: each one it reaps it puts back at once, so the avail ring
     * never runs dry. Request {@code i} always writes its own pattern at sector {@code i * 8}.
     */
    private static final class Flood implements Runnable {
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

        Flood(final VhostUserFrontend fe, final int count) {
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

    @Test
    void shouldStopQueueUnderAFloodOfNewRequestsTakingNoneAndResumeAtTheFirstUntakenOne() throws Exception {
        startEngine(1, VhostUserServer.DEFAULT_SPIN_NANOS); // a dedicated I/O thread: requests are in flight at the stop
        fe = VhostUserFrontend.connect(socket, GuestRam.create(16L << 20), FrontEnds.CONFIG);
        final DriverQueue q = fe.queue(0);
        final Flood flood = new Flood(fe, 128);
        final Thread driver = new Thread(flood, "test-flood");
        cleanups.add(() -> {
            flood.stop.set(true);
            joinQuietly(driver);
        });
        driver.start();
        Await.until("the flood is being served", FrontEnds.DEADLINE, () -> flood.completed > 1000 || flood.failure.get() != null);
        assertNull(flood.failure.get());

        final int base;
        try {
            base = fe.stopQueue(0);
        } catch (final ReplyTimeoutException e) {
            fail("GET_VRING_BASE got no answer within " + FrontEnds.DEADLINE + " while the driver kept adding requests: the"
                + " stop took new requests instead of finishing the ones it had", e);
            return;
        }
        flood.stop.set(true);
        driver.join(FrontEnds.DEADLINE.toMillis());
        assertFalse(driver.isAlive());
        assertNull(flood.failure.get());

        assertEquals(base, q.usedIdx(), "every request the engine took was completed before it reported the base, no more");
        while (flood.reapOne() >= 0) {
            // completions published before the stop that the flood had not reaped yet
        }
        int outstanding = 0;
        for (int i = 0; i < flood.count; i++) {
            if (flood.availPos[i] >= 0) {
                outstanding++;
                assertTrue(((flood.availPos[i] - base) & 0xffff) < q.size(), "request " + i + " at avail index "
                    + flood.availPos[i] + " is at or after the base " + base + ", or it would have completed");
                assertEquals(RawChains.NO_STATUS, flood.status(i), "request " + i + " was not taken, so not touched");
            }
        }
        assertEquals((q.availIdx() - base) & 0xffff, outstanding, "the untaken requests are exactly those from the base on");

        fe.restartQueue(0, base);

        final long end = System.nanoTime() + FrontEnds.DEADLINE.toNanos();
        for (int done = 0; done < outstanding; ) {
            final int i = flood.reapOne();
            if (i >= 0) {
                assertEquals(VirtioBlk.S_OK, flood.status(i), "request " + i + " completed after the restart");
                done++;
            } else {
                assertTrue(q.awaitUsed(Math.max(0, end - System.nanoTime())), done + " of " + outstanding
                    + " requests left on the ring completed after the restart");
            }
        }
        for (int i = 0; i < flood.count; i++) {
            assertArrayEquals(Flood.data(i), TestImage.read(image, i * 8L * VirtioBlk.SECTOR_SIZE, 4096), "request " + i + " in the image");
        }
        fe.close();
        fe = null;
        FrontEnds.assertEngineServesNewFrontEnd(socket, image, 4000);
    }

    @Test
    void shouldServeAgainWhenTheRegionHoldingTheRingIsRemovedAndAddedBack() throws IOException {
        startEngine();
        fe = FrontEnds.connect(socket);
        final GuestRam ram = fe.ram();
        final BlkClient blk = FrontEnds.client(fe, 0);
        assertEquals(VirtioBlk.S_OK, blk.write(8, TestImage.pattern(4096, 1)), "the queue runs");
        final Region all = new Region(0, ram.size(), ram.userAddress(0), 0, ram.fd());

        assertEquals(0, MemoryMessages.remMemReg(fe, all), "the region holding the ring is removed (the queue cannot run)");
        assertEquals(0, MemoryMessages.addMemReg(fe, all), "and added back");

        final byte[] data = TestImage.pattern(4096, 2);
        assertEquals(VirtioBlk.S_OK, blk.write(16, data), "the queue runs again once its ring is in guest memory again");
        assertArrayEquals(data, blk.read(16, 4096).data());
        assertArrayEquals(data, TestImage.read(image, 16L * VirtioBlk.SECTOR_SIZE, 4096));
        fe.close();
        fe = null;
        FrontEnds.assertEngineServesNewFrontEnd(socket, image, 4000);
    }

    // ---------------------------------------------------------------- helpers

    private static void joinQuietly(final Thread t) {
        joinQuietly(t, FrontEnds.DEADLINE.toMillis());
    }

    private static void joinQuietly(final Thread t, final long millis) {
        try {
            t.join(millis);
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
