package io.lazyblk.blk;

import io.lazyblk.pagemap.Await;
import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
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
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A learned boot profile: its pages go out before any background page, at background priority on the wire, whatever
 * the fill rate; a guest's miss still goes out ahead of the rest of it; and the store counts what was fetched ahead,
 * what of that the guest read, and what it has not.
 */
class LazyStoreBootProfileTest {
    private static final int SIZE = 1 << 20;
    private static final int PAGE = 16 << 10;
    private static final int PAGES = SIZE / PAGE;
    private static final Path IMAGE = Path.of("/sim/disk.img");
    private static final Path STATE = PageStateFile.beside(IMAGE);

    private final SimulatedDisk disk = new SimulatedDisk(21);
    private final byte[] golden = new byte[SIZE];
    private final List<AutoCloseable> open = new ArrayList<>();

    LazyStoreBootProfileTest() {
        new Random(22).nextBytes(golden);
        Arrays.fill(golden, 52 * PAGE, 56 * PAGE, (byte) 0); // pages 52..55 hold only zeros (page 13 of 64 KiB pages)
    }

    @AfterEach
    void closeAll() throws Exception {
        for (int i = open.size() - 1; i >= 0; i--) {
            open.get(i).close();
        }
    }

    private MemorySource source(final int pageSize) {
        final MemorySource s = new MemorySource(golden, pageSize, 2);
        open.add(s);
        return s;
    }

    /** A store with {@code m}'s pages over a new local file; 1 MiB budget: 16 buffers of 16 KiB, 4 kept for misses. */
    private LazyStore store(final MemorySource source, final Manifest m, final long fillRate) throws Exception {
        if (!disk.exists(IMAGE)) {
            LocalImage.createReserved(IMAGE, SIZE, m.pageSize(), p -> !m.isZeroPage(p), disk);
        }
        final PageStateFile state = PageStateFile.openOrCreate(STATE, m.size(), m.pageSize(), m.digest(), disk);
        final LazyStore s = new LazyStore(m, LocalImage.open(IMAGE, false, disk), state, source,
            new LazyStore.Options("golden", 1 << 20, fillRate, 10_000_000_000L), source.bootProfile());
        open.add(s);
        return s;
    }

    private TestRequest request(final int capacity) {
        final TestRequest r = new TestRequest(capacity);
        open.add(r);
        return r;
    }

    @Test
    void shouldFetchTheProfilesPagesInItsOrderBeforeAnyBackgroundPageAtBackgroundPriority() throws Exception {
        final MemorySource src = source(PAGE);
        // More pages than the page buffers above the demand reserve: the profile goes out over several turns of the fill.
        final int[] profile = {40, 7, 33, 2, 61, 18, 9, 44, 27, 3, 58, 12, 0, 36, 21, 63, 5, 49, 30, 15};
        src.profile(profile);
        final LazyStore store = store(src, src.manifest(), 0); // flat out: the background fill is ready to go at once
        assertTrue(store.awaitDiskOnly(TimeUnit.SECONDS.toNanos(30)));
        final List<int[]> asked = new ArrayList<>(src.asked);
        for (int i = 0; i < profile.length; i++) {
            assertEquals(profile[i], asked.get(i)[0], "fetch " + i + " of " + src.askedPages());
            assertEquals(PageSource.BACKGROUND, asked.get(i)[1], "a profile page goes out at background priority");
        }
        assertEquals(profile.length, store.fillStats().profilePages());
        assertEquals(PAGES - 4, asked.stream().mapToInt(a -> a[2]).sum(),
            "every page once (but the zero pages): the fill skips the profile's pages");
    }

    @Test
    void shouldFetchTheWholeProfileAtAFillRateOfAByteASecond() throws Exception {
        final MemorySource src = source(PAGE);
        final int[] profile = new int[30];
        for (int i = 0; i < profile.length; i++) {
            profile[i] = i;
        }
        src.profile(profile);
        final LazyStore store = store(src, src.manifest(), 1);
        Await.until("all 30 profile pages here", Duration.ofSeconds(10),
            () -> Arrays.stream(profile).allMatch(p -> store.table.readable(p)));
        assertEquals(30L * PAGE, store.fillStats().profileAheadBytes());
        assertEquals(30L * PAGE, store.fillStats().profileWastedBytes(), "fetched ahead, not read yet");
        assertEquals(30, src.asked.size(), "and nothing else: the fill itself is held to a byte a second " + src.askedPages());
    }

