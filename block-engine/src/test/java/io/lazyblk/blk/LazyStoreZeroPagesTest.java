package io.lazyblk.blk;

import io.lazyblk.pagemap.Await;
import io.lazyblk.pagemap.Manifest;
import io.lazyblk.persistence.FileIo;
import io.lazyblk.persistence.LocalImage;
import io.lazyblk.persistence.PageStateFile;
import io.lazyblk.persistence.SimulatedDisk;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Pages of the image that hold only zeros (the manifest knows them by their hash): never fetched, holes in the local
 * file, local from the first durability round, and read as zeros without I/O until the guest writes them.
 */
class LazyStoreZeroPagesTest {
    private static final int SIZE = 1 << 20;
    private static final int PAGE = 16 << 10;
    private static final int PAGES = SIZE / PAGE;
    /** Zero pages of the golden image: a run, a lone one, and the last page. */
    private static final Set<Integer> ZERO = Set.of(3, 4, 5, 6, 7, 20, PAGES - 1);
    private static final Path IMAGE = Path.of("/sim/disk.img");
    private static final Path STATE = PageStateFile.beside(IMAGE);

    @TempDir
    Path dir;

    private final SimulatedDisk disk = new SimulatedDisk(11);
    private final CountingFiles files = new CountingFiles(disk);
    private final byte[] golden = new byte[SIZE];
    private final List<AutoCloseable> open = new ArrayList<>();

