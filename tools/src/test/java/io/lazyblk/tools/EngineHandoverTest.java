package io.lazyblk.tools;

import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.sys.LibC;
import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A live migration over shared storage, engine to engine, with the messages QEMU 7.2 sends (real sockets, real files,
 * real OFD locks): the destination engine started on the same file stands by and serves nothing from it until the
 * source engine lets go at the switchover (GET_VRING_BASE while logging); it then finds every write the source
 * acknowledged and the guest's write-cache mode. Without a switchover it waits out its bound and refuses; a source
 * whose migration fails takes the image back; a lazily filled image moves mid-fill with its state file.
 */
class EngineHandoverTest {
    private static final int IMAGE_BYTES = 1 << 20;
    private static final int CFG_WRITEBACK = io.lazyblk.blk.VirtioBlk.CFG_WRITEBACK;

    @TempDir
    Path dir;
    private final Closer open = new Closer();

    @AfterEach
    void closeAll() throws Exception {
        open.close();
    }

    private <T extends AutoCloseable> T keep(final T c) {
        return open.keep(c);
    }

    private static String mode(final Engine e) {
        return e.status().get("mode");
    }

    @Test
    void shouldHandTheImageToTheDestinationAtTheSwitchoverWithTheGuestsWriteCacheMode() throws Exception {
        final Path image = TestImage.create(dir.resolve("disk.img"), IMAGE_BYTES, 3);
        final Engine a = keep(Engine.start(Engine.Options.file(dir.resolve("a.sock"), image)));
        final Engine b = keep(Engine.start(Engine.Options.file(dir.resolve("b.sock"), image).withLockWait(Duration.ofSeconds(30))));
        assertEquals("disk-only", mode(a));
        assertEquals("standby", mode(b), "the destination stands by while the source holds the image");

        final VhostUserFrontend feA = keep(FrontEnds.connect(dir.resolve("a.sock")));
        final BlkClient blkA = FrontEnds.client(feA, 0);
        final byte[] written = TestImage.pattern(8192, 77);
        assertEquals(VirtioBlk.S_OK, blkA.write(16, written));
        assertEquals(0, feA.setConfig(CFG_WRITEBACK, new byte[] {0}), "the guest turns its write cache off");
        final int log = FrontEnds.startMigration(feA, FrontEnds.RAM_BYTES);
        keep(() -> LibC.close(log));

        // QEMU-B starts its device only after the switchover; one that starts early (or a second engine on the same file)
        // must not be served from the file meanwhile: its first read waits for the lock.
        final java.util.concurrent.atomic.AtomicReference<VhostUserFrontend> feB = new java.util.concurrent.atomic.AtomicReference<>();
        final CompletableFuture<byte[]> readOnB = CompletableFuture.supplyAsync(() -> {
            try {
                feB.set(keep(FrontEnds.connect(dir.resolve("b.sock"))));
                return FrontEnds.client(feB.get(), 0).timeout(Duration.ofSeconds(20)).read(16, 8192).data();
            } catch (final Exception e) {
                throw new RuntimeException(e);
            }
        });
        io.lazyblk.pagemap.Await.until("B's VM started a queue and B waits for the lock", Duration.ofSeconds(10),
            () -> b.storage().waitingForLock());
        assertFalse(readOnB.isDone(), "the destination serves nothing while the source holds the image");

        FrontEnds.switchover(feA);
        assertEquals("handed-over", mode(a), "the source let go at GET_VRING_BASE while logging");
        assertArrayEquals(written, readOnB.get(20, TimeUnit.SECONDS), "the destination reads what the source acknowledged");
        assertEquals("disk-only", mode(b));
        assertArrayEquals(new byte[] {0}, feB.get().getConfig(CFG_WRITEBACK, 1),
            "the guest's write-through choice came with the image (QEMU does not send it to the destination again)");

        // The source can go with nothing lost; the destination writes the file.
        a.close();
        final byte[] later = TestImage.pattern(4096, 78);
        assertEquals(VirtioBlk.S_OK, FrontEnds.client(feB.get(), 0).write(64, later));
        assertArrayEquals(later, TestImage.read(image, 64 * 512L, 4096));
        assertArrayEquals(written, TestImage.read(image, 16 * 512L, 8192));
    }

