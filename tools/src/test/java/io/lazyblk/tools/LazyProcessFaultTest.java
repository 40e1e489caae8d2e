package io.lazyblk.tools;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.persistence.PageStateFile;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.BlkResponse;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.FileSystems;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardWatchEventKinds;
import java.nio.file.WatchKey;
import java.nio.file.WatchService;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import static io.lazyblk.tools.LazyProcesses.DEADLINE;
import static io.lazyblk.tools.LazyProcesses.IMAGE;
import static io.lazyblk.tools.LazyProcesses.IOERR;
import static io.lazyblk.tools.LazyProcesses.NO_BACKGROUND_FILL;
import static io.lazyblk.tools.LazyProcesses.OK;
import static io.lazyblk.tools.LazyProcesses.OTHER;
import static io.lazyblk.tools.LazyProcesses.PAGE;
import static io.lazyblk.tools.LazyProcesses.PAGES;
import static io.lazyblk.tools.LazyProcesses.SECTOR;
import static io.lazyblk.tools.LazyProcesses.SIZE;
import static io.lazyblk.tools.LazyProcesses.assertReads;
import static io.lazyblk.tools.LazyProcesses.client;
import static io.lazyblk.tools.LazyProcesses.portOf;
import static io.lazyblk.tools.LazyProcesses.slice;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Lazy mode when things go wrong, with real processes ({@link LazyblkProcess}): the provider killed and restarted
 * mid-fill, the engine killed with SIGKILL and restarted on its local file, and {@code serve} refusing a local file of
 * another image or a bad token. The crash test runs the provider in this JVM to count its requests; it says so.
 */
class LazyProcessFaultTest {
    @TempDir
    Path dir;
    private LazyProcesses lazy;

    @BeforeEach
    void files(final TestInfo test) throws IOException {
        lazy = new LazyProcesses(dir, test);
    }

    @AfterEach
    void closeEverything() {
        lazy.close();
    }

    // ---------------------------------------------------------------- the provider dies and comes back

    @Test
    void shouldServeLocalPagesWhileTheProviderIsDownAndCompleteAWaitingReadOnceItRestarts() throws Exception {
        final LazyblkProcess provider = lazy.startProvider("provider", 0);
        final int port = portOf(provider);
        final Path sock = dir.resolve("engine.sock");
        // 1 MiB/s: 16 pages a second, so page 250 is still absent when the provider dies.
        final LazyblkProcess engine = lazy.startEngine("engine", dir.resolve("local.img"), sock, port, "1M", 30, 2);
        final VhostUserFrontend fe = lazy.connect(sock, 2);
        final BlkClient localReads = client(fe, 0, DEADLINE);
        final BlkClient waiting = client(fe, 1, Duration.ofSeconds(30));
        assertReads(localReads, lazy.golden, 3L * PAGE, 2 * PAGE, "pages 3 and 4, local from here on");

        final int mark = engine.lineCount();
        provider.kill();
        engine.awaitLine("lost the provider", mark, DEADLINE);
        final Future<BlkResponse> absent = lazy.threads(1).submit(() -> waiting.read(250L * PAGE / SECTOR, PAGE));
        for (int k = 0; k < 32; k++) {
            assertReads(localReads, lazy.golden, 3L * PAGE + k * 4096L, 4096, "a local page while the provider is down");
        }
        // Two seconds of outage at least: long enough that a retry loop growing with each refused fetch (the filler
        // once doubled its retry list every 50 ms) runs the child out of heap before the provider is back.
        assertThrows(TimeoutException.class, () -> absent.get(2, TimeUnit.SECONDS),
            "the read of an absent page waits while the provider is down");

        lazy.startProvider("provider-restarted", port);
        final BlkResponse r = absent.get(20, TimeUnit.SECONDS);
        assertEquals(VirtioBlk.statusName(OK), VirtioBlk.statusName(r.status()), "the waiting read, once the provider is back");
        assertArrayEquals(slice(lazy.golden, 250L * PAGE, PAGE), r.data());
        engine.awaitLine("reconnected to the provider", mark, DEADLINE);
        assertReads(localReads, lazy.golden, 251L * PAGE, PAGE, "a new demand read after the restart");
    }

