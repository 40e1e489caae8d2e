package io.lazyblk.tools;

import io.lazyblk.tools.MemoryMessages.Region;
import io.lazyblk.tools.RawChains.Used;
import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.BlkConfig;
import io.lazyblk.tools.frontend.DriverQueue;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The engine through the life of a connection, over a real socket, memfds and an image file: queues stopped,
 * paused and restarted, the memory table changed under running I/O, front ends that vanish mid-I/O, two queues at
 * once, the write-cache setting and FLUSH. Data is checked in the image file with plain Java file I/O.
 */
class EngineLifecycleTest {
    private static final int IMAGE_BYTES = 2 << 20;
    private static final int SECTOR = VirtioBlk.SECTOR_SIZE;
    /** How long "nothing happens" is watched for: a running queue answers in well under a millisecond. */
    private static final Duration QUIET = Duration.ofMillis(300);

    @TempDir
    Path dir;
    private Path image;
    private Path socket;
    private Engine engine;
    private VhostUserFrontend fe;
    private byte[] imageBefore;

    @BeforeEach
    void start() throws IOException {
        image = TestImage.create(dir.resolve("disk.img"), IMAGE_BYTES, 3);
        imageBefore = TestImage.readAll(image);
        socket = dir.resolve("vhost.sock");
        engine = Engine.start(Engine.Options.file(socket, image).withQueues(2));
    }

    @AfterEach
    void stop() {
        if (fe != null) {
            fe.close();
        }
        engine.close();
    }

    private byte[] imageAt(final long offset, final int length) throws IOException {
        return TestImage.read(image, offset, length);
    }

    private byte[] originalAt(final long offset, final int length) {
        return Arrays.copyOfRange(imageBefore, (int) offset, (int) offset + length);
    }

    // ---------------------------------------------------------------- stopping and pausing queues

    @Test
    void shouldStopQueueMidIoWithBaseEqualToRequestsConsumedAndContinueFromThereAfterRestart() throws IOException {
        fe = FrontEnds.connect(socket);
        final DriverQueue q = fe.queue(0);
        final WriteBatch batch = new WriteBatch(fe, 0, 200, 4096, 0, 100);
        batch.submitAll();
        assertTrue(q.awaitUsed(FrontEnds.DEADLINE.toNanos()), "I/O is under way");

        final int base = fe.stopQueue(0);

        assertTrue(base > 0 && base <= batch.count, "base " + base);
        assertEquals(base, q.usedIdx(), "every request the engine consumed was completed before it reported the base");
        assertEquals(base, batch.reapCompleted());
        batch.assertOk(0, base);
        for (int i = 0; i < batch.count; i++) {
            final byte[] expected = i < base ? batch.data(i) : originalAt(batch.offset(i), batch.bytesEach());
            assertArrayEquals(expected, imageAt(batch.offset(i), batch.bytesEach()),
                "request " + i + (i < base ? " was consumed and written" : " was not consumed and not written"));
            if (i >= base) {
                assertEquals(RawChains.NO_STATUS, batch.status(i), "request " + i + " untouched");
            }
        }

        fe.restartQueue(0, base);

        batch.awaitAll(FrontEnds.DEADLINE);
        batch.assertOk(0, batch.count);
        assertEquals(batch.count, q.usedIdx());
        final BlkClient blk = FrontEnds.client(fe, 0);
        for (int i = 0; i < batch.count; i++) {
            assertArrayEquals(batch.data(i), imageAt(batch.offset(i), batch.bytesEach()), "request " + i + " in the image");
            assertArrayEquals(batch.data(i), blk.read(batch.sector(i), batch.bytesEach()).data(), "request " + i + " read back");
        }
    }

    @Test
    void shouldHoldRequestsWhileQueueIsDisabledAndCompleteThemWhenEnabledAgain() throws IOException {
        fe = FrontEnds.connect(socket);
        final DriverQueue q = fe.queue(0);
        assertEquals(VirtioBlk.S_OK, FrontEnds.client(fe, 0).flush(), "the queue runs");
        final WriteBatch batch = new WriteBatch(fe, 0, 4, 4096, 64, 200);

        fe.setVringEnable(0, false);
        batch.submitAll();
        q.kick(); // a running queue would certainly notice

        assertFalse(q.awaitUsed(QUIET.toNanos()), "a disabled queue completes nothing");
        for (int i = 0; i < batch.count; i++) {
            assertEquals(RawChains.NO_STATUS, batch.status(i));
            assertArrayEquals(originalAt(batch.offset(i), 4096), imageAt(batch.offset(i), 4096), "nothing written while disabled");
        }

        fe.setVringEnable(0, true);

        batch.awaitAll(FrontEnds.DEADLINE);
        batch.assertOk(0, batch.count);
        for (int i = 0; i < batch.count; i++) {
            assertArrayEquals(batch.data(i), imageAt(batch.offset(i), 4096));
        }
    }

    // ---------------------------------------------------------------- memory table changes

