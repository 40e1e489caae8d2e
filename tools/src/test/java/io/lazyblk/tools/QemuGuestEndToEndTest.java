package io.lazyblk.tools;

import io.lazyblk.tools.guest.QemuGuest;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.time.Duration;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** A real QEMU 7.2 guest (TCG) boots with its disk served by the engine, and works on it as a user would. */
class QemuGuestEndToEndTest {
    private static final long SIZE = 64L << 20;
    private static final Duration TIMEOUT = Duration.ofSeconds(120);
    private static QemuGuest guest;

    @TempDir
    Path dir;

    @BeforeAll
    static void findQemu() throws Exception {
        assumeTrue(QemuGuest.available(), "QEMU is not installed here: " + QemuGuest.unavailableReason());
        final Path scripts = QemuGuest.findGuestScriptsDir().orElseThrow(() -> new IllegalStateException("no tools/guest above the working directory"));
        guest = new QemuGuest(scripts);
        guest.prepare();
    }

    private QemuGuest.Result boot(final Path socket, final String test, final int queues) throws Exception {
        final QemuGuest.Result r = guest.boot(socket, test, queues, TIMEOUT);
        assertTrue(r.ok(), () -> "guest test " + test + " failed: " + r.resultLine().orElse("no result line") + "; log " + r.logFile());
        return r;
    }

    @Test
    void shouldBootWriteReadBackAndFlushAndLeaveTheImageHoldingWhatTheGuestSaw() throws Exception {
        final Path image = dir.resolve("disk.img");
        DemoCommand.createSampleImage(image, SIZE);
        final byte[] head = DemoCommand.readAt(image, 0, 4096);
        try (Engine engine = Engine.start(Engine.Options.file(dir.resolve("s.sock"), image))) {
            final QemuGuest.Result r = boot(dir.resolve("s.sock"), "rw", 1);
            assertEquals(SIZE, r.diskSize());
            assertTrue(r.resultLine().orElseThrow().contains("cache=writeback"), "the guest should have used the write-back cache and flushed");
            // After the guest powers off, the host sees the pattern, untouched data elsewhere, and the disk the guest read.
            final long off = QemuGuest.patternOffsetBytes(QemuGuest.DEFAULT_PATTERN_OFFSET_BLOCKS);
            assertArrayEquals(QemuGuest.expectedPattern(), DemoCommand.readAt(image, off, QemuGuest.expectedPattern().length));
            assertArrayEquals(head, DemoCommand.readAt(image, 0, 4096));
            assertEquals(DemoCommand.md5(image), r.diskMd5());

            // The engine serves the next VM after QEMU went away: a second guest boots from the same socket.
            final QemuGuest.Result again = boot(dir.resolve("s.sock"), "rw", 1);
            assertEquals(r.diskMd5(), again.diskMd5());
        }
    }

    @Test
    void shouldServeAReadOnlyDiskThatRefusesGuestWrites() throws Exception {
        final Path image = dir.resolve("ro.img");
        DemoCommand.createSampleImage(image, SIZE);
        final String before = DemoCommand.md5(image);
        try (Engine engine = Engine.start(Engine.Options.file(dir.resolve("ro.sock"), image).withReadOnly(true))) {
            final QemuGuest.Result r = boot(dir.resolve("ro.sock"), "ro", 1);
            assertEquals(before, r.diskMd5());
        }
        assertEquals(before, DemoCommand.md5(image));
    }

