package io.lazyblk.tools;

import io.lazyblk.blk.LazyStore;
import io.lazyblk.pagemap.Await;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.pull.token.TokenSource;
import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.BlkResponse;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The engine in lazy mode against a real image provider over TCP on loopback, driven by the front end. */
class LazyEngineTest {
    private static final int SIZE = 16 << 20;
    private static final int PAGE = 64 << 10;
    private static final byte[] SECRET = "0123456789abcdef0123456789abcdef".getBytes();

    @TempDir
    Path dir;
    private byte[] golden;
    private Path goldenFile;
    private ImageServer server;

    @BeforeEach
    void startProvider() throws Exception {
        golden = new byte[SIZE];
        new Random(42).nextBytes(golden);
        goldenFile = dir.resolve("golden.raw");
        Files.write(goldenFile, golden);
        server = ImageServer.start(new InetSocketAddress("127.0.0.1", 0), Map.of("golden", goldenFile), SECRET, PAGE,
            new ManifestBuilder(dir.resolve("manifests")));
    }

    @AfterEach
    void stopProvider() {
        server.close();
    }

    private Engine.LazySource source(final long fillRate) {
        return new Engine.LazySource(new InetSocketAddress("127.0.0.1", server.port()), "golden",
            AccessToken.mint(SECRET, "golden", Instant.now().plusSeconds(600)), 8L << 20, fillRate, Duration.ofSeconds(5));
    }

    private static Map<String, String> status(final Path sock) throws java.io.IOException {
        return StatusCommand.read(StatusServer.controlSocket(sock));
    }

    private static byte[] range(final byte[] a, final int from, final int len) {
        return Arrays.copyOfRange(a, from, from + len);
    }

