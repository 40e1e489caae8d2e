package io.lazyblk.blk;

import io.lazyblk.pagemap.Await;
import io.lazyblk.pagemap.Manifest;
import io.lazyblk.persistence.LocalImage;
import io.lazyblk.persistence.PageStateFile;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Background runs (adjacent pages in one fetch) while the guest works on their pages: a page the guest wrote sectors of
 * meanwhile is merged around them, one it overwrote whole is left alone, one that fails its hash never reaches the
 * local file (and is fetched again alone), a reader parked on a page of a run in flight is answered when it lands, and
 * every page becomes local only through the durability rounds. Real local file; the source serves from memory.
 */
class LazyStoreRunsTest {
    private static final int PAGE = 4096;
    private static final int PAGES = 256;
    private static final int SIZE = PAGE * PAGES;

    @TempDir
    Path dir;
    private final List<AutoCloseable> open = new ArrayList<>();

    @AfterEach
    void closeAll() throws Exception {
        for (int i = open.size() - 1; i >= 0; i--) {
            open.get(i).close();
        }
    }

    @Test
    void shouldFetchAdjacentPagesAsOneRunAndMergeEachAroundWhatTheGuestDidMeanwhile() throws Exception {
        final byte[] golden = new byte[SIZE];
        new Random(21).nextBytes(golden);
        final MemorySource src = new MemorySource(golden, PAGE, 22);
        open.add(src);
        src.hold(true); // fetches are accepted, answered once released
        final int corrupt = 3;
        src.corrupt(corrupt);
        final Manifest m = src.manifest();
        final Path image = dir.resolve("disk.img");
        LocalImage.createReserved(image, SIZE);
        final PageStateFile state = PageStateFile.openOrCreate(PageStateFile.beside(image), m.size(), m.pageSize(), m.digest());
        final LazyStore store = new LazyStore(m, LocalImage.open(image, false), state, src,
            new LazyStore.Options("golden", 64L * PAGE, 0, 10_000_000_000L)); // 4-page runs, 2 run buffers
        open.add(store);
        Await.until("the first runs are asked for", Duration.ofSeconds(10), () -> store.fillStats().backgroundRuns() >= 2);
        assertEquals(2, src.backgroundFetches.get(), "pages 0-7 went out as two fetches, not eight");

        final TestRequest w = new TestRequest(PAGE);
        open.add(w);
        final byte[] sector = new byte[512];
        Arrays.fill(sector, (byte) 0x5a);
        w.fill(sector, 0, 512);
        assertEquals(0, w.run(store, IoRequest.WRITE, PAGE + 1024, 512), "a sector of page 1, in a run in flight");
        final byte[] whole = new byte[PAGE];
        Arrays.fill(whole, (byte) 0x3c);
        w.fill(whole, 0, PAGE);
        assertEquals(0, w.run(store, IoRequest.WRITE, 2L * PAGE, PAGE), "all of page 2, in a run in flight");
        final TestRequest r = new TestRequest(PAGE);
        open.add(r);
        assertEquals(BlockBackend.PENDING, r.submit(store, IoRequest.READ, 5L * PAGE + 512, 1024),
            "a read of page 5 waits for its run");
        assertEquals(0, store.fillStats().demandFetches(), "no second fetch of a page a run carries");

        src.hold(false);
        assertEquals(0, r.await());
        assertArrayEquals(Arrays.copyOfRange(golden, 5 * PAGE + 512, 5 * PAGE + 1536), r.bytes(1024));
        Await.until("every page but the damaged one is local", Duration.ofSeconds(30), () -> store.localPages() == PAGES - 1);
        assertFalse(state.isLocal(corrupt), "a page that fails its hash never becomes local");
        assertTrue(src.backgroundFetches.get() < PAGES / 2, "runs, not pages: " + src.backgroundFetches.get() + " background fetches");

        final byte[] local = Files.readAllBytes(image);
        final byte[] expected = golden.clone();
        System.arraycopy(sector, 0, expected, PAGE + 1024, 512);
        System.arraycopy(whole, 0, expected, 2 * PAGE, PAGE);
        Arrays.fill(expected, corrupt * PAGE, (corrupt + 1) * PAGE, (byte) 0); // never written
        assertArrayEquals(expected, local, "the image's bytes around the guest's, the guest's whole page untouched");
    }

    @Test
    void shouldAskAgainForRunsTheSourceRefusedOrFailedAndServeAReaderOfTheirPagesMeanwhile() throws Exception {
        final byte[] golden = new byte[SIZE];
        new Random(23).nextBytes(golden);
        final MemorySource src = new MemorySource(golden, PAGE, 24);
        open.add(src);
        src.down(true); // every fetch refused: the first run's pages wait, still claimed, no fetch carrying them
        final Manifest m = src.manifest();
        final Path image = dir.resolve("disk2.img");
        LocalImage.createReserved(image, SIZE);
        final PageStateFile state = PageStateFile.openOrCreate(PageStateFile.beside(image), m.size(), m.pageSize(), m.digest());
        final LazyStore store = new LazyStore(m, LocalImage.open(image, false), state, src,
            new LazyStore.Options("golden", 64L * PAGE, 0, 10_000_000_000L));
        open.add(store);
        Await.until("the first run was refused and waits", Duration.ofSeconds(10),
            () -> store.table.state(0) == io.lazyblk.pagemap.PageTable.FETCHING);
        final TestRequest r = new TestRequest(PAGE);
        open.add(r);
        assertEquals(BlockBackend.PENDING, r.submit(store, IoRequest.READ, PAGE, 512), "a read of page 1 waits");
        src.failShare(0.3); // once up, a share of the fetches fail: their runs are asked for again
        src.down(false);
        assertEquals(0, r.await(), "the reader's page is fetched (on demand, or by its run asked again)");
        assertArrayEquals(Arrays.copyOfRange(golden, PAGE, PAGE + 512), r.bytes(512));
        assertTrue(store.awaitDiskOnly(Duration.ofSeconds(60).toNanos()), "the fill completes despite refusals and failures");
        assertArrayEquals(golden, Files.readAllBytes(image));
    }

    @Test
    void shouldFailAReaderParkedOnAFailedRunsPageAfterItsDemandTimeoutWhileTheSourceStaysDown() throws Exception {
        final byte[] golden = new byte[SIZE];
        new Random(25).nextBytes(golden);
        final MemorySource src = new MemorySource(golden, PAGE, 26);
        open.add(src);
        src.hold(true);
        final Manifest m = src.manifest();
        final Path image = dir.resolve("disk3.img");
        LocalImage.createReserved(image, SIZE);
        final PageStateFile state = PageStateFile.openOrCreate(PageStateFile.beside(image), m.size(), m.pageSize(), m.digest());
        final LazyStore store = new LazyStore(m, LocalImage.open(image, false), state, src,
            new LazyStore.Options("golden", 64L * PAGE, 0, 1_000_000_000L)); // a 1 s demand timeout
        open.add(store);
        Await.until("the first runs are asked for", Duration.ofSeconds(10), () -> store.fillStats().backgroundRuns() >= 2);
        final TestRequest r = new TestRequest(PAGE);
        open.add(r);
        assertEquals(BlockBackend.PENDING, r.submit(store, IoRequest.READ, PAGE, 512), "a read of page 1 waits for its run");
        src.failShare(1.0); // the runs fail...
        src.down(true); // ...and the provider stays unreachable
        src.hold(false);
        assertEquals(-5, r.await(), "IOERR once the demand timeout passes, not a read parked for good");
    }
}