    @Test
    void shouldSendAGuestMissAheadOfTheRestOfTheProfile() throws Exception {
        final MemorySource src = source(PAGE);
        final int[] profile = new int[40];
        for (int i = 0; i < profile.length; i++) {
            profile[i] = i;
        }
        src.profile(profile);
        src.hold(true); // fetches are accepted, not answered: the profile fills the buffers above the demand reserve
        final LazyStore store = store(src, src.manifest(), 1);
        final int ahead = store.buffers.count() - store.buffers.count() / 4; // the page buffers above the demand reserve
        Await.until("the profile's first fetches in flight", Duration.ofSeconds(10), () -> src.asked.size() == ahead);
        final TestRequest r = request(PAGE);
        final CompletableFuture<Integer> miss = CompletableFuture.supplyAsync(() -> r.run(store, IoRequest.READ, 60L * PAGE, 4096));
        Await.until("the guest's miss asked for", Duration.ofSeconds(10), () -> src.askedPages().contains(60));
        src.hold(false);
        assertEquals(0, miss.get(30, TimeUnit.SECONDS));
        assertArrayEquals(Arrays.copyOfRange(golden, 60 * PAGE, 60 * PAGE + 4096), r.bytes(4096));
        Await.until("the rest of the profile", Duration.ofSeconds(10), () -> src.asked.size() == 41);
        final List<int[]> asked = new ArrayList<>(src.asked);
        assertEquals(60, asked.get(ahead)[0], "the miss went out right after the profile's first " + ahead + ": " + src.askedPages());
        assertEquals(PageSource.DEMAND, asked.get(ahead)[1]);
        for (int i = 0; i < 40; i++) {
            assertEquals(i, asked.get(i < ahead ? i : i + 1)[0], "the profile in its order around the miss");
        }
    }

    @Test
    void shouldCountWhatWasFetchedAheadWhatTheGuestReadAndWhatItDidNot() throws Exception {
        final MemorySource src = source(PAGE);
        // Provider pages of 16 KiB, engine pages of 64 KiB (4 each): 9 and 8 are engine page 2, 1 and 3 are page 0, 12 is
        // page 3, 53 is page 13 (zeros: never fetched), 4 and 5 are page 1, 23 is page 5; out-of-range entries are dropped.
        src.profile(9, 8, 1, -1, 3, 12, 53, 5000, 4, 5, 23);
        final Manifest coarse = src.manifest().coarsened(4 * PAGE);
        src.hold(true);
        final LazyStore store = store(src, coarse, 1);
        assertEquals(5, store.fillStats().profilePages(), "engine pages 2, 0, 3, 1, 5");
        Await.until("the profile's fetches in flight", Duration.ofSeconds(10), () -> src.asked.size() == 5);
        assertEquals(List.of(8, 0, 12, 4, 20), src.askedPages(), "each engine page's first provider page, in the profile's order");
        // The guest reads page 5 before it is here: not fetched ahead.
        final TestRequest early = request(4096);
        final CompletableFuture<Integer> missed = CompletableFuture.supplyAsync(
            () -> early.run(store, IoRequest.READ, 5L * 4 * PAGE, 4096));
        Await.until("the guest's read of page 5 counted", Duration.ofSeconds(10), () -> store.profile.mark(5) == BootProfile.MISSED);
        assertTrue(!missed.isDone(), "the read waits for its page");
        src.hold(false);
        assertEquals(0, missed.get(30, TimeUnit.SECONDS));
        Await.until("the profile here", Duration.ofSeconds(10), () -> store.fillStats().profileAheadBytes() == 4L * 4 * PAGE);
        assertEquals(0, store.fillStats().profileUsedBytes());
        final TestRequest r = request(4 * PAGE);
        assertEquals(0, r.run(store, IoRequest.READ, 0, 4096), "the guest reads page 0");
        assertEquals(0, r.run(store, IoRequest.READ, 3L * 4 * PAGE + 512, 3 * PAGE), "and page 3");
        assertEquals(0, r.run(store, IoRequest.READ, 0, 8192), "page 0 again: counted once");
        assertEquals(2L * 4 * PAGE, store.fillStats().profileUsedBytes());
        assertEquals(2L * 4 * PAGE, store.fillStats().profileWastedBytes(), "pages 1 and 2: fetched ahead, never read");
        assertEquals(4L * 4 * PAGE, store.fillStats().profileAheadBytes(), "page 5 is not counted: the guest asked first");
    }
}