    @Test
    void shouldOfferDirtyLoggingSoQemuMigratesAVmWhoseDiskIsStillFilling() throws Exception {
        final Path local = dir.resolve("local.img");
        final Path sock = dir.resolve("lazy.sock");
        try (Engine engine = Engine.startLazy(Engine.Options.file(sock, local), source(1024));
             VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(32L << 20))) {
            assertNotNull(engine.lazyStore());
            assertTrue(io.lazyblk.vhost.proto.Protocol.has(fe.offeredFeatures(), io.lazyblk.vhost.proto.Protocol.F_LOG_ALL),
                "VHOST_F_LOG_ALL: the page map's state file moves with the image (EngineHandoverTest)");
            assertTrue(io.lazyblk.vhost.proto.Protocol.has(fe.offeredProtocolFeatures(), io.lazyblk.vhost.proto.Protocol.PF_LOG_SHMFD));
        }
    }

    @Test
    void shouldServeDemandReadsMergeGuestWritesFillInTheBackgroundAndSwitchToDiskOnly() throws Exception {
        final Path local = dir.resolve("local.img");
        final Path sock = dir.resolve("lazy.sock");
        final byte[] expected = golden.clone();
        try (Engine engine = Engine.startLazy(Engine.Options.file(sock, local), source(4L << 20));
             VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(32L << 20))) {
            final LazyStore store = engine.lazyStore();
            assertNotNull(store);
            final Map<String, String> early = StatusCommand.read(StatusServer.controlSocket(sock));
            assertEquals("lazy", early.get("mode"));
            assertEquals(Integer.toString(SIZE / PAGE), early.get("pages_total"));
            final BlkClient blk = new BlkClient(fe, 0);
            // Demand reads of pages the 4 MiB/s background fill has not reached yet.
            final int far = SIZE - 3 * PAGE + 4096;
            BlkResponse r = blk.read(far / 512, 8192);
            assertTrue(r.ok());
            assertArrayEquals(range(golden, far, 8192), r.data());
            // A partial write to an absent page is served at once and merges with the fetched bytes.
            final int partial = SIZE - 6 * PAGE + 1024;
            final byte[] w = new byte[1024];
            Arrays.fill(w, (byte) 0x5a);
            assertEquals(0, blk.write(partial / 512, w));
            System.arraycopy(w, 0, expected, partial, w.length);
            r = blk.read((SIZE - 6 * PAGE) / 512, PAGE);
            assertTrue(r.ok());
            assertArrayEquals(range(expected, SIZE - 6 * PAGE, PAGE), r.data());
            // A whole-page write to an absent page needs no fetch at all.
            final int whole = SIZE - 9 * PAGE;
            final byte[] page = new byte[PAGE];
            Arrays.fill(page, (byte) 0x77);
            assertEquals(0, blk.write(whole / 512, page));
            System.arraycopy(page, 0, expected, whole, PAGE);
            assertEquals(0, blk.flush());
            r = blk.read(whole / 512, PAGE);
            assertArrayEquals(page, r.data());

            assertTrue(store.awaitDiskOnly(TimeUnit.SECONDS.toNanos(30)), "the fill should finish: " + store.localPages()
                + " of " + store.pageCount() + " pages local");
            // After the switch: reads straight from disk, and the local file is the image plus the guest's writes.
            r = blk.read(0, 65536);
            assertArrayEquals(range(expected, 0, 65536), r.data());
            assertTrue(store.bytesFetchedOnDemand() > 0);
            final Map<String, String> after = StatusCommand.read(StatusServer.controlSocket(sock));
            assertEquals("disk-only", after.get("mode"));
            assertEquals(after.get("pages_total"), after.get("pages_local"));
        }
        assertArrayEquals(expected, Files.readAllBytes(local));

        // A restart finds the fill complete and never contacts the provider (it is gone).
        final Engine.LazySource gone = source(0);
        server.close();
        try (Engine engine = Engine.startLazy(Engine.Options.file(sock, local), gone);
             VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(32L << 20))) {
            assertNull(engine.lazyStore());
            final BlkResponse r = new BlkClient(fe, 0).read((SIZE - 9 * PAGE) / 512, PAGE);
            assertTrue(r.ok());
            assertArrayEquals(range(expected, SIZE - 9 * PAGE, PAGE), r.data());
        }
        // ...and refuses to serve it as a copy of another image.
        final Engine.LazySource other = new Engine.LazySource(gone.provider(), "other", gone.token(), 8L << 20, 0, Duration.ofSeconds(5));
        final Exception refused = org.junit.jupiter.api.Assertions.assertThrows(java.io.IOException.class,
            () -> Engine.startLazy(Engine.Options.file(sock, local), other));
        assertTrue(refused.getMessage().contains("complete copy of image golden, not of other"), refused.getMessage());
    }

    /**
     * Misses on two queues at once, over tcp:// and over shm:// (whose fetches complete on the requesting thread): a
     * read is answered from the fetched page before that page reaches the local file, so check what the guest sees,
     * reads that cover sectors the guest wrote before (its bytes, never the image's), and that every answered page
     * still lands in the local file.
     */
    @ParameterizedTest
    @ValueSource(strings = {"tcp", "shm"})
    void shouldAnswerMissesFromFetchedPagesOnSeveralQueuesAndStillWriteEveryPageThrough(final String scheme) throws Exception {
        final Path local = dir.resolve("local.img");
        final Path sock = dir.resolve("lazy.sock");
        final Path cache = dir.resolve("cache.sock");
        final String token = AccessToken.mint(SECRET, "golden", Instant.now().plusSeconds(600));
        final byte[] expected = golden.clone();
        try (ImageServer host = ImageServer.start(null, cache, java.util.List.of(io.lazyblk.pull.provider.ImageExport.of("golden",
                 goldenFile, PAGE, new ManifestBuilder(dir.resolve("manifests")), ManifestBuilder.Progress.NONE)), SECRET);
             Engine engine = Engine.startLazy(Engine.Options.file(sock, local).withQueues(2), source(4L << 20).withSources(
                 java.util.List.of(scheme.equals("tcp") ? SourceUri.tcp(new InetSocketAddress("127.0.0.1", server.port()), "golden")
                     : SourceUri.shm(cache, "golden")), java.util.List.of(TokenSource.fixed(token))));
             VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(32L << 20),
                 io.lazyblk.tools.frontend.FrontendConfig.defaults().withQueues(2))) {
            final LazyStore store = engine.lazyStore();
            final int pages = SIZE / PAGE;
            final java.util.concurrent.ConcurrentLinkedQueue<String> wrong = new java.util.concurrent.ConcurrentLinkedQueue<>();
            final Thread[] guests = new Thread[2];
            for (int q = 0; q < 2; q++) {
                final int queue = q;
                final BlkClient blk = new BlkClient(fe, queue);
                guests[q] = Thread.ofPlatform().start(() -> {
                    final Random rnd = new Random(queue);
                    try {
                        // Queue q takes the pages p with p % 2 == q: never the same page as the other queue.
                        for (int p = queue; p < pages; p += 2) {
                            final int base = p * PAGE;
                            final int at = base + rnd.nextInt(PAGE / 4096) * 4096;
                            if (p % 8 < 2) {
                                // First a guest write into the absent page, then a read across it and the image's bytes.
                                final byte[] w = new byte[1024];
                                rnd.nextBytes(w);
                                final int wat = base + 8192;
                                if (blk.write(wat / 512, w) != 0) {
                                    wrong.add("write to page " + p + " failed");
                                }
                                System.arraycopy(w, 0, expected, wat, w.length);
                                if (p % 8 == 1) {
                                    // The miss is a read beside the written sectors (answerable from the fetched page)...
                                    final BlkResponse beside = blk.read((base + 32768) / 512, 4096);
                                    if (!beside.ok() || !Arrays.equals(range(golden, base + 32768, 4096), beside.data())) {
                                        wrong.add("read beside the guest's write in page " + p);
                                    }
                                }
                                // ...or (p % 8 == 0) this read across them, which needs the page merged around them.
                                final BlkResponse r = blk.read(base / 512, 16384);
                                if (!r.ok() || !Arrays.equals(range(expected, base, 16384), r.data())) {
                                    wrong.add("read across the guest's write in page " + p);
                                }
                            } else {
                                final BlkResponse r = blk.read(at / 512, 4096);
                                if (!r.ok() || !Arrays.equals(range(golden, at, 4096), r.data())) {
                                    wrong.add("4 KiB read at " + at + " of page " + p);
                                }
                            }
                        }
                    } catch (final Exception e) {
                        wrong.add("queue " + queue + ": " + e);
                    }
                });
            }
            for (final Thread t : guests) {
                t.join(TimeUnit.SECONDS.toMillis(60));
                assertTrue(!t.isAlive(), "a queue's requests should all complete within 60 s");
            }
            assertTrue(wrong.isEmpty(), "wrong answers: " + wrong);
            assertTrue(store.bytesFetchedOnDemand() >= (long) pages / 2 * PAGE,
                "most pages should have been misses: " + store.bytesFetchedOnDemand() + " bytes on demand");
            assertEquals(0, new BlkClient(fe, 0).flush());
            assertTrue(store.awaitDiskOnly(TimeUnit.SECONDS.toNanos(30)), "every page should be local: " + store.localPages()
                + " of " + pages);
        }
        assertArrayEquals(expected, Files.readAllBytes(local));
    }

    /**
     * A guest reading absent pages in 4 KiB pieces, front to back: the first piece of a page is a miss, the others
     * come while the page's local write may still be put off, and are answered from the fetched bytes. Every piece
     * must hold the image's bytes, each page must be fetched once, and every page must still reach the local file.
     */
    @Test
    void shouldServeSmallSequentialReadsOfFreshPagesAndFetchAndWriteEachPageOnce() throws Exception {
        final Path local = dir.resolve("local.img");
        final Path sock = dir.resolve("lazy.sock");
        final int pages = 32;
        try (Engine engine = Engine.startLazy(Engine.Options.file(sock, local), source(1024)); // 1 KiB/s: no background fill
             VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(32L << 20))) {
            final LazyStore store = engine.lazyStore();
            final BlkClient blk = new BlkClient(fe, 0);
            for (int at = 0; at < pages * PAGE; at += 4096) {
                final BlkResponse r = blk.read(at / 512, 4096);
                assertTrue(r.ok(), "read at " + at);
                assertArrayEquals(range(golden, at, 4096), r.data(), "bytes of the read at " + at);
            }
            assertEquals((long) pages * PAGE, store.bytesFetchedOnDemand() + store.bytesFetchedInBackground(), "each page fetched once");
            Await.until("the pages read local", Duration.ofSeconds(30), () -> store.localPages() >= pages);
            assertEquals(0, blk.flush());
        }
        assertArrayEquals(range(golden, 0, pages * PAGE), range(Files.readAllBytes(local), 0, pages * PAGE));
    }

    /**
     * Bursts of reads on one queue, half in local pages (completed and published by the queue's own thread) and half
     * misses (answered and published by the thread that fetched their pages): both publish in the one used ring, so
     * every read must complete once, with its bytes, burst after burst.
     */
    @Test
    void shouldCompleteEveryReadOfBurstsMixingLocalPagesAndMissesOnOneQueue() throws Exception {
        final Path local = dir.resolve("local.img");
        final Path sock = dir.resolve("lazy.sock");
        final int perBurst = 16;
        try (Engine engine = Engine.startLazy(Engine.Options.file(sock, local), source(1024)); // 1 KiB/s: no background fill
             VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(32L << 20))) {
            final LazyStore store = engine.lazyStore();
            final BlkClient blk = new BlkClient(fe, 0);
            for (int burst = 0; burst < SIZE / PAGE / (2 * perBurst); burst++) {
                final int hits = burst * 2 * perBurst;
                final int misses = hits + perBurst;
                for (int p = hits; p < misses; p++) {
                    assertTrue(blk.read((long) p * PAGE / 512, 512).ok(), "read to bring page " + p + " in");
                }
                final int wanted = misses;
                Await.until("pages " + hits + ".." + (misses - 1) + " local", Duration.ofSeconds(30), () -> store.localPages() >= wanted);
                final long[] offsets = new long[2 * perBurst];
                final int[] lengths = new int[2 * perBurst];
                for (int i = 0; i < offsets.length; i++) {
                    final int page = i % 2 == 0 ? hits + i / 2 : misses + i / 2;
                    offsets[i] = (long) page * PAGE + (long) (i * 7 % 16) * 4096;
                    lengths[i] = 4096;
                }
                final ReadBurst reads = new ReadBurst(fe, 0, offsets, lengths);
                reads.submitAll();
                reads.awaitAll(Duration.ofSeconds(30));
                for (int i = 0; i < offsets.length; i++) {
                    assertEquals(0, reads.status(i), "status of read " + i + " of burst " + burst);
                    assertArrayEquals(range(golden, (int) offsets[i], 4096), reads.data(i), "bytes of read " + i + " of burst " + burst);
                }
            }
            assertEquals(SIZE, store.bytesFetchedOnDemand() + store.bytesFetchedInBackground(), "every page fetched once");
        }
    }

    @Test
    void shouldResumeWithoutRefetchingLocalPagesAndKeepFlushedGuestWrites() throws Exception {
        final Path local = dir.resolve("resume.img");
        final Path sock = dir.resolve("resume.sock");
        final int written = 100 * PAGE + 512;
        final byte[] w = new byte[512];
        Arrays.fill(w, (byte) 0x33);
        int localBefore;
        try (Engine engine = Engine.startLazy(Engine.Options.file(sock, local), source(2L << 20));
             VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(32L << 20))) {
            final BlkClient blk = new BlkClient(fe, 0);
            assertEquals(0, blk.write(written / 512, w));
            assertEquals(0, blk.flush());
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (engine.lazyStore().localPages() < 16 && System.nanoTime() < deadline) {
                assertTrue(blk.read(0, 4096).ok()); // also waits a little, on real I/O
            }
            localBefore = engine.lazyStore().localPages();
            assertTrue(localBefore >= 16 && localBefore < SIZE / PAGE, "stopped mid-fill with " + localBefore + " local pages");
        }
        final long bytesBefore = server.stats().bytes(); // bytes, not requests: the fill asks for runs of pages
        try (Engine engine = Engine.startLazy(Engine.Options.file(sock, local), source(0));
             VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(32L << 20))) {
            final LazyStore store = engine.lazyStore();
            assertTrue(store.localPages() >= localBefore, "pages local before the stop are still local");
            assertTrue(store.awaitDiskOnly(TimeUnit.SECONDS.toNanos(30)));
            final long fetched = (server.stats().bytes() - bytesBefore) / PAGE;
            assertTrue(fetched <= SIZE / PAGE - localBefore, "fetched " + fetched + " pages; only "
                + (SIZE / PAGE - localBefore) + " were missing");
            final BlkResponse r = new BlkClient(fe, 0).read((100 * PAGE) / 512, PAGE);
            final byte[] expected = range(golden, 100 * PAGE, PAGE);
            System.arraycopy(w, 0, expected, 512, 512);
            assertArrayEquals(expected, r.data(), "the flushed guest write survives the restart and the refetch of its page");
        }
    }

    private Engine.LazySource source(final long fillRate, final int pageSize) {
        final Engine.LazySource s = source(fillRate);
        return new Engine.LazySource(s.provider(), s.image(), s.token(), s.memoryBudget(), s.fillRateBytesPerSecond(),
            s.demandTimeout(), pageSize);
    }

    @Test
    void shouldFillInLargerPagesThanTheProvidersVerifyEachPartAndResumeInThem() throws Exception {
        final int big = 4 * PAGE;
        final Path local = dir.resolve("big.img");
        final Path sock = dir.resolve("big.sock");
        // Provider page 37 (inside engine page 9) arrives corrupted every time: requests on page 9 get IOERR.
        server.corruptServedPageForTesting("golden", 37);
        final byte[] expected = golden.clone();
        final int written = 20 * big + 3 * PAGE + 512; // in the last provider page of engine page 20
        final byte[] w = new byte[1024];
        Arrays.fill(w, (byte) 0x6b);
        System.arraycopy(w, 0, expected, written, w.length);
        try (Engine engine = Engine.startLazy(Engine.Options.file(sock, local), source(1L << 20, big));
             VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(32L << 20))) {
            final LazyStore store = engine.lazyStore();
            assertEquals(big, store.pageSize());
            assertEquals(SIZE / big, store.pageCount());
            assertEquals(Integer.toString(big), StatusCommand.read(StatusServer.controlSocket(sock)).get("page_size"));
            final BlkClient blk = new BlkClient(fe, 0);
            // A read spanning two absent big pages (fetched together), with the exact bytes.
            final int at = SIZE - big - 4096;
            BlkResponse r = blk.read(at / 512, 8192);
            assertTrue(r.ok());
            assertArrayEquals(range(golden, at, 8192), r.data());
            assertEquals(0, blk.write(written / 512, w));
            assertEquals(0, blk.flush());
            r = blk.read(20 * big / 512, big);
            assertArrayEquals(range(expected, 20 * big, big), r.data(), "a partial write merged into a 256 KiB page");
            // Page 9 holds provider pages 36..39, and 37 is always corrupt: a read of 37 gets IOERR, never its bytes; a
            // read of 36 is answered once 36 itself passed its hash (but page 9 never becomes local).
            r = blk.read((9 * big + PAGE) / 512, 4096);
            assertTrue(!r.ok(), "a read of the provider page that is always corrupt: IOERR, never its bytes");
            r = blk.read(9 * big / 512, 4096);
            assertTrue(r.ok(), "a read of a provider page of the same big page that passes its hash");
            assertArrayEquals(range(golden, 9 * big, 4096), r.data());
            assertTrue(store.localPages() < store.pageCount() && !java.util.Arrays.equals(range(golden, 9 * big + PAGE, PAGE),
                range(Files.readAllBytes(local), 9 * big + PAGE, PAGE)), "the corrupt page never reached the local file");
        }
        // Restarted without --page-size, it resumes in 256 KiB pages (its state file says so)...
        final Exception e = org.junit.jupiter.api.Assertions.assertThrows(java.io.IOException.class,
            () -> Engine.startLazy(Engine.Options.file(sock, local), source(0, PAGE)));
        assertTrue(e.getMessage().contains("--page-size " + big), "...and a different explicit page size is refused: " + e.getMessage());
        server.close();
        server = ImageServer.start(new InetSocketAddress("127.0.0.1", 0), Map.of("golden", goldenFile), SECRET, PAGE,
            new ManifestBuilder(dir.resolve("manifests"))); // a healthy provider
        try (Engine engine = Engine.startLazy(Engine.Options.file(sock, local), source(0));
             VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(32L << 20))) {
            final LazyStore store = engine.lazyStore();
            assertEquals(big, store.pageSize());
            assertTrue(store.awaitDiskOnly(TimeUnit.SECONDS.toNanos(30)));
            final BlkResponse r = new BlkClient(fe, 0).read(9 * big / 512, 4096);
            assertTrue(r.ok());
            assertArrayEquals(range(golden, 9 * big, 4096), r.data());
        }
        assertArrayEquals(expected, Files.readAllBytes(local), "the image plus the flushed guest write");
    }

    @Test
    void shouldKeepTheFillsPageCacheWithinTheMemoryBudget() throws Exception {
        org.junit.jupiter.api.Assumptions.assumeFalse("tmpfs".equals(Files.getFileStore(dir).type()),
            "the page cache is the storage on tmpfs: nothing can be dropped there");
        final Path local = dir.resolve("budget.img");
        final Path sock = dir.resolve("budget.sock");
        final long budget = 2L << 20; // half of it (16 pages) for background-filled pages left in the page cache
        final Engine.LazySource s = source(0);
        final Engine.LazySource small = new Engine.LazySource(s.provider(), s.image(), s.token(), budget, 0, s.demandTimeout());
        final int hot = 200 * PAGE; // read by the guest before the fill gets there: never dropped by the engine
        try (Engine engine = Engine.startLazy(Engine.Options.file(sock, local), small);
             VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(32L << 20))) {
            final BlkResponse r = new BlkClient(fe, 0).read(hot / 512, PAGE);
            assertArrayEquals(range(golden, hot, PAGE), r.data());
            final LazyStore store = engine.lazyStore();
            assertTrue(store.awaitDiskOnly(TimeUnit.SECONDS.toNanos(30)));
            final long cached = store.cachedBytes();
            final Map<String, String> status = StatusCommand.read(StatusServer.controlSocket(sock));
            assertEquals(Long.toString(budget), status.get("memory_budget_bytes"));
            // The whole 16 MiB went through the page cache; what stays is about half the budget of background pages,
            // the pages written after the last drop, and the page the guest read: far less than the image.
            assertTrue(cached >= 0 && cached <= 4L << 20, "after filling " + (SIZE >> 20) + " MiB with a budget of 2 MiB, "
                + cached + " bytes of the local file are still cached");
        }
        assertArrayEquals(golden, Files.readAllBytes(local), "dropped from the cache, still on disk");
    }

        private Engine.LazySource chain(final long fillRate, final ImageServer... servers) {
        final java.util.List<SourceUri> uris = new java.util.ArrayList<>();
        for (final ImageServer s : servers) {
            uris.add(SourceUri.tcp(new InetSocketAddress("127.0.0.1", s.port()), "golden"));
        }
        return new Engine.LazySource(uris, java.util.List.of(TokenSource.fixed(AccessToken.mint(SECRET, "golden", Instant.now().plusSeconds(600)))),
            8L << 20, fillRate, Duration.ofSeconds(5), 0);
    }

    @Test
    void shouldFillFromAPeerThatHoldsPartOfTheImageAndTakeTheRestFromTheSeed() throws Exception {
        final Path localA = dir.resolve("a.img");
        final Path sockA = dir.resolve("a.sock");
        final int written = 50 * PAGE + 4096; // a guest write on host A: its page must never reach host B
        try (Engine a = Engine.startLazy(Engine.Options.file(sockA, localA), source(2L << 20));
             VhostUserFrontend fe = VhostUserFrontend.connect(sockA, GuestRam.create(32L << 20))) {
            final BlkClient blk = new BlkClient(fe, 0);
            assertTrue(blk.read(50 * PAGE / 512, PAGE).ok());
            final byte[] w = new byte[512];
            Arrays.fill(w, (byte) 0x11);
            assertEquals(0, blk.write(written / 512, w));
            assertEquals(0, blk.flush());
            Await.until("48 pages local on host A", Duration.ofSeconds(20), () -> a.lazyStore().localPages() >= 48);
            assertTrue(a.lazyStore().localPages() < SIZE / PAGE, "host A stopped mid-fill");
        }
        final io.lazyblk.pull.provider.ImageExport export = PeerExport.of("golden", localA);
        try (ImageServer peer = ImageServer.start(new InetSocketAddress("127.0.0.1", 0), java.util.List.of(export), SECRET)) {
            final long seedBefore = server.stats().bytes();
            final Path localB = dir.resolve("b.img");
            try (Engine b = Engine.startLazy(Engine.Options.file(dir.resolve("b.sock"), localB), chain(0, peer, server))) {
                assertTrue(b.lazyStore().awaitDiskOnly(TimeUnit.SECONDS.toNanos(30)));
            }
            assertArrayEquals(golden, Files.readAllBytes(localB), "host B holds the image: none of host A's guest writes");
            final long fromPeer = peer.stats().bytes();
            final long fromSeed = server.stats().bytes() - seedBefore;
            assertTrue(fromPeer >= 40L * PAGE, "the peer served the pages it had: " + fromPeer);
            assertTrue(fromSeed >= PAGE && fromSeed <= SIZE - fromPeer, "the seed served the rest (including the page A's guest wrote): "
                + fromSeed);
            assertEquals(SIZE, fromPeer + fromSeed, "every page came exactly once, from the nearest source that had it");
        }
    }

    @Test
    void shouldStartWithoutAPeerThatIsDownAndUseItOnceItComesUp() throws Exception {
        final int port;
        try (java.net.ServerSocket probe = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            port = probe.getLocalPort(); // free now; the peer starts on it later
        }
        final Engine.LazySource chain = new Engine.LazySource(java.util.List.of(
            SourceUri.tcp(new InetSocketAddress("127.0.0.1", port), "golden"),
            SourceUri.tcp(new InetSocketAddress("127.0.0.1", server.port()), "golden")),
            java.util.List.of(TokenSource.fixed(AccessToken.mint(SECRET, "golden", Instant.now().plusSeconds(600)))), 8L << 20, 1L << 20,
            Duration.ofSeconds(5), 0);
        final Path local = dir.resolve("late.img");
        final Path sock = dir.resolve("late.sock");
        try (Engine e = Engine.startLazy(Engine.Options.file(sock, local), chain)) {
            assertTrue(StatusCommand.read(StatusServer.controlSocket(sock)).get("source.0").endsWith(" down"), "the peer is not up yet");
            try (ImageServer peer = ImageServer.start(new InetSocketAddress("127.0.0.1", port), Map.of("golden", goldenFile), SECRET, PAGE,
                new ManifestBuilder(dir.resolve("manifests")))) {
                Await.until("the late peer reached by the background retry", Duration.ofSeconds(15),
                    () -> status(sock).get("source.0").endsWith(" up"));
                final Map<String, String> st = status(sock);
                assertTrue(st.get("source.0").endsWith(" up"), "the late peer was reached by the background retry: " + st);
                final long seedBytes = server.stats().bytes();
                final BlkResponse r;
                try (VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(32L << 20))) {
                    r = new BlkClient(fe, 0).read((SIZE - 2 * PAGE) / 512, 4096);
                }
                assertArrayEquals(range(golden, SIZE - 2 * PAGE, 4096), r.data());
                assertTrue(peer.stats().bytes() >= PAGE, "the demand read came from the peer, now the nearest source");
                final long peerAfterRead = peer.stats().bytes();
                Await.until("the background fill goes on from the peer too", Duration.ofSeconds(10),
                    () -> peer.stats().bytes() >= peerAfterRead + 4L * PAGE);
                assertTrue(peer.stats().bytes() >= peerAfterRead + 4L * PAGE, "the background fill goes on from the peer too");
                assertTrue(server.stats().bytes() - seedBytes <= 2L * PAGE,
                    "and no longer from the seed (beyond a fetch or two already on their way): " + (server.stats().bytes() - seedBytes));
            }
        }
    }

        @Test
    void shouldFinishFromTheSeedWhenAPeerCorruptsAPageAndThenDies() throws Exception {
        try (ImageServer peer = ImageServer.start(new InetSocketAddress("127.0.0.1", 0), Map.of("golden", goldenFile), SECRET, PAGE,
            new ManifestBuilder(dir.resolve("manifests")))) {
            peer.corruptServedPageForTesting("golden", 7);
            final Path local = dir.resolve("c.img");
            try (Engine e = Engine.startLazy(Engine.Options.file(dir.resolve("c.sock"), local), chain(2L << 20, peer, server))) {
                Await.until("24 pages local", Duration.ofSeconds(20), () -> e.lazyStore().localPages() >= 24);
                assertTrue(server.stats().requests() >= 1, "page 7, corrupt at the peer, came from the seed");
                final Path sock = dir.resolve("c.sock");
                Map<String, String> st = status(sock);
                assertTrue(st.get("source.0").startsWith("tcp://127.0.0.1:" + peer.port() + "/golden "), st.toString());
                assertTrue(st.get("source.1").endsWith(" up"), "the seed: " + st);
                peer.close(); // dies mid-fill
                Await.until("status shows the dead peer", Duration.ofSeconds(10), () -> !status(sock).get("source.0").endsWith(" up"));
                st = status(sock);
                assertTrue(st.get("source.0").endsWith(" down") || st.get("source.0").endsWith(" backing-off"),
                    "status shows the dead peer: " + st);
                assertTrue(e.lazyStore().awaitDiskOnly(TimeUnit.SECONDS.toNanos(30)), "the seed finishes the fill");
            }
            assertArrayEquals(golden, Files.readAllBytes(local));
        }
    }

        @Test
    void shouldRefusePagesSmallerThanTheProvidersSaying() {
        final Exception e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
            () -> Engine.startLazy(Engine.Options.file(dir.resolve("s.sock"), dir.resolve("small.img")), source(0, 16 << 10)));
        assertTrue(e.getMessage().contains("provider's page size (" + PAGE), e.getMessage());
    }

    @Test
    void shouldRefuseToFillAnExistingFileItDidNotCreate() throws Exception {
        final Path local = dir.resolve("precious.img");
        final byte[] precious = new byte[SIZE];
        Arrays.fill(precious, (byte) 0x42);
        Files.write(local, precious);
        final Exception e = org.junit.jupiter.api.Assertions.assertThrows(java.io.IOException.class,
            () -> Engine.startLazy(Engine.Options.file(dir.resolve("p.sock"), local), source(0)));
        assertTrue(e.getMessage().contains("would be overwritten"), e.getMessage());
        assertArrayEquals(precious, Files.readAllBytes(local));
    }

    @Test
    void shouldRefuseALocalFileOfAnotherImage() throws Exception {
        final Path local = dir.resolve("other.img");
        Files.write(local, new byte[SIZE / 2]);
        final Exception e = org.junit.jupiter.api.Assertions.assertThrows(java.io.IOException.class,
            () -> Engine.startLazy(Engine.Options.file(dir.resolve("o.sock"), local), source(0)));
        assertTrue(e.getMessage().contains("belongs to another image"), e.getMessage());
    }
}