    @Test
    void shouldRefuseToServeAnImageAnotherEngineHoldsOnceItsBoundPassesAndServeItOnceLetGo() throws Exception {
        final Path image = TestImage.create(dir.resolve("disk.img"), IMAGE_BYTES, 4);
        final Engine a = Engine.start(Engine.Options.file(dir.resolve("a.sock"), image));
        final Engine b = keep(Engine.start(Engine.Options.file(dir.resolve("b.sock"), image).withLockWait(Duration.ofSeconds(1))));
        try {
            assertEquals("standby", mode(b));
            final VhostUserFrontend feB = keep(VhostUserFrontend.open(dir.resolve("b.sock"),
                io.lazyblk.tools.frontend.GuestRam.create(FrontEnds.RAM_BYTES), Duration.ofSeconds(10)));
            try {
                feB.handshake(FrontEnds.CONFIG.withReplyTimeout(Duration.ofSeconds(10)));
            } catch (final java.io.IOException e) {
                // the engine may close while the handshake still waits for an ack: either way it must close
            }
            assertTrue(feB.isClosedByPeer(Duration.ofSeconds(10)), "the engine closes the connection once its lock wait ends");
            assertEquals("standby", mode(b));
        } finally {
            a.close(); // the other engine stops: its lock goes with its open of the file
        }
        FrontEnds.assertEngineServesNewFrontEnd(dir.resolve("b.sock"), image, 8);
        assertEquals("disk-only", mode(b));
    }

    @Test
    void shouldTakeTheImageBackWhenTheMigrationFailsAfterTheSwitchover() throws Exception {
        final Path image = TestImage.create(dir.resolve("disk.img"), IMAGE_BYTES, 5);
        final Engine a = keep(Engine.start(Engine.Options.file(dir.resolve("a.sock"), image)));
        final VhostUserFrontend feA = keep(FrontEnds.connect(dir.resolve("a.sock")));
        final byte[] written = TestImage.pattern(4096, 79);
        assertEquals(VirtioBlk.S_OK, FrontEnds.client(feA, 0).write(24, written));
        final int log = FrontEnds.startMigration(feA, FrontEnds.RAM_BYTES);
        keep(() -> LibC.close(log));
        final int[] bases = FrontEnds.switchover(feA);
        assertEquals("handed-over", mode(a));
        // QEMU-A resumes the VM (the destination failed): it turns logging off and starts the rings again.
        feA.setFeatures(feA.features() & ~(1L << io.lazyblk.vhost.proto.Protocol.F_LOG_ALL));
        feA.restartQueue(0, bases[0]);
        assertArrayEquals(written, FrontEnds.client(feA, 0).read(24, 4096).data(), "the source serves again");
        assertEquals("disk-only", mode(a));
        // ... and holds the image again: a second engine on it stands by.
        try (Engine b = Engine.start(Engine.Options.file(dir.resolve("b.sock"), image))) {
            assertEquals("standby", mode(b));
        }
    }