    @Test
    void shouldKeepIoCorrectWhileTheMemoryTableIsReplacedAndServeBuffersInTheNewRegion() throws Exception {
        fe = FrontEnds.connect(socket);
        final GuestRam ram0 = fe.ram();
        final RawChains raw = new RawChains(fe, 0);
        final BlkClient blk = FrontEnds.client(fe, 0);
        try (GuestRam ram1 = GuestRam.create(1 << 20)) {
            final Region r0 = new Region(0, ram0.size(), ram0.userAddress(0), 0, ram0.fd());
            final Region r1 = new Region(ram0.size(), ram1.size(), ram1.userAddress(0), 0, ram1.fd());
            final Semaphore progress = new Semaphore(0);
            final AtomicBoolean running = new AtomicBoolean(true);
            final AtomicReference<Throwable> failure = new AtomicReference<>();
            final int[] iterations = new int[1];
            final Thread io = new Thread(() -> {
                try {
                    for (int i = 0; running.get(); i++) {
                        final byte[] data = TestImage.pattern(4096, 1000 + i);
                        final long sector = (i % 64) * 8L;
                        assertEquals(VirtioBlk.S_OK, blk.write(sector, data), "write " + i);
                        assertArrayEquals(data, blk.read(sector, 4096).data(), "read back " + i);
                        iterations[0] = i + 1;
                        progress.release();
                    }
                } catch (final Throwable t) {
                    failure.set(t);
                    progress.release(1000);
                }
            }, "test-io");
            io.start();
            try {
                for (int swap = 0; swap < 20; swap++) {
                    assertTrue(progress.tryAcquire(FrontEnds.DEADLINE.toSeconds(), TimeUnit.SECONDS), "I/O progresses between swaps");
                    assertNull(failure.get());
                    // Alternate so that region 1 is also unmapped and mapped again while I/O runs.
                    final long status = swap % 2 == 0 ? MemoryMessages.setMemTable(fe, r0, r1) : MemoryMessages.setMemTable(fe, r0);
                    assertEquals(0, status, "SET_MEM_TABLE " + swap + " applied");
                }
                assertTrue(progress.tryAcquire(FrontEnds.DEADLINE.toSeconds(), TimeUnit.SECONDS), "I/O continues after the last swap");
            } finally {
                running.set(false);
                io.join(FrontEnds.DEADLINE.toMillis());
            }
            assertFalse(io.isAlive());
            assertNull(failure.get(), () -> "I/O during the swaps failed: " + failure.get());
            assertTrue(iterations[0] >= 20, "write/read pairs done: " + iterations[0]);

            assertEquals(0, MemoryMessages.setMemTable(fe, r0, r1));
            final byte[] data = TestImage.pattern(4096, 7);
            ram1.segment(0, 4096).copyFrom(MemorySegment.ofArray(data));
            final Used w = raw.request(VirtioBlk.T_OUT, 1024, ram0.size(), 4096, false);
            assertEquals(VirtioBlk.S_OK, w.status(), "a write from a buffer in the second region");
            assertArrayEquals(data, imageAt(1024L * SECTOR, 4096));
            final Used r = raw.request(VirtioBlk.T_IN, 1024, ram0.size() + 8192, 4096, true);
            assertEquals(VirtioBlk.S_OK, r.status(), "a read into a buffer in the second region");
            assertArrayEquals(data, ram1.segment(8192, 4096).toArray(JAVA_BYTE));
        }
    }

    @Test
    void shouldServeBufferInRegionAddedByAddMemRegAndRefuseItAfterRemMemReg() throws IOException {
        fe = FrontEnds.connect(socket);
        final GuestRam ram0 = fe.ram();
        final RawChains raw = new RawChains(fe, 0);
        try (GuestRam ram1 = GuestRam.create(1 << 20)) {
            final Region added = new Region(ram0.size(), ram1.size(), ram1.userAddress(0), 0, ram1.fd());
            assertEquals(0, MemoryMessages.addMemReg(fe, added));
            final byte[] data = TestImage.pattern(4096, 8);
            ram1.segment(4096, 4096).copyFrom(MemorySegment.ofArray(data));

            assertEquals(VirtioBlk.S_OK, raw.request(VirtioBlk.T_OUT, 2048, ram0.size() + 4096, 4096, false).status());
            assertArrayEquals(data, imageAt(2048L * SECTOR, 4096), "written from the added region");
            assertEquals(VirtioBlk.S_OK, raw.request(VirtioBlk.T_IN, 2048, ram0.size() + 65536, 4096, true).status());
            assertArrayEquals(data, ram1.segment(65536, 4096).toArray(JAVA_BYTE), "read into the added region");

            assertEquals(0, MemoryMessages.remMemReg(fe, added));

            ram1.segment(4096, 4096).fill((byte) 0x3c);
            final Used gone = raw.request(VirtioBlk.T_OUT, 2048, ram0.size() + 4096, 4096, false);
            assertEquals(0, gone.length(), "a buffer in the removed region is outside guest memory");
            assertEquals(RawChains.NO_STATUS, gone.status());
            assertArrayEquals(data, imageAt(2048L * SECTOR, 4096), "nothing written from the removed region");
            final BlkClient blk = FrontEnds.client(fe, 0);
            assertEquals(VirtioBlk.S_OK, blk.write(2056, data), "the queue still serves buffers in the remaining region");
            assertArrayEquals(data, imageAt(2056L * SECTOR, 4096));
        }
    }