    /**
     * A front end leaves while one of its reads waits for a page; its queue drains for 30 s, gives up on the read and
     * its guest memory is unmapped. When the read's fetch fails later (demand timeout), nothing may be written there:
     * the engine stays up and serves the next front end.
     */
    @Test
    void shouldStayUpWhenAReadItsFrontEndAbandonedFailsLaterAndServeTheNextFrontEnd() throws Exception {
        final LazyblkProcess provider = lazy.startProvider("provider", 0);
        final int port = portOf(provider);
        final Path sock = dir.resolve("engine.sock");
        // A demand timeout (35 s) past the queue's drain (30 s): the read is still parked when its queue closes.
        final LazyblkProcess engine = lazy.startEngine("engine", dir.resolve("local.img"), sock, port, NO_BACKGROUND_FILL, 35, 1);
        final VhostUserFrontend fe = lazy.connect(sock, 1);
        final int mark = engine.lineCount();
        provider.kill();
        engine.awaitLine("lost the provider", mark, DEADLINE);
        new ReadBurst(fe, 0, new long[] {250L * PAGE}, new int[] {PAGE}).submitAll(); // submitted, never awaited
        // The engine took it (and parked it) once it says, going back to sleep, that it has seen this avail index.
        assertTrue(fe.queue(0).eventIdx(), "the front end negotiated VIRTIO_RING_F_EVENT_IDX");
        io.lazyblk.pagemap.Await.until("the engine took the read", DEADLINE, () -> fe.queue(0).availEvent() == fe.queue(0).availIdx());
        fe.close();
        engine.awaitLine("they are abandoned", mark, Duration.ofSeconds(60));
        engine.awaitLine("could not be fetched for", mark, Duration.ofSeconds(30));

        lazy.startProvider("provider-restarted", port);
        engine.awaitLine("reconnected to the provider", mark, DEADLINE);
        assertTrue(engine.isAlive(), "the engine outlived the late failure of an abandoned read");
        assertReads(client(lazy.connect(sock, 1), 0, DEADLINE), lazy.golden, 250L * PAGE, PAGE, "the page, for the next front end");
    }

    @Test
    void shouldFailAnAbsentReadWithIoerrWhenTheProviderStaysDownPastTheDemandTimeoutAndFinishTheFillAfterItRestarts()
        throws Exception {
        final LazyblkProcess provider = lazy.startProvider("provider", 0);
        final int port = portOf(provider);
        final Path local = dir.resolve("local.img");
        final Path sock = dir.resolve("engine.sock");
        // 4 MiB/s: the fill takes 4 s; the demand timeout is 1 s.
        final LazyblkProcess engine = lazy.startEngine("engine", local, sock, port, "4M", 1, 1);
        final VhostUserFrontend fe = lazy.connect(sock, 1);
        final BlkClient blk = client(fe, 0, DEADLINE);
        assertReads(blk, lazy.golden, 2L * PAGE, PAGE, "page 2, local from here on");
        assertFalse(engine.printed("switched to disk-only", 0), "the fill is still running");

        final int mark = engine.lineCount();
        provider.kill();
        engine.awaitLine("lost the provider", mark, DEADLINE);
        final long t0 = System.nanoTime();
        final BlkResponse failed = blk.read(250L * PAGE / SECTOR, PAGE);
        final long waitedMillis = (System.nanoTime() - t0) / 1_000_000;
        assertEquals(VirtioBlk.statusName(IOERR), VirtioBlk.statusName(failed.status()), "an absent page with the provider down");
        assertTrue(waitedMillis >= 900, "the read waited out the 1 s demand timeout first, not " + waitedMillis + " ms");
        assertReads(blk, lazy.golden, 2L * PAGE, PAGE, "a local page meanwhile");

        // Now the outage is older than the timeout. Reads of the 16 pages after the filled prefix (where the background
        // fill stopped) at once: each still waits its full timeout, and all of them get IOERR together, not in turn.
        int prefix = 3;
        while (prefix < PAGES - 16 && Arrays.equals(slice(lazy.golden, (long) prefix * PAGE, PAGE), TestImage.read(local, (long) prefix * PAGE, PAGE))) {
            prefix++;
        }
        final long[] offsets = new long[16];
        final int[] lengths = new int[16];
        for (int i = 0; i < 16; i++) {
            offsets[i] = (long) (prefix + i) * PAGE;
            lengths[i] = PAGE;
        }
        final ReadBurst burst = new ReadBurst(fe, 0, offsets, lengths);
        burst.submitAll();
        assertFalse(fe.queue(0).awaitUsed(900_000_000L), "none of 16 reads of absent pages from " + prefix
            + " on completes before the 1 s demand timeout");
        burst.awaitAll(Duration.ofSeconds(5));
        for (int i = 0; i < 16; i++) {
            assertEquals(VirtioBlk.statusName(IOERR), VirtioBlk.statusName(burst.status(i)), "read of page " + (prefix + i));
        }

        lazy.startProvider("provider-restarted", port);
        engine.awaitLine("switched to disk-only", mark, Duration.ofSeconds(30));
        assertReads(blk, lazy.golden, 250L * PAGE, PAGE, "the page that failed, after the restart");
        assertArrayEquals(lazy.golden, Files.readAllBytes(local), "the finished fill: the local file is the image");
    }