    @Test
    void shouldMoveALazilyFilledImageMidFillWithItsStateFileAndFinishTheFillOnTheDestination() throws Exception {
        final byte[] golden = new byte[16 << 20];
        new Random(43).nextBytes(golden);
        final Path goldenFile = dir.resolve("golden.raw");
        Files.write(goldenFile, golden);
        final byte[] secret = "0123456789abcdef0123456789abcdef".getBytes();
        final ImageServer server = keep(ImageServer.start(new InetSocketAddress("127.0.0.1", 0), Map.of("golden", goldenFile), secret,
            64 << 10, new ManifestBuilder(dir.resolve("manifests"))));
        final Path local = dir.resolve("local.img");
        // The source fills slowly (1 MiB/s), so the switchover finds it mid-fill; the destination fills flat out.
        final Engine a = keep(Engine.startLazy(Engine.Options.file(dir.resolve("a.sock"), local),
            lazy(server, secret, 1 << 20)));
        final VhostUserFrontend feA = keep(FrontEnds.connect(dir.resolve("a.sock")));
        final BlkClient blkA = FrontEnds.client(feA, 0);
        assertArrayEquals(java.util.Arrays.copyOfRange(golden, 4 << 20, (4 << 20) + 4096), blkA.read((4 << 20) / 512, 4096).data());
        final byte[] written = TestImage.pattern(4096, 80);
        assertEquals(VirtioBlk.S_OK, blkA.write((8 << 20) / 512 + 3, written), "a guest write into a page not fetched yet");
        final Engine b = keep(Engine.startLazy(Engine.Options.file(dir.resolve("b.sock"), local), lazy(server, secret, 0)));
        assertEquals("standby", mode(b));
        final int log = FrontEnds.startMigration(feA, FrontEnds.RAM_BYTES);
        keep(() -> LibC.close(log));
        final int localOnA = a.lazyStore().localPages(); // at least this many are in the state file the destination reads
        assertTrue(localOnA < a.lazyStore().pageCount(), "mid-fill: " + localOnA);
        FrontEnds.switchover(feA);
        assertEquals("handed-over", mode(a));

        final VhostUserFrontend feB = keep(FrontEnds.connect(dir.resolve("b.sock")));
        final BlkClient blkB = FrontEnds.client(feB, 0).timeout(Duration.ofSeconds(20));
        assertArrayEquals(written, blkB.read((8 << 20) / 512 + 3, 4096).data(), "the source's guest write, not the image's page");
        assertTrue(b.lazyStore() != null && b.lazyStore().awaitDiskOnly(TimeUnit.SECONDS.toNanos(60)), "the destination finishes the fill");
        final long fetchedByB = b.lazyStore().bytesFetchedOnDemand() + b.lazyStore().bytesFetchedInBackground();
        assertTrue(fetchedByB <= (long) (b.lazyStore().pageCount() - localOnA) * b.lazyStore().pageSize(),
            "the destination fetched only what the source had not: " + fetchedByB + " bytes, " + localOnA + " pages were local");
        a.close();
        final byte[] expected = golden.clone();
        System.arraycopy(written, 0, expected, (8 << 20) + 3 * 512, written.length);
        assertArrayEquals(expected, Files.readAllBytes(local), "the file is the image with the guest's write");
    }

