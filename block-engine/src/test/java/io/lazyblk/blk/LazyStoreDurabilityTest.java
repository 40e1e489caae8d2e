package io.lazyblk.blk;

import io.lazyblk.pagemap.Await;
import io.lazyblk.pagemap.Manifest;
import io.lazyblk.persistence.LocalImage;
import io.lazyblk.persistence.PageStateFile;
import io.lazyblk.persistence.SimulatedDisk;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The lazy store's durability order over a simulated disk: what it records durable is what a completed sync covered,
 * the record of the guest's writes survives a clean stop and is bounded in time while the provider is down, and a
 * failure of the state file is sticky.
 */
class LazyStoreDurabilityTest {
    private static final int SIZE = 1 << 20;
    private static final int PAGE = 16 << 10;
    private static final Path IMAGE = Path.of("/sim/disk.img");
    private static final Path STATE = PageStateFile.beside(IMAGE);

    private final SimulatedDisk disk = new SimulatedDisk(5);
    private final byte[] golden = new byte[SIZE];
    private final List<AutoCloseable> open = new ArrayList<>();

    LazyStoreDurabilityTest() {
        new Random(8).nextBytes(golden);
    }

    @AfterEach
    void closeAll() throws Exception {
        for (int i = open.size() - 1; i >= 0; i--) {
            open.get(i).close();
        }
    }

    private MemorySource source() {
        final MemorySource s = new MemorySource(golden, PAGE, 2);
        open.add(s);
        return s;
    }

    /** A store over the disk (a new local file the first time); no background fill unless {@code fillRate > 0}. */
    private LazyStore store(final SimulatedDisk on, final MemorySource source, final long fillRate) throws Exception {
        final Manifest m = source.manifest();
        if (!on.exists(IMAGE)) {
            LocalImage.createReserved(IMAGE, SIZE, on);
        }
        final PageStateFile state = PageStateFile.openOrCreate(STATE, m.size(), m.pageSize(), m.digest(), on);
        return new LazyStore(m, LocalImage.open(IMAGE, false, on), state, source,
            new LazyStore.Options("golden", 1 << 20, fillRate, 10_000_000_000L));
    }

    private TestRequest request(final int capacity) {
        final TestRequest r = new TestRequest(capacity);
        open.add(r);
        return r;
    }

    private static byte[] bytes(final int n, final int seed) {
        final byte[] b = new byte[n];
        new Random(seed).nextBytes(b);
        return b;
    }

    @Test
    void shouldNotRecordAGuestWriteThatLandedWhileTheImageSyncedAsDurable() throws Exception {
        final MemorySource src = source();
        src.down(true); // nothing lands: the page stays absent, its sectors are the guest's or nothing
        final LazyStore store = store(disk, src, 0);
        final TestRequest w = request(PAGE);
        final byte[] mine = bytes(1024, 1);
        w.fill(mine, 0, mine.length);
        final long at = 10L * PAGE + 2048;
        // The write completes while a FLUSH's image sync is in flight: that sync does not cover it.
        disk.duringNextSync(IMAGE, () -> assertEquals(0, w.run(store, IoRequest.WRITE, at, mine.length)));
        assertEquals(0, store.flush());
        disk.powerCutLosingUnsynced();
        store.close();

        final MemorySource up = source();
        final LazyStore again = store(disk, up, 0);
        open.add(again);
        final TestRequest r = request(PAGE);
        assertEquals(0, r.run(again, IoRequest.READ, 10L * PAGE, PAGE));
        // The write was never flushed, so losing it is allowed; what is not allowed is a sector recorded as the guest's
        // that holds neither its bytes nor the image's (zeros of the fresh local file).
        assertArrayEquals(Arrays.copyOfRange(golden, 10 * PAGE, 11 * PAGE), r.bytes(PAGE),
            "the sectors written during the sync must be fetched again: the sync did not cover them");
    }

    @Test
    void shouldKeepTheRecordOfAGuestWriteThroughACleanStopWithoutAFlush() throws Exception {
        final MemorySource src = source();
        src.down(true);
        final LazyStore store = store(disk, src, 0);
        final TestRequest w = request(PAGE);
        final byte[] mine = bytes(1536, 2);
        w.fill(mine, 0, mine.length);
        assertEquals(0, w.run(store, IoRequest.WRITE, 20L * PAGE + 512, mine.length));
        store.close(); // no FLUSH: a clean stop

        final LazyStore again = store(disk, source(), 0);
        open.add(again);
        final TestRequest r = request(PAGE);
        assertEquals(0, r.run(again, IoRequest.READ, 20L * PAGE, PAGE));
        final byte[] expected = Arrays.copyOfRange(golden, 20 * PAGE, 21 * PAGE);
        System.arraycopy(mine, 0, expected, 512, mine.length);
        assertArrayEquals(expected, r.bytes(PAGE), "the guest's sectors survive the restart, merged with the image's");
    }

    @Test
    void shouldRecordGuestWritesWithinASecondWhileTheProviderIsDown() throws Exception {
        final MemorySource src = source();
        src.down(true);
        final LazyStore store = store(disk, src, 0);
        open.add(store);
        final TestRequest w = request(PAGE);
        final byte[] mine = bytes(PAGE / 2, 3);
        w.fill(mine, 0, mine.length);
        final long at = 33L * PAGE;
        assertEquals(0, w.run(store, IoRequest.WRITE, at, mine.length));
        // No FLUSH, no page landing: only the bound on the window records it.
        Await.until("the guest's write recorded durably without a FLUSH while the provider is down", Duration.ofSeconds(10), () -> {
            final SimulatedDisk afterCut = disk.platterCopy();
            try (PageStateFile s = PageStateFile.openOrCreate(STATE, SIZE, PAGE, src.manifest().digest(), afterCut)) {
                return s.guestWrote(at / 512) && s.guestWrote((at + mine.length) / 512 - 1);
            }
        });
    }

    @Test
    void shouldFailEveryFlushForGoodOnceTheStateFileFailed() throws Exception {
        final MemorySource src = source();
        final LazyStore store = store(disk, src, 0);
        open.add(store);
        final TestRequest w = request(PAGE);
        w.fill(bytes(PAGE, 4), 0, PAGE);
        assertEquals(0, w.run(store, IoRequest.WRITE, 5L * PAGE, PAGE));
        disk.failWrite(STATE, 1, SimulatedDisk.EIO);
        assertNotEquals(0, store.flush());
        assertEquals(0, w.run(store, IoRequest.WRITE, 6L * PAGE, PAGE));
        assertNotEquals(0, store.flush(), "the state file's failure is sticky");
        assertTrue(store.failure() != null && store.failure().contains("restart the engine"), store.failure());
        final TestRequest r = request(PAGE);
        assertEquals(0, r.run(store, IoRequest.READ, 40L * PAGE, PAGE), "reads of absent pages keep working");
        assertArrayEquals(Arrays.copyOfRange(golden, 40 * PAGE, 41 * PAGE), r.bytes(PAGE));
    }
}