    // ---------------------------------------------------------------- the engine crashes

    @Test
    void shouldNotRefetchPagesLocalBeforeAKillAndKeepWritesAcknowledgedBeforeAFlush() throws Exception {
        // In-process provider: its request counter shows which pages the restarted engine fetched. The engine is a child.
        final ImageServer provider = lazy.startInProcessProvider();
        final Manifest manifest = ManifestBuilder.build(lazy.goldenFile, PAGE, ManifestBuilder.Progress.NONE);
        final Path local = dir.resolve("local.img");
        final Path state = PageStateFile.beside(local);
        final Path sock = dir.resolve("engine.sock");
        // 2 MiB/s: 32 pages a second, so the kill comes mid-fill.
        final LazyblkProcess engine = lazy.startEngine("engine", local, sock, provider.port(), "2M", 30, 1);
        final byte[] model = lazy.golden.clone();
        try (VhostUserFrontend fe = lazy.connect(sock, 1)) {
            final BlkClient blk = client(fe, 0, DEADLINE);
            final long partial = 200L * PAGE + 512; // an absent page: merged around these sectors after the restart
            final long whole = 220L * PAGE; // an absent page overwritten whole: never needs the image's bytes
            final long onLocal = 3L * PAGE + 8192; // a page made local by a read first
            assertReads(blk, lazy.golden, 3L * PAGE, PAGE, "page 3");
            for (final long[] w : new long[][] {{partial, 1024}, {whole, PAGE}, {onLocal, 4096}}) {
                final byte[] d = TestImage.pattern((int) w[1], w[0]);
                assertEquals(OK, blk.write(w[0] / SECTOR, d), "write at " + w[0]);
                System.arraycopy(d, 0, model, (int) w[0], d.length);
            }
            assertEquals(OK, blk.flush(), "FLUSH");
            awaitLocalPages(state, manifest, 16);
            engine.kill();
        }
        final int localBefore = localPages(state, manifest);
        assertTrue(localBefore >= 16 && localBefore < PAGES, "killed mid-fill with " + localBefore + " pages local");

        // Counted in bytes: the background fill asks for runs of adjacent pages, several pages a request.
        final long bytesBefore = provider.stats().bytes();
        final LazyblkProcess restarted = lazy.startEngine("engine-restarted", local, sock, provider.port(), "0", 30, 1);
        restarted.awaitLine("switched to disk-only", DEADLINE);
        assertEquals((long) (PAGES - localBefore) * PAGE, provider.stats().bytes() - bytesBefore,
            "the restarted engine fetched exactly the pages that were not local");
        final BlkClient blk = client(lazy.connect(sock, 1), 0, DEADLINE);
        assertReads(blk, model, 200L * PAGE, PAGE, "the page written in part before the flush");
        assertReads(blk, model, 220L * PAGE, PAGE, "the page written whole before the flush");
        assertReads(blk, model, 3L * PAGE, PAGE, "the local page written before the flush");
        assertArrayEquals(model, Files.readAllBytes(local), "the local file is the image plus the flushed writes");
    }

    /** Pages the state file records as local, read as a restarted engine would. */
    private static int localPages(final Path state, final Manifest m) throws IOException {
        try (PageStateFile s = PageStateFile.openOrCreate(state, m.size(), m.pageSize(), m.digest())) {
            return s.localCount();
        }
    }

    /** Waits, on inotify events of the state file's directory, until it records {@code n} local pages. */
    private static void awaitLocalPages(final Path state, final Manifest m, final int n) throws IOException, InterruptedException {
        final long deadline = System.nanoTime() + DEADLINE.toNanos();
        try (WatchService watch = FileSystems.getDefault().newWatchService()) {
            state.getParent().register(watch, StandardWatchEventKinds.ENTRY_MODIFY, StandardWatchEventKinds.ENTRY_CREATE);
            while (!Files.exists(state) || localPages(state, m) < n) {
                final long left = deadline - System.nanoTime();
                if (left <= 0) {
                    fail("the state file did not record " + n + " local pages within " + DEADLINE.toSeconds() + " s");
                }
                final WatchKey key = watch.poll(left, TimeUnit.NANOSECONDS);
                if (key != null) {
                    key.pollEvents();
                    key.reset();
                }
            }
        }
    }

