package io.lazyblk.blk;

import io.lazyblk.persistence.LocalImage;
import io.lazyblk.persistence.SimulatedDisk;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * What every {@link BlockBackend} promises, at the level of whole requests, run against each backend (the local file,
 * the null backend, the lazily filled store) over a {@link SimulatedDisk} that can lose power and fail. A subclass says
 * how to open its backend over an image whose bytes are {@code initial}; a backend that keeps no data (null) skips
 * the data checks and the durability checks.
 */
abstract class BlockBackendContract {
    static final int SIZE = 1 << 20;
    static final int PAGE = 16 << 10;
    static final Path IMAGE = Path.of("/sim/disk.img");

    final SimulatedDisk disk = new SimulatedDisk(7);
    final byte[] initial = new byte[SIZE];
    private final List<AutoCloseable> open = new ArrayList<>();
    private final Arena arena = Arena.ofShared();

    BlockBackendContract() {
        new Random(3).nextBytes(initial);
    }

    /** Opens the backend over {@code disk} holding an image of {@link #initial} (first call) or what the disk holds now. */
    abstract BlockBackend open(boolean first) throws Exception;

    /** Whether the backend keeps what is written (the null backend does not). */
    boolean storesData() {
        return true;
    }

    BlockBackend track(final BlockBackend b) {
        open.add(b);
        return b;
    }

    TestRequest request(final int capacity) {
        final TestRequest r = new TestRequest(capacity);
        open.add(r);
        return r;
    }

    @AfterEach
    void closeAll() throws Exception {
        for (int i = open.size() - 1; i >= 0; i--) {
            open.get(i).close();
        }
        arena.close();
    }

    private static byte[] pattern(final int length, final int seed) {
        final byte[] b = new byte[length];
        new Random(seed).nextBytes(b);
        return b;
    }

    @Test
    void shouldReadTheImageWhereNothingWasWritten() throws Exception {
        final BlockBackend b = track(open(true));
        final TestRequest r = request(3 * PAGE);
        assertEquals(0, r.run(b, IoRequest.READ, PAGE - 4096, 2 * PAGE + 4096));
        if (storesData()) {
            assertArrayEquals(Arrays.copyOfRange(initial, PAGE - 4096, 3 * PAGE), r.bytes(2 * PAGE + 4096));
        }
        assertEquals(SIZE, b.sizeBytes());
    }

    @Test
    void shouldReadBackWhatWasWrittenAcrossPagesAndSectors() throws Exception {
        final BlockBackend b = track(open(true));
        final TestRequest w = request(2 * PAGE);
        final byte[] data = pattern(PAGE + 1024, 1);
        w.fill(data, 0, data.length);
        final long at = 5L * PAGE - 512;
        assertEquals(0, w.run(b, IoRequest.WRITE, at, data.length));
        final TestRequest r = request(3 * PAGE);
        assertEquals(0, r.run(b, IoRequest.READ, 4L * PAGE, 3 * PAGE));
        if (storesData()) {
            final byte[] expected = Arrays.copyOfRange(initial, 4 * PAGE, 7 * PAGE);
            System.arraycopy(data, 0, expected, PAGE - 512, data.length);
            assertArrayEquals(expected, r.bytes(3 * PAGE));
        }
    }

    @Test
    void shouldReadZerosAfterWriteZeroes() throws Exception {
        final BlockBackend b = track(open(true));
        final MemorySegment zeroIov = LocalImage.zeroIov(arena, 4096);
        final TestRequest z = request(0);
        assertEquals(0, z.writeZeroes(b, 3L * PAGE + 512, 2L * PAGE, zeroIov, 4096));
        final TestRequest r = request(3 * PAGE);
        assertEquals(0, r.run(b, IoRequest.READ, 3L * PAGE, 3 * PAGE));
        if (storesData()) {
            final byte[] expected = Arrays.copyOfRange(initial, 3 * PAGE, 6 * PAGE);
            Arrays.fill(expected, 512, 512 + 2 * PAGE, (byte) 0);
            assertArrayEquals(expected, r.bytes(3 * PAGE));
        }
    }