    LazyStoreZeroPagesTest() {
        new Random(12).nextBytes(golden);
        for (final int p : ZERO) {
            Arrays.fill(golden, p * PAGE, (p + 1) * PAGE, (byte) 0);
        }
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

    /** A store over the simulated disk, reads counted (a new local file, as the engine makes it, the first time). */
    private LazyStore store(final MemorySource source, final long fillRate) throws Exception {
        final Manifest m = source.manifest();
        if (!disk.exists(IMAGE)) {
            LocalImage.createReserved(IMAGE, SIZE, PAGE, p -> !m.isZeroPage(p), disk);
        }
        final PageStateFile state = PageStateFile.openOrCreate(STATE, m.size(), m.pageSize(), m.digest(), disk);
        return new LazyStore(m, LocalImage.open(IMAGE, false, files), state, source,
            new LazyStore.Options("golden", 1 << 20, fillRate, 10_000_000_000L));
    }

    private TestRequest request(final int capacity) {
        final TestRequest r = new TestRequest(capacity);
        open.add(r);
        return r;
    }

    private byte[] goldenPage(final int p) {
        return Arrays.copyOfRange(golden, p * PAGE, (p + 1) * PAGE);
    }

    @Test
    void shouldNeverFetchAZeroPageAndCountItLocalAllTheWayToDiskOnly() throws Exception {
        final MemorySource src = source();
        final LazyStore store = store(src, 0);
        open.add(store);
        assertEquals(ZERO.size(), store.fillStats().zeroPages());
        assertTrue(store.awaitDiskOnly(TimeUnit.SECONDS.toNanos(30)), "the fill completes, zero pages counted local");
        assertEquals(PAGES, store.localPages());
        for (int p = 0; p < PAGES; p++) {
            assertEquals(ZERO.contains(p) ? 0 : 1, src.fetchesOf(p), "fetches of page " + p);
        }
        final TestRequest r = request(SIZE);
        assertEquals(0, r.run(store, IoRequest.READ, 0, SIZE));
        assertArrayEquals(golden, r.bytes(SIZE));
        assertArrayEquals(golden, disk.contents(IMAGE), "the local file holds the image (holes read as zeros)");
    }

    @Test
    void shouldRecordZeroPagesLocalInTheFirstDurabilityRoundWithTheProviderDown() throws Exception {
        final MemorySource src = source();
        src.down(true);
        final LazyStore store = store(src, 0);
        open.add(store);
        Await.until("the zero pages recorded local", Duration.ofSeconds(10), () -> store.localPages() == ZERO.size());
        try (PageStateFile s = PageStateFile.openOrCreate(STATE, SIZE, PAGE, src.manifest().digest(), disk.platterCopy())) {
            for (int p = 0; p < PAGES; p++) {
                assertEquals(ZERO.contains(p), s.isLocal(p), "page " + p + " recorded local, durably");
            }
        }
        assertTrue(src.asked.isEmpty(), "nothing was fetched: " + src.askedPages());
    }

    @Test
    void shouldAnswerAReadOfZeroPagesWithZerosWithoutTouchingTheSourceOrTheFileUntilTheGuestWritesThem() throws Exception {
        final MemorySource src = source();
        src.down(true); // nothing lands: a read that needed I/O would either park or read the file
        final LazyStore store = store(src, 0);
        open.add(store);
        final TestRequest r = request(3 * PAGE);
        final byte[] junk = new byte[3 * PAGE];
        Arrays.fill(junk, (byte) 0x55);
        r.fill(junk, 0, junk.length);
        final long readsBefore = files.reads.get();
        assertEquals(0, r.run(store, IoRequest.READ, 4L * PAGE + 512, 3 * PAGE - 1024), "a read across three zero pages");
        assertArrayEquals(new byte[3 * PAGE - 1024], Arrays.copyOf(r.bytes(3 * PAGE), 3 * PAGE - 1024));
        assertEquals(readsBefore, files.reads.get(), "answered without reading the local file");
        assertTrue(src.asked.isEmpty(), "and without asking the source");

        try (Arena a = Arena.ofConfined()) {
            final MemorySegment zeroIov = LocalImage.zeroIov(a, 4096);
            final TestRequest z = request(0);
            assertEquals(0, z.writeZeroes(store, 5L * PAGE, PAGE, zeroIov, 4096), "write-zeroes over all of page 5");
            assertEquals(0, z.writeZeroes(store, 6L * PAGE + 1024, 512, zeroIov, 4096), "and over part of page 6");
        }
        r.fill(junk, 0, junk.length);
        assertEquals(0, r.run(store, IoRequest.READ, 5L * PAGE, PAGE));
        assertArrayEquals(new byte[PAGE], r.bytes(PAGE));
        assertEquals(readsBefore, files.reads.get(), "a page written whole with zeros still reads as zeros without I/O");
        assertEquals(0, r.run(store, IoRequest.READ, 6L * PAGE, PAGE));
        assertArrayEquals(new byte[PAGE], r.bytes(PAGE));
        assertNotEquals(readsBefore, files.reads.get(), "a page the guest wrote part of is read from the file");

        final TestRequest w = request(PAGE);
        final byte[] mine = new byte[1536];
        new Random(5).nextBytes(mine);
        w.fill(mine, 0, mine.length);
        assertEquals(0, w.run(store, IoRequest.WRITE, 20L * PAGE + 512, mine.length), "a partial write to zero page 20");
        assertEquals(0, r.run(store, IoRequest.READ, 20L * PAGE, PAGE));
        final byte[] expected = new byte[PAGE];
        System.arraycopy(mine, 0, expected, 512, mine.length);
        assertArrayEquals(expected, r.bytes(PAGE), "the guest's bytes, zeros around them");
        assertTrue(src.asked.isEmpty(), "nothing was fetched: " + src.askedPages());
    }

    @Test
    void shouldKeepTheGuestsWriteToAZeroPageAndTheOthersKnownZeroAcrossARestartAndDiskOnly() throws Exception {
        final LazyStore store = store(source(), 0);
        final TestRequest w = request(PAGE);
        final byte[] mine = new byte[2048];
        new Random(6).nextBytes(mine);
        w.fill(mine, 0, mine.length);
        assertEquals(0, w.run(store, IoRequest.WRITE, 4L * PAGE + 4096, mine.length));
        assertEquals(0, store.flush());
        store.close();

        final MemorySource again = source();
        final LazyStore restarted = store(again, 0);
        open.add(restarted);
        assertTrue(restarted.awaitDiskOnly(TimeUnit.SECONDS.toNanos(30)));
        assertEquals(ZERO.size() - 1, restarted.zeros.knownCount(), "every zero page but the written one reads zeros without I/O");
        final TestRequest r = request(PAGE);
        final long before = files.reads.get();
        assertEquals(0, r.run(restarted, IoRequest.READ, 3L * PAGE, PAGE));
        assertArrayEquals(new byte[PAGE], r.bytes(PAGE));
        assertEquals(before, files.reads.get(), "disk-only: a zero page is still answered without I/O");
        assertEquals(0, r.run(restarted, IoRequest.READ, 4L * PAGE, PAGE));
        final byte[] expected = new byte[PAGE];
        System.arraycopy(mine, 0, expected, 4096, mine.length);
        assertArrayEquals(expected, r.bytes(PAGE), "the guest's write to the zero page survived the restart");
        for (final int p : ZERO) {
            assertEquals(0, again.fetchesOf(p), "zero page " + p + " fetched after the restart");
        }

        // Disk-only: a write clears the page's mark as in lazy mode.
        w.fill(mine, 0, mine.length);
        assertEquals(0, w.run(restarted, IoRequest.WRITE, 7L * PAGE, mine.length));
        assertEquals(0, r.run(restarted, IoRequest.READ, 7L * PAGE, PAGE));
        assertArrayEquals(mine, Arrays.copyOf(r.bytes(PAGE), mine.length));
    }

    @Test
    void shouldPunchOutAGuestWriteToAZeroPageThatWasNeverRecordedSoReadsAndTheFileAgreeAfterARestart() throws Exception {
        final MemorySource src = source();
        src.down(true);
        final LazyStore store = store(src, 0);
        Await.until("the zero pages recorded local", Duration.ofSeconds(10), () -> store.localPages() == ZERO.size());
        final TestRequest w = request(PAGE);
        final byte[] mine = new byte[PAGE];
        new Random(7).nextBytes(mine);
        w.fill(mine, 0, PAGE);
        assertEquals(0, w.run(store, IoRequest.WRITE, 20L * PAGE, PAGE));
        // The image syncs (the write's bytes reach the platter) but the record of it fails: a FLUSH that did not complete.
        disk.failWrite(STATE, 1, SimulatedDisk.EIO);
        assertNotEquals(0, store.flush());
        disk.powerCutLosingUnsynced();
        store.close();

        final LazyStore restarted = store(source(), 1);
        open.add(restarted);
        final TestRequest r = request(PAGE);
        assertEquals(0, r.run(restarted, IoRequest.READ, 20L * PAGE, PAGE));
        final byte[] answered = r.bytes(PAGE);
        assertArrayEquals(new byte[PAGE], answered, "the write was never recorded: page 20 is the image's zeros again");
        assertArrayEquals(answered, Arrays.copyOfRange(disk.contents(IMAGE), 20 * PAGE, 21 * PAGE),
            "the file says what the reads say (a plain file backend serves it after the fill)");
    }

    @Test
    void shouldLeaveTheFilledLocalFileAsSparseAsTheImage() throws Exception {
        final int page = 64 << 10;
        final int pages = 64;
        final byte[] image = new byte[pages * page];
        new Random(9).nextBytes(image);
        int dataPages = 0;
        for (int p = 0; p < pages; p++) {
            if (p % 3 != 0 && p < 40) {
                dataPages++;
            } else {
                Arrays.fill(image, p * page, (p + 1) * page, (byte) 0);
            }
        }
        final Path local = dir.resolve("local.img");
        final MemorySource src = new MemorySource(image, page, 3);
        open.add(src);
        final Manifest m = src.manifest();
        LocalImage.createReserved(local, image.length, page, p -> !m.isZeroPage(p));
        final PageStateFile state = PageStateFile.openOrCreate(PageStateFile.beside(local), m.size(), page, m.digest());
        final LazyStore store = new LazyStore(m, LocalImage.open(local, false), state, src,
            new LazyStore.Options("golden", 4L << 20, 0, 10_000_000_000L));
        open.add(store);
        assertTrue(store.awaitDiskOnly(TimeUnit.SECONDS.toNanos(30)));
        assertEquals(pages - dataPages, store.fillStats().zeroPages());
        assertEquals((long) dataPages * page, store.bytesFetchedInBackground(), "only the data pages were fetched");
        final long allocated;
        try (LocalImage img = LocalImage.open(local, true, FileIo.NATIVE)) {
            allocated = img.allocatedBytes();
        }
        assertTrue(allocated >= (long) dataPages * page && allocated <= (long) dataPages * page + page,
            "the local file allocates its data pages only: " + allocated + " bytes for " + dataPages + " pages of " + page);
        assertArrayEquals(image, java.nio.file.Files.readAllBytes(local));
    }
}