    // ---------------------------------------------------------------- disconnects and several queues

    @Test
    void shouldServeANewFrontEndAfterOneDisconnectsWithRequestsInFlight() throws IOException {
        fe = FrontEnds.connect(socket);
        final WriteBatch batch = new WriteBatch(fe, 0, 200, 4096, 0, 300);
        batch.submitAll();

        fe.close();
        fe = null;

        FrontEnds.assertEngineServesNewFrontEnd(socket, image, 3000);
        for (int i = 0; i < batch.count; i++) {
            final byte[] now = imageAt(batch.offset(i), 4096);
            assertTrue(Arrays.equals(batch.data(i), now) || Arrays.equals(originalAt(batch.offset(i), 4096), now),
                "request " + i + " is either written whole or not at all");
        }
    }

    @Test
    void shouldServeTwoQueuesInParallelEachWithItsOwnData() throws Exception {
        fe = VhostUserFrontend.connect(socket, GuestRam.create(FrontEnds.RAM_BYTES), FrontEnds.CONFIG.withQueues(2));
        final int perQueue = 64;
        final CountDownLatch go = new CountDownLatch(1);
        final AtomicReference<Throwable> failure = new AtomicReference<>();
        final Thread[] threads = new Thread[2];
        for (int qi = 0; qi < 2; qi++) {
            final BlkClient blk = FrontEnds.client(fe, qi);
            final int queue = qi;
            threads[qi] = new Thread(() -> {
                try {
                    assertTrue(go.await(5, TimeUnit.SECONDS));
                    for (int i = 0; i < perQueue; i++) {
                        final byte[] data = TestImage.pattern(4096, queue * 10_000L + i);
                        final long sector = queue * 1024L + i * 8L;
                        assertEquals(VirtioBlk.S_OK, blk.write(sector, data), "queue " + queue + " write " + i);
                        assertArrayEquals(data, blk.read(sector, 4096).data(), "queue " + queue + " read " + i);
                    }
                } catch (final Throwable t) {
                    failure.compareAndSet(null, t);
                }
            }, "test-q" + qi);
            threads[qi].start();
        }
        go.countDown();
        for (final Thread t : threads) {
            t.join(FrontEnds.DEADLINE.toMillis());
            assertFalse(t.isAlive(), t.getName() + " finished");
        }
        assertNull(failure.get(), () -> "a queue failed: " + failure.get());

        for (int queue = 0; queue < 2; queue++) {
            for (int i = 0; i < perQueue; i++) {
                assertArrayEquals(TestImage.pattern(4096, queue * 10_000L + i), imageAt((queue * 1024L + i * 8L) * SECTOR, 4096),
                    "queue " + queue + " request " + i + " in the image");
            }
        }
    }

    // ---------------------------------------------------------------- write cache and flush

    @Test
    void shouldReportWritebackAndTurnItOffThroughSetConfig() throws IOException {
        fe = FrontEnds.connect(socket);
        assertTrue(fe.hasFeature(VirtioBlk.F_CONFIG_WCE));
        assertEquals(1, fe.blkConfig().wce(), "GET_CONFIG during the handshake shows writeback");
        assertEquals(1, BlkConfig.parse(fe.getConfig(0, BlkConfig.SIZE)).wce());

        assertEquals(0, fe.setConfig(32, new byte[] {0}), "SET_CONFIG writeback=0 is acked with REPLY_ACK 0");

        assertEquals(0, BlkConfig.parse(fe.getConfig(0, BlkConfig.SIZE)).wce(), "and reads back 0");
        assertEquals(0, fe.getConfig(32, 1)[0]);
        assertEquals(1, fe.setConfig(32, new byte[] {2}), "only 0 and 1 are writeback values");
        assertEquals(1, fe.setConfig(0, new byte[] {0}), "capacity is not writable");
        assertEquals(0, BlkConfig.parse(fe.getConfig(0, BlkConfig.SIZE)).wce());
        final byte[] data = TestImage.pattern(4096, 9);
        assertEquals(VirtioBlk.S_OK, FrontEnds.client(fe, 0).write(40, data), "writes work in write-through mode");
        assertArrayEquals(data, imageAt(40L * SECTOR, 4096));
    }

    @Test
    void shouldFlushAfterWritesWithOkAndLeaveTheBytesInTheFile() throws IOException {
        fe = FrontEnds.connect(socket);
        final BlkClient blk = FrontEnds.client(fe, 0);
        final byte[][] data = new byte[8][];
        for (int i = 0; i < data.length; i++) {
            data[i] = TestImage.pattern(8192, 50 + i);
            assertEquals(VirtioBlk.S_OK, blk.write(100L + i * 37, data[i]));
        }

        assertEquals(VirtioBlk.S_OK, blk.flush());

        for (int i = 0; i < data.length; i++) {
            assertArrayEquals(data[i], imageAt((100L + i * 37) * SECTOR, 8192), "write " + i + " in the file");
        }
    }
}