    @org.junit.jupiter.params.ParameterizedTest(name = "over {0}")
    @org.junit.jupiter.params.provider.ValueSource(strings = {"tcp", "shm"})
    void shouldBootFromALazilyFilledImageAndEndWithTheImagePlusTheGuestsWrites(final String transport) throws Exception {
        final Path golden = dir.resolve("golden.img");
        // Data in every page: a zero page is never fetched, so a mostly-empty image would be filled before the guest asks.
        try (var ch = java.nio.channels.FileChannel.open(golden, java.nio.file.StandardOpenOption.CREATE,
            java.nio.file.StandardOpenOption.WRITE, java.nio.file.StandardOpenOption.TRUNCATE_EXISTING)) {
            final byte[] chunk = new byte[1 << 20];
            final java.util.SplittableRandom rnd = new java.util.SplittableRandom(12);
            for (long at = 0; at < SIZE; at += chunk.length) {
                rnd.nextBytes(chunk);
                ch.write(java.nio.ByteBuffer.wrap(chunk), at);
            }
        }
        final byte[] secret = "lazyblk-test-secret-0123456789ab".getBytes(java.nio.charset.StandardCharsets.US_ASCII);
        final Path cache = dir.resolve("cache.sock");
        try (var server = io.lazyblk.pull.provider.ImageServer.start(new java.net.InetSocketAddress("127.0.0.1", 0), cache,
            java.util.List.of(io.lazyblk.pull.provider.ImageExport.of("golden", golden, 64 << 10,
                new io.lazyblk.pull.manifest.ManifestBuilder(dir.resolve("m")), io.lazyblk.pull.manifest.ManifestBuilder.Progress.NONE)),
            secret)) {
            final Path local = dir.resolve("local.img");
            final String token = io.lazyblk.pull.token.AccessToken.mint(secret, "golden", java.time.Instant.now().plusSeconds(600));
            final SourceUri uri = "shm".equals(transport) ? SourceUri.shm(cache, "golden")
                : SourceUri.tcp(new java.net.InetSocketAddress("127.0.0.1", server.port()), "golden");
            // 4 MiB/s: the guest boots and works while most of the 64 MiB is still absent.
            final Engine.LazySource src = new Engine.LazySource(java.util.List.of(uri), java.util.List.of(io.lazyblk.pull.token.TokenSource.fixed(token)), 16L << 20, 4L << 20,
                Duration.ofSeconds(30), 0);
            try (Engine engine = Engine.startLazy(Engine.Options.file(dir.resolve("lazy.sock"), local), src)) {
                final QemuGuest.Result r = boot(dir.resolve("lazy.sock"), "rw", 1);
                assertTrue(engine.lazyStore().bytesFetchedOnDemand() > 0, "the guest's reads should have pulled pages on demand");
                assertTrue(engine.lazyStore().awaitDiskOnly(java.util.concurrent.TimeUnit.SECONDS.toNanos(60)), "the fill should finish");
                assertEquals(DemoCommand.md5(local), r.diskMd5(), "the local file holds exactly the disk the guest saw");
            }
            final long off = QemuGuest.patternOffsetBytes(QemuGuest.DEFAULT_PATTERN_OFFSET_BLOCKS);
            assertArrayEquals(QemuGuest.expectedPattern(), DemoCommand.readAt(local, off, QemuGuest.expectedPattern().length));
            assertArrayEquals(DemoCommand.readAt(golden, 0, 1 << 20), DemoCommand.readAt(local, 0, 1 << 20));
            if ("shm".equals(transport)) {
                assertEquals(0, server.stats().requests(), "over shm the server sends no page: the engine read them from its mapping");
                assertEquals(1, server.stats().handovers());
            }
        }
    }

    @Test
    void shouldWorkWithDedicatedIoThreads() throws Exception {
        final Path image = dir.resolve("io.img");
        DemoCommand.createSampleImage(image, SIZE);
        final Engine.Options o = Engine.Options.file(dir.resolve("io.sock"), image).withQueues(2);
        try (Engine engine = Engine.start(new Engine.Options(o.socket(), o.localImage(), 0, 2, false, 2, o.pollNanos()))) {
            final QemuGuest.Result r = boot(dir.resolve("io.sock"), "rw", 2);
            assertEquals(DemoCommand.md5(image), r.diskMd5());
            assertArrayEquals(QemuGuest.expectedPattern(), DemoCommand.readAt(image,
                QemuGuest.patternOffsetBytes(QemuGuest.DEFAULT_PATTERN_OFFSET_BLOCKS), QemuGuest.expectedPattern().length));
        }
    }

    @Test
    void shouldWorkWithTwoQueues() throws Exception {
        final Path image = dir.resolve("mq.img");
        DemoCommand.createSampleImage(image, SIZE);
        try (Engine engine = Engine.start(Engine.Options.file(dir.resolve("mq.sock"), image).withQueues(2))) {
            final QemuGuest.Result r = boot(dir.resolve("mq.sock"), "rw", 2);
            assertEquals(DemoCommand.md5(image), r.diskMd5());
        }
    }
}