    // ---------------------------------------------------------------- a local file of another image

    @Test
    void shouldRefuseToServeALocalFileOfAnotherSizeSayingItBelongsToAnotherImage() throws Exception {
        final LazyblkProcess provider = lazy.startProvider("provider", 0);
        final Path local = TestImage.create(dir.resolve("small.img"), SIZE / 2, 5);
        final byte[] before = Files.readAllBytes(local);
        final Path sock = dir.resolve("engine.sock");
        final LazyblkProcess serve = lazy.serve("engine", local, sock, portOf(provider), IMAGE, lazy.token(IMAGE), "0", 30, 1);
        assertEquals(1, serve.awaitExit(DEADLINE), "exit code of serve:\n" + serve.output());
        assertTrue(serve.output().contains("belongs to another image"), serve.output());
        assertArrayEquals(before, Files.readAllBytes(local), "the refused file is untouched");
        assertFalse(Files.exists(PageStateFile.beside(local)), "no state file was created for it");
        assertFalse(Files.exists(sock), "nothing listens");
    }

    @Test
    void shouldRefuseToServeALocalFileFilledFromAnotherImageOfTheSameSize() throws Exception {
        final LazyblkProcess provider = lazy.startProvider("provider", 0);
        final Path local = dir.resolve("local.img");
        final Path sock = dir.resolve("engine.sock");
        final LazyblkProcess first = lazy.serve("engine-other", local, sock, portOf(provider), OTHER, lazy.token(OTHER), "1M", 30, 1);
        first.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);
        try (VhostUserFrontend fe = lazy.connect(sock, 1)) {
            assertReads(client(fe, 0, DEADLINE), Files.readAllBytes(lazy.otherFile), 9L * PAGE, PAGE, "a page of the other image");
        }
        first.stop();
        final byte[] imageBefore = Files.readAllBytes(local);
        final byte[] stateBefore = Files.readAllBytes(PageStateFile.beside(local));

        final LazyblkProcess serve = lazy.serve("engine", local, sock, portOf(provider), IMAGE, lazy.token(IMAGE), "0", 30, 1);
        assertEquals(1, serve.awaitExit(DEADLINE), "exit code of serve:\n" + serve.output());
        assertTrue(serve.output().contains("belongs to another image"), serve.output());
        assertArrayEquals(imageBefore, Files.readAllBytes(local), "the refused file is untouched");
        assertArrayEquals(stateBefore, Files.readAllBytes(PageStateFile.beside(local)), "and so is its state file");
    }

    // ---------------------------------------------------------------- tokens

    @Test
    void shouldRefuseToServeWithATokenOfAnotherSecretAnExpiredTokenOrAnotherImagesTokenNamingTheRefusal() throws Exception {
        final int port = portOf(lazy.startProvider("provider", 0));
        final String[][] cases = {
            // name, token, what the refusal must say
            {"wrong-secret", AccessToken.mint(TestImage.pattern(32, 99), IMAGE, Instant.now().plusSeconds(3600)),
                "BAD_TOKEN: access token not valid for image 'golden' (signed with another secret, or for another image)"},
            {"expired", AccessToken.mint(lazy.secret, IMAGE, Instant.now().minusSeconds(60)), "EXPIRED_TOKEN: access token for image 'golden' expired at"},
            {"other-image", lazy.token(OTHER), "BAD_TOKEN: access token not valid for image 'golden'"},
        };
        final List<LazyblkProcess> children = new ArrayList<>();
        for (final String[] c : cases) { // all at once: three JVM starts cost one
            children.add(lazy.serve(c[0], dir.resolve(c[0] + ".img"), dir.resolve(c[0] + ".sock"), port, IMAGE, c[1], "0", 30, 1));
        }
        for (int i = 0; i < cases.length; i++) {
            final LazyblkProcess child = children.get(i);
            assertEquals(1, child.awaitExit(DEADLINE), cases[i][0] + ": exit code of serve:\n" + child.output());
            assertTrue(child.output().contains("lazyblk serve: provider ") && child.output().contains(":" + port + " refused image 'golden'"),
                cases[i][0] + ": " + child.output());
            assertTrue(child.output().contains(cases[i][2]), cases[i][0] + ": expected '" + cases[i][2] + "' in:\n" + child.output());
            assertFalse(Files.exists(dir.resolve(cases[i][0] + ".img")), cases[i][0] + ": no local file was created");
        }
    }
}