    @Test
    void shouldCompleteEveryRequestOnceUnderConcurrentReadersAndWriters() throws Exception {
        final BlockBackend b = track(open(true));
        final ExecutorService pool = Executors.newFixedThreadPool(3);
        try {
            final List<Future<?>> runs = new ArrayList<>();
            for (int t = 0; t < 3; t++) {
                final int thread = t;
                final TestRequest r = request(2 * PAGE);
                runs.add(pool.submit(() -> {
                    final Random rnd = new Random(thread);
                    // Each thread writes only its own third of the image, so what it reads back is its own.
                    final int region = SIZE / 3 / 4096 * 4096;
                    final byte[] mine = Arrays.copyOfRange(initial, thread * region, (thread + 1) * region);
                    for (int i = 0; i < 200; i++) {
                        final int len = 512 * (1 + rnd.nextInt(2 * PAGE / 512 - 1));
                        final int off = rnd.nextInt((region - len) / 512) * 512;
                        if (rnd.nextBoolean()) {
                            final byte[] d = pattern(len, thread * 1000 + i);
                            r.fill(d, 0, len);
                            assertEquals(0, r.run(b, IoRequest.WRITE, (long) thread * region + off, len));
                            System.arraycopy(d, 0, mine, off, len);
                        } else {
                            assertEquals(0, r.run(b, IoRequest.READ, (long) thread * region + off, len));
                            if (storesData()) {
                                assertArrayEquals(Arrays.copyOfRange(mine, off, off + len), r.bytes(len), "read at " + off);
                            }
                        }
                        assertTrue(r.completions.get() <= 1, "a request completed twice");
                    }
                    return null;
                }));
            }
            for (final Future<?> f : runs) {
                f.get();
            }
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void shouldKeepWritesAcknowledgedBeforeAFlushThroughAPowerCut() throws Exception {
        if (!storesData()) {
            return;
        }
        BlockBackend b = open(true);
        final TestRequest w = request(PAGE);
        final byte[] flushed = pattern(PAGE, 11);
        w.fill(flushed, 0, PAGE);
        assertEquals(0, w.run(b, IoRequest.WRITE, 9L * PAGE + 512, PAGE));
        assertEquals(0, b.flush());
        final byte[] later = pattern(4096, 12);
        w.fill(later, 0, 4096);
        assertEquals(0, w.run(b, IoRequest.WRITE, 20L * PAGE, 4096)); // not flushed: may or may not survive
        disk.powerCut();
        b.close();
        b = track(open(false));
        final TestRequest r = request(PAGE);
        assertEquals(0, r.run(b, IoRequest.READ, 9L * PAGE + 512, PAGE));
        assertArrayEquals(flushed, r.bytes(PAGE));
        assertEquals(0, r.run(b, IoRequest.READ, 20L * PAGE, 4096));
        final byte[] got = r.bytes(4096);
        assertTrue(Arrays.equals(got, later) || Arrays.equals(got, Arrays.copyOfRange(initial, 20 * PAGE, 20 * PAGE + 4096))
            || unflushedMayTear(got, later), "an unflushed write reads back as itself or the old bytes, sector by sector");
    }

    private boolean unflushedMayTear(final byte[] got, final byte[] later) {
        for (int s = 0; s < got.length; s += 512) {
            final byte[] g = Arrays.copyOfRange(got, s, s + 512);
            if (!Arrays.equals(g, Arrays.copyOfRange(later, s, s + 512))
                && !Arrays.equals(g, Arrays.copyOfRange(initial, 20 * PAGE + s, 20 * PAGE + s + 512))) {
                return false;
            }
        }
        return true;
    }

    @Test
    void shouldFailEveryFlushForGoodOnceASyncFailed() throws Exception {
        if (!storesData()) {
            return;
        }
        final BlockBackend b = track(open(true));
        final TestRequest w = request(PAGE);
        w.fill(pattern(PAGE, 5), 0, PAGE);
        assertEquals(0, w.run(b, IoRequest.WRITE, 2L * PAGE, PAGE));
        assertNull(b.failure());
        disk.failSync(1, SimulatedDisk.EIO);
        assertNotEquals(0, b.flush(), "the sync failed");
        // Linux dropped the dirty pages with the error: a retried fdatasync would succeed without them.
        assertNotEquals(0, b.flush(), "a retry must not report the lost writes durable");
        assertEquals(0, w.run(b, IoRequest.WRITE, 3L * PAGE, PAGE), "writes still go to the file");
        assertNotEquals(0, b.flush(), "every later FLUSH fails");
        assertNotNull(b.failure());
        assertTrue(b.failure().contains("errno 5") && b.failure().contains("restart the engine"), b.failure());
        final TestRequest r = request(PAGE);
        assertEquals(0, r.run(b, IoRequest.READ, 2L * PAGE, PAGE), "reads keep working");
    }

    @Test
    void shouldFailTheWriteThatHitAFullDiskAndKeepReading() throws Exception {
        if (!storesData()) {
            return;
        }
        final BlockBackend b = track(open(true));
        final TestRequest w = request(PAGE);
        w.fill(pattern(PAGE, 6), 0, PAGE);
        // The image's next write: a durability round writing the state file meanwhile must not take the fault.
        disk.failWrite(IMAGE, 1, SimulatedDisk.ENOSPC);
        assertEquals(-SimulatedDisk.ENOSPC, w.run(b, IoRequest.WRITE, 7L * PAGE, PAGE));
        final TestRequest r = request(PAGE);
        assertEquals(0, r.run(b, IoRequest.READ, 12L * PAGE, PAGE));
        assertArrayEquals(Arrays.copyOfRange(initial, 12 * PAGE, 13 * PAGE), r.bytes(PAGE));
        assertNotEquals(0, b.flush(), "a failed write is sticky: nothing is reported durable after it");
        assertTrue(b.failure().contains("No space left on device"), b.failure());
    }
}
