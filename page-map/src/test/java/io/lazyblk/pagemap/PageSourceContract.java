package io.lazyblk.pagemap;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.function.BooleanSupplier;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * What every {@link PageSource} must do, whatever its transport: describe the image truthfully, deliver exact bytes
 * (short last page included) into the caller's memory, complete every accepted fetch exactly once, put demand fetches
 * before background ones, refuse rather than block when saturated, survive bad ranges, and complete everything
 * {@link PageSource#UNAVAILABLE} on close. A transport's test extends this and implements {@link #open}.
 *
 * <p>Assumes a source accepts at least 512 fetches at once and that {@link PageSource#connected()} turns false as
 * soon as {@link PageSource#close()} begins. Some tests stall the transport thread by blocking in a listener: that
 * is how they make "saturated" and "in flight at close" deterministic.
 */
public abstract class PageSourceContract {
    protected static final int PAGE = 16 << 10;
    /** 64 whole pages and a short one of three sectors. */
    protected static final int IMAGE_BYTES = 64 * PAGE + 1536;
    private static final long DEADLINE_SECONDS = 20;

    @TempDir
    protected Path dir;
    protected byte[] content;
    protected Path image;
    private final List<PageSource> sources = new ArrayList<>();
    private final List<Recorder> recorders = new ArrayList<>();
    private Arena arena;

    /** A source serving {@code image} (a raw file) cut into {@code pageSize} pages. */
    protected abstract PageSource open(Path image, int pageSize) throws Exception;

    /** Releases what {@link #open} set up besides the source (a server); runs after every source is closed. */
    protected void cleanUp() throws Exception {
    }

    @BeforeEach
    void createImage() throws Exception {
        content = new byte[IMAGE_BYTES];
        new Random(42).nextBytes(content);
        image = dir.resolve("contract.img");
        Files.write(image, content);
        arena = Arena.ofShared();
    }

    @AfterEach
    void closeSources() throws Exception {
        try {
            for (final PageSource s : sources) {
                s.close();
            }
            for (final Recorder r : recorders) {
                assertEquals(0, r.duplicates.get(), "a fetch completed more than once");
            }
        } finally {
            arena.close();
            cleanUp();
        }
    }

    private PageSource source() throws Exception {
        final PageSource s = open(image, PAGE);
        sources.add(s);
        return s;
    }

    private Recorder recorder(final int fetches) {
        final Recorder r = new Recorder(fetches);
        recorders.add(r);
        return r;
    }

    @Test
    void shouldDescribeTheImageInItsManifest() throws Exception {
        final Manifest m = source().manifest();
        assertEquals(IMAGE_BYTES, m.size());
        assertEquals(PAGE, m.pageSize());
        assertEquals(65, m.pageCount());
        for (int p = 0; p < m.pageCount(); p++) {
            final byte[] page = java.util.Arrays.copyOfRange(content, p * PAGE, Math.min((p + 1) * PAGE, IMAGE_BYTES));
            assertArrayEquals(MessageDigest.getInstance("SHA-256").digest(page), m.pageHash(p), "hash of page " + p);
        }
        assertArrayEquals(Manifest.of(content, PAGE).digest(), m.digest());
    }

    @Test
    void shouldFetchSinglePagesAndRangesWithTheirExactBytes() throws Exception {
        final PageSource s = source();
        final int[][] ranges = {{0, 1}, {7, 1}, {3, 5}, {20, 16}};
        final Recorder r = recorder(ranges.length);
        final MemorySegment[] dst = new MemorySegment[ranges.length];
        for (int i = 0; i < ranges.length; i++) {
            dst[i] = arena.allocate((long) ranges[i][1] * PAGE);
            assertTrue(s.fetch(ranges[i][0], ranges[i][1], dst[i], PageSource.DEMAND, i, r));
        }
        r.await(ranges.length);
        for (int i = 0; i < ranges.length; i++) {
            assertEquals(PageSource.OK, r.status.get(i));
            assertImageBytes(dst[i], ranges[i][0], ranges[i][1]);
        }
        assertEquals(0, s.inFlight());
    }

    @Test
    void shouldFetchTheShortLastPageWithoutWritingPastIt() throws Exception {
        final PageSource s = source();
        final int last = s.manifest().pageCount() - 1;
        final Recorder r = recorder(2);
        final MemorySegment alone = arena.allocate(PAGE).fill((byte) 0x5a);
        final MemorySegment withPrevious = arena.allocate(2 * PAGE).fill((byte) 0x5a);
        assertTrue(s.fetch(last, 1, alone, PageSource.DEMAND, 0, r));
        assertTrue(s.fetch(last - 1, 2, withPrevious, PageSource.BACKGROUND, 1, r));
        r.await(2);
        assertEquals(PageSource.OK, r.status.get(0));
        assertEquals(PageSource.OK, r.status.get(1));
        assertImageBytes(alone, last, 1);
        assertImageBytes(withPrevious, last - 1, 2);
        assertUntouchedFrom(alone, 1536);
        assertUntouchedFrom(withPrevious, PAGE + 1536);
    }

    @Test
    void shouldCompleteManyConcurrentFetchesFromSeveralThreadsExactlyOnceWithTheirBytes() throws Exception {
        final PageSource s = source();
        final int threads = 4;
        final int perThread = 50;
        final int n = threads * perThread;
        final Recorder r = recorder(n);
        final int[] first = new int[n];
        final int[] count = new int[n];
        final MemorySegment[] dst = new MemorySegment[n];
        final Random random = new Random(7);
        for (int i = 0; i < n; i++) {
            count[i] = 1 + random.nextInt(4);
            first[i] = random.nextInt(s.manifest().pageCount() - count[i] + 1);
            dst[i] = arena.allocate((long) count[i] * PAGE);
        }
        final CountDownLatch start = new CountDownLatch(1);
        final AtomicInteger refused = new AtomicInteger();
        final List<Thread> workers = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            final int base = t * perThread;
            workers.add(Thread.ofPlatform().start(() -> {
                awaitLatch(start);
                for (int i = base; i < base + perThread; i++) {
                    if (!s.fetch(first[i], count[i], dst[i], i % 3 == 0 ? PageSource.DEMAND : PageSource.BACKGROUND, i, r)) {
                        refused.incrementAndGet();
                    }
                }
            }));
        }
        start.countDown();
        for (final Thread w : workers) {
            w.join();
        }
        assertEquals(0, refused.get(), "a source accepts 200 fetches at once");
        r.await(n);
        for (int i = 0; i < n; i++) {
            assertEquals(1, r.calls.get(i), "completions of fetch " + i);
            assertEquals(PageSource.OK, r.status.get(i), "status of fetch " + i);
            assertImageBytes(dst[i], first[i], count[i]);
        }
        assertEquals(0, s.inFlight());
    }

    @Test
    void shouldServeADemandFetchBeforeAFloodOfEarlierBackgroundFetches() throws Exception {
        final PageSource s = source();
        final int background = 500;
        final Recorder r = recorder(background + 1);
        r.stallFirstCompletion(); // the transport stalls while the flood and then the demand fetch queue up
        final MemorySegment bg = arena.allocate((long) background * PAGE);
        final int pages = s.manifest().pageCount() - 1; // whole pages only, so every slot is PAGE bytes
        for (int i = 0; i < background; i++) {
            assertTrue(s.fetch(i % pages, 1, bg.asSlice((long) i * PAGE, PAGE), PageSource.BACKGROUND, i, r));
        }
        final MemorySegment demand = arena.allocate(PAGE);
        assertTrue(s.fetch(33, 1, demand, PageSource.DEMAND, background, r));
        r.releaseStall();
        r.await(background + 1);
        final int demandPosition = r.order.get(background);
        assertTrue(demandPosition < background / 2,
            "the demand fetch completed as number " + demandPosition + " of " + (background + 1) + ": starved by background fetches");
        assertEquals(PageSource.OK, r.status.get(background));
        assertImageBytes(demand, 33, 1);
        for (int i = 0; i < background; i++) {
            assertEquals(PageSource.OK, r.status.get(i));
        }
    }

    @Test
    void shouldRefuseRatherThanBlockWhenSaturated() throws Exception {
        final PageSource s = source();
        final int maxTries = 100_000;
        final Recorder r = recorder(maxTries);
        r.stallFirstCompletion(); // nothing completes past the first: slots run out
        // One slot per page: fetches of the same page share it (and write the same bytes), as a source that checks
        // what lands (a chain) may rely on; fetches of different pages never share a destination in real use.
        final MemorySegment all = arena.allocate(64L * PAGE);
        int accepted = 0;
        long slowestNanos = 0;
        boolean refused = false;
        for (int i = 0; i < maxTries && !refused; i++) {
            final MemorySegment dst = all.asSlice((long) (i % 64) * PAGE, PAGE);
            final long t0 = System.nanoTime();
            final boolean ok = s.fetch(i % 64, 1, dst, PageSource.BACKGROUND, i, r);
            slowestNanos = Math.max(slowestNanos, System.nanoTime() - t0);
            if (ok) {
                accepted++;
            } else {
                refused = true;
            }
        }
        assertTrue(refused, "fetch never returned false with the transport stalled and " + accepted + " fetches accepted");
        assertTrue(slowestNanos < TimeUnit.MILLISECONDS.toNanos(500), "a fetch call took " + slowestNanos / 1000 + " µs: it blocked");
        // A completion frees its slot before its listener runs, so each stalled one may have: one per transport thread.
        assertTrue(s.inFlight() >= accepted - r.stalledCompletions(), "inFlight " + s.inFlight() + " of " + accepted
            + " accepted, " + r.stalledCompletions() + " completions stalled");
        r.releaseStall();
        r.await(accepted);
        for (int i = 0; i < accepted; i++) {
            assertEquals(PageSource.OK, r.status.get(i), "status of fetch " + i);
        }
        assertEquals(0, s.inFlight());
        assertTrue(s.fetch(0, 1, all.asSlice(0, PAGE), PageSource.DEMAND, accepted, r), "slots come back once fetches complete");
        r.await(1);
    }

    @Test
    void shouldFetchAsManyPagesAsItAdvertisesInOneFetchAndFailMore() throws Exception {
        final PageSource s = source();
        final int pages = s.manifest().pageCount();
        final int max = s.maxPagesPerFetch();
        assertTrue(max >= 1, "maxPagesPerFetch " + max);
        final int n = Math.min(max, pages);
        final Recorder r = recorder(2);
        final MemorySegment dst = arena.allocate((long) (n + 1) * PAGE);
        assertTrue(s.fetch(pages - n, n, dst, PageSource.DEMAND, 0, r));
        r.await(1);
        assertEquals(PageSource.OK, r.status.get(0), "a fetch of " + n + " pages (the advertised maximum is " + max + ")");
        assertImageBytes(dst, pages - n, n);
        if (max < pages) {
            if (s.fetch(0, max + 1, dst, PageSource.DEMAND, 1, r)) {
                r.await(1); // one more completion (await counts from the last one awaited)
                assertEquals(PageSource.FAILED, r.status.get(1), "a fetch longer than maxPagesPerFetch");
            }
        }
    }

    @Test
    void shouldFailOutOfRangeFetchesWithoutHarmingTheSource() throws Exception {
        final PageSource s = source();
        final int pages = s.manifest().pageCount();
        final Recorder r = recorder(5);
        final MemorySegment dst = arena.allocate(4L * PAGE);
        final int[][] bad = {{pages, 1}, {pages - 1, 2}, {-1, 1}, {0, 0}};
        int accepted = 0;
        for (int i = 0; i < bad.length; i++) {
            if (s.fetch(bad[i][0], bad[i][1], dst, PageSource.DEMAND, i, r)) {
                accepted++;
            }
        }
        r.await(accepted);
        for (int i = 0; i < bad.length; i++) {
            assertTrue(r.calls.get(i) == 0 || r.status.get(i) == PageSource.FAILED, "out-of-range fetch " + i + " did not fail");
        }
        assertTrue(s.connected());
        assertTrue(s.fetch(pages - 2, 2, dst, PageSource.DEMAND, 4, r));
        r.await(1);
        assertEquals(PageSource.OK, r.status.get(4));
        assertImageBytes(dst, pages - 2, 2);
    }

    @Test
    void shouldCompleteEveryAcceptedFetchUnavailableOnClose() throws Exception {
        final PageSource s = source();
        final int n = 300;
        final Recorder r = recorder(n);
        r.stallFirstCompletion();
        final MemorySegment[] dst = new MemorySegment[n];
        for (int i = 0; i < n; i++) {
            dst[i] = arena.allocate(4L * PAGE);
            assertTrue(s.fetch((i * 4) % 60, 4, dst[i], PageSource.BACKGROUND, i, r));
        }
        r.awaitFirstCompletion();
        final Thread closer = Thread.ofPlatform().start(s::close);
        awaitCondition(() -> !s.connected(), "connected() false once close() has begun");
        r.releaseStall();
        closer.join(TimeUnit.SECONDS.toMillis(DEADLINE_SECONDS));
        assertFalse(closer.isAlive(), "close() did not return");
        assertEquals(n, r.completed.get(), "close() returned before every accepted fetch completed");
        int unavailable = 0;
        for (int i = 0; i < n; i++) {
            assertEquals(1, r.calls.get(i));
            if (r.status.get(i) == PageSource.OK) {
                assertImageBytes(dst[i], (i * 4) % 60, 4);
            } else {
                assertEquals(PageSource.UNAVAILABLE, r.status.get(i), "status of fetch " + i);
                unavailable++;
            }
        }
        assertTrue(unavailable > 0, "fetches queued at close completed UNAVAILABLE");
        assertFalse(s.fetch(0, 1, dst[0], PageSource.DEMAND, 0, r), "a closed source accepts nothing");
        assertEquals(0, s.inFlight());
    }

    @Test
    void shouldCompleteTheRestUnavailableWhenAListenerClosesTheSource() throws Exception {
        final PageSource s = source();
        final int n = 100;
        final Recorder r = recorder(n);
        r.stallFirstCompletion(); // until every fetch is accepted
        r.onFirst = s::close; // then close() on the transport thread itself, from inside a completion
        final MemorySegment dst = arena.allocate(PAGE);
        for (int i = 0; i < n; i++) {
            assertTrue(s.fetch(i % 64, 1, dst, PageSource.BACKGROUND, i, r));
        }
        r.releaseStall();
        r.await(n);
        int unavailable = 0;
        for (int i = 0; i < n; i++) {
            unavailable += r.status.get(i) == PageSource.UNAVAILABLE ? 1 : 0;
        }
        assertTrue(unavailable > 0);
        assertFalse(s.connected());
    }

    protected final void assertImageBytes(final MemorySegment dst, final int firstPage, final int count) {
        final long start = (long) firstPage * PAGE;
        final long length = Math.min((long) count * PAGE, IMAGE_BYTES - start);
        final long at = MemorySegment.mismatch(dst, 0, length, MemorySegment.ofArray(content), start, start + length);
        if (at != -1) {
            fail("pages [" + firstPage + ", " + (firstPage + count) + "): wrong byte at offset " + at);
        }
    }

    private static void assertUntouchedFrom(final MemorySegment dst, final long from) {
        for (long i = from; i < dst.byteSize(); i++) {
            if (dst.get(java.lang.foreign.ValueLayout.JAVA_BYTE, i) != 0x5a) {
                fail("byte " + i + " past the image's end was written");
            }
        }
    }

    /** Waits for a condition that no callback signals, spinning politely, up to the deadline. */
    protected static void awaitCondition(final BooleanSupplier condition, final String what) throws Exception {
        Await.until(what, java.time.Duration.ofSeconds(DEADLINE_SECONDS), condition::getAsBoolean);
    }

    private static void awaitLatch(final CountDownLatch latch) {
        try {
            if (!latch.await(DEADLINE_SECONDS, TimeUnit.SECONDS)) {
                throw new AssertionError("latch not released in time");
            }
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError(e);
        }
    }

    /** Records completions per tag (0 .. capacity-1): how often, with what status, in which order. */
    protected static final class Recorder implements PageSource.Listener {
        final AtomicIntegerArray calls;
        final AtomicIntegerArray status;
        final AtomicIntegerArray order;
        final AtomicInteger completed = new AtomicInteger();
        final AtomicInteger duplicates = new AtomicInteger();
        private final Semaphore done = new Semaphore(0);
        private final CountDownLatch first = new CountDownLatch(1);
        private volatile CountDownLatch stall;
        /** The test's own thread: a synchronous source completes a demand fetch on it, which must never stall. */
        private volatile Thread caller;
        /** Completions blocked in a stall: one per transport thread (a chain of sources has several). */
        private final AtomicInteger stalled = new AtomicInteger();
        volatile Runnable onFirst;

        Recorder(final int capacity) {
            calls = new AtomicIntegerArray(capacity);
            status = new AtomicIntegerArray(capacity);
            order = new AtomicIntegerArray(capacity);
        }

        /**
         * Every transport thread blocks at its first completion until {@link #releaseStall()}, so nothing completes
         * past one completion per transport thread. (A demand fetch a source completes on the caller's thread, as a
         * same-host mapping may, passes: blocking there would block the test.)
         */
        void stallFirstCompletion() {
            caller = Thread.currentThread();
            stall = new CountDownLatch(1);
        }

        /** Completions that blocked in the stall (or are blocked now): at most one per transport thread. */
        int stalledCompletions() {
            return stalled.get();
        }

        void releaseStall() {
            stall.countDown();
        }

        void awaitFirstCompletion() {
            awaitLatch(first);
        }

        @Override
        public void onFetched(final long tag, final int firstPage, final int count, final int st) {
            final int i = (int) tag;
            final int seq = completed.getAndIncrement();
            if (calls.incrementAndGet(i) > 1) {
                duplicates.incrementAndGet();
            }
            order.set(i, seq);
            status.set(i, st);
            final CountDownLatch s = stall;
            final boolean stallHere = s != null && s.getCount() > 0 && Thread.currentThread() != caller;
            if (stallHere) {
                stalled.incrementAndGet(); // before the count-down: whoever awaits the first stall sees it counted
            }
            if (seq == 0 || stallHere) {
                first.countDown();
            }
            if (stallHere) {
                awaitLatch(s);
            }
            if (seq == 0) {
                final Runnable r = onFirst;
                if (r != null) {
                    r.run();
                }
            }
            done.release();
        }

        /** Waits for {@code n} more completions. */
        void await(final int n) throws InterruptedException {
            assertTrue(done.tryAcquire(n, DEADLINE_SECONDS, TimeUnit.SECONDS), "fewer than " + n + " completions in time");
        }
    }
}