    /**
     * The switchover with a request still in flight (its page not fetched yet, the provider holding it back): the reply
     * to GET_VRING_BASE waits for it, and by the reply the request is answered, its used entry published and its pages
     * and the used ring marked in the dirty log, which is what QEMU reads next.
     */
    @Test
    void shouldAnswerAndLogARequestHeldBackWhileGetVringBaseArrivesBeforeReplying() throws Exception {
        final byte[] golden = new byte[4 << 20];
        new Random(44).nextBytes(golden);
        final Path goldenFile = Files.write(dir.resolve("golden.raw"), golden);
        final byte[] secret = "0123456789abcdef0123456789abcdef".getBytes();
        final int held = 20; // the provider holds back requests for this page until released
        final java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        final io.lazyblk.pull.provider.Availability holding = (first, count) -> {
            if (first <= held && held < first + count) {
                try {
                    release.await(30, TimeUnit.SECONDS);
                } catch (final InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            return true;
        };
        final ImageServer server = keep(ImageServer.start(new InetSocketAddress("127.0.0.1", 0), java.util.List.of(
            new io.lazyblk.pull.provider.ImageExport("golden", goldenFile, ManifestBuilder.build(goldenFile, 64 << 10,
                ManifestBuilder.Progress.NONE), holding, false)), secret));
        final Engine a = keep(Engine.startLazy(Engine.Options.file(dir.resolve("a.sock"), dir.resolve("local.img")),
            lazy(server, secret, 1024)));
        final VhostUserFrontend fe = keep(FrontEnds.connect(dir.resolve("a.sock")));
        final int log = FrontEnds.startMigration(fe, FrontEnds.RAM_BYTES);
        keep(() -> LibC.close(log));
        final java.lang.foreign.Arena arena = keep(java.lang.foreign.Arena.ofShared());
        final long logBytes = FrontEnds.RAM_BYTES / 4096 / 8;
        final java.lang.foreign.MemorySegment view = io.lazyblk.vhost.mem.SealedMemfd.mapShared(log, logBytes, 0, arena);

        // Threads of their own: the common pool may have a single thread on 2 cores, and the stop below must run while
        // the read still waits (it did not: it queued behind the read until the provider let the page go).
        final java.util.concurrent.ExecutorService threads = java.util.concurrent.Executors.newFixedThreadPool(2);
        keep(threads::shutdownNow);
        final CompletableFuture<byte[]> read = CompletableFuture.supplyAsync(() -> {
            try {
                return FrontEnds.client(fe, 0).timeout(Duration.ofSeconds(30)).read((long) held * (64 << 10) / 512, 64 << 10).data();
            } catch (final Exception e) {
                throw new RuntimeException(e);
            }
        }, threads);
        io.lazyblk.pagemap.Await.until("the engine took the read and asked for its page", Duration.ofSeconds(10),
            () -> a.lazyStore().fillStats().demandFetches() >= 1);
        final int usedBefore = fe.queue(0).usedIdx();
        final CompletableFuture<int[]> stop = CompletableFuture.supplyAsync(() -> {
            try {
                return FrontEnds.switchover(fe);
            } catch (final java.io.IOException e) {
                throw new RuntimeException(e);
            }
        }, threads);
        io.lazyblk.pagemap.Await.until("the engine stops the queue (GET_VRING_BASE) and waits for its request",
            Duration.ofSeconds(10), EngineHandoverTest::stoppingAQueue);
        assertFalse(stop.isDone(), "GET_VRING_BASE is not answered while a request it took is in flight");
        assertFalse(read.isDone());
        release.countDown();
        stop.get(30, TimeUnit.SECONDS);
        // What QEMU reads once it has the reply: the used index, then the log.
        assertEquals(usedBefore + 1, fe.queue(0).usedIdx(), "the held request's answer is published before the reply");
        assertArrayEquals(java.util.Arrays.copyOfRange(golden, held * (64 << 10), (held + 1) * (64 << 10)), read.get(10, TimeUnit.SECONDS));
        final long usedPage = fe.queue(0).usedGpa() >>> 12;
        assertTrue((view.get(java.lang.foreign.ValueLayout.JAVA_BYTE, usedPage / 8) & (1 << (usedPage % 8))) != 0,
            "the used ring's page is marked");
        int marked = 0;
        for (long i = 0; i < logBytes; i++) {
            marked += Integer.bitCount(Byte.toUnsignedInt(view.get(java.lang.foreign.ValueLayout.JAVA_BYTE, i)));
        }
        assertTrue(marked >= 16, "the 64 KiB read's data pages are marked: " + marked);
    }

    /** Whether a thread of this JVM is inside a connection's stop of a queue (waiting for its in-flight requests). */
    private static boolean stoppingAQueue() {
        for (final StackTraceElement[] stack : Thread.getAllStackTraces().values()) {
            for (final StackTraceElement f : stack) {
                if (f.getClassName().endsWith("VhostUserConnection") && f.getMethodName().equals("stopQueue")) {
                    return true;
                }
            }
        }
        return false;
    }

    private static Engine.LazySource lazy(final ImageServer server, final byte[] secret, final long fillRate) {
        return new Engine.LazySource(new InetSocketAddress("127.0.0.1", server.port()), "golden",
            AccessToken.mint(secret, "golden", Instant.now().plusSeconds(600)), 8L << 20, fillRate, Duration.ofSeconds(5));
    }
}
