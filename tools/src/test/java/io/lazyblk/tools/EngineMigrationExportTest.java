package io.lazyblk.tools;

import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.pull.token.TokenSource;
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
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A live migration without shared storage, engine to engine in one JVM, with real sockets, TCP and files, and the
 * messages QEMU 7.2 sends: engine A exports its live disk through its control socket (what {@code lazyblk
 * migrate-export} sends), engine B fills its own file from the export, A's guest keeps writing (pages B already has
 * among them), and at the switchover B takes the final set of changed pages before its VM's first request: B then
 * serves exactly what A's guest last wrote, reaches disk-only, tells A, and A's status says the migration is complete.
 */
class EngineMigrationExportTest {
    private static final int IMAGE_BYTES = 4 << 20;
    private static final byte[] SECRET = "0123456789abcdef0123456789abcdef".getBytes();

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

    private Map<String, String> exportOn(final Path socket, final String name) throws Exception {
        final Path secret = Files.write(dir.resolve("secret"), SECRET);
        return StatusCommand.request(StatusServer.controlSocket(socket), "migrate-export listen=127.0.0.1:0 name=" + name
            + " secret-file=" + secret, false);
    }

    /** A destination engine's source: the export {@code name} at {@code hostPort} (HOST, PORT), with a token of it. */
    private static Engine.LazySource fromExport(final String[] hostPort, final String name) {
        return new Engine.LazySource(new InetSocketAddress(hostPort[0], Integer.parseInt(hostPort[1])), name,
            TokenSource.fixed(AccessToken.mint(SECRET, name, Instant.now().plusSeconds(600))), 8L << 20, 0, Duration.ofSeconds(10), 0);
    }

    @Test
    void shouldMoveTheLiveDiskWithEveryWriteMadeAfterTheDestinationFetchedItsPage() throws Exception {
        final Path imageA = TestImage.create(dir.resolve("a.img"), IMAGE_BYTES, 9);
        final byte[] original = Files.readAllBytes(imageA);
        final Engine a = keep(Engine.start(Engine.Options.file(dir.resolve("a.sock"), imageA)));
        final VhostUserFrontend feA = keep(FrontEnds.connect(dir.resolve("a.sock")));
        final BlkClient blkA = FrontEnds.client(feA, 0);
        assertEquals(0, feA.setConfig(io.lazyblk.blk.VirtioBlk.CFG_WRITEBACK, new byte[] {0}), "the guest turns its write cache off");

        final Map<String, String> answer = exportOn(dir.resolve("a.sock"), "vm1-move");
        assertEquals("1", answer.get("ok"), answer.toString());
        assertEquals("exporting", a.status().get("migration"));
        final String[] hostPort = answer.get("listen").split(":");
        final byte[] before = TestImage.pattern(4096, 1);
        assertEquals(VirtioBlk.S_OK, blkA.write(0, before), "written before the destination starts");

        final Path imageB = dir.resolve("b.img");
        final Engine b = keep(Engine.startLazy(Engine.Options.file(dir.resolve("b.sock"), imageB),
            fromExport(hostPort, "vm1-move")));
        // B fills everything while the guest runs on A; A's guest then writes into pages B already has.
        io.lazyblk.pagemap.Await.until("B fetched every page", Duration.ofSeconds(30),
            () -> b.lazyStore() != null && b.lazyStore().localPages() == b.lazyStore().pageCount());
        final byte[] after = TestImage.pattern(8192, 2);
        assertEquals(VirtioBlk.S_OK, blkA.write(2048 + 7, after), "written after B fetched its page");
        assertEquals(VirtioBlk.S_OK, blkA.write(0, TestImage.pattern(512, 3)), "and over the first write");

        final int log = FrontEnds.startMigration(feA, FrontEnds.RAM_BYTES);
        keep(() -> LibC.close(log));
        FrontEnds.switchover(feA);
        assertEquals("switched-over", a.status().get("migration"));
        assertEquals("disk-only", a.status().get("mode"), "without shared storage A keeps its file and serves the export");

        final VhostUserFrontend feB = keep(FrontEnds.connect(dir.resolve("b.sock")));
        final BlkClient blkB = FrontEnds.client(feB, 0).timeout(Duration.ofSeconds(20));
        final byte[] expected = original.clone();
        System.arraycopy(before, 0, expected, 0, before.length);
        System.arraycopy(after, 0, expected, (2048 + 7) * 512, after.length);
        System.arraycopy(TestImage.pattern(512, 3), 0, expected, 0, 512);
        assertArrayEquals(java.util.Arrays.copyOfRange(expected, (2048 + 7) * 512, (2048 + 7) * 512 + 8192),
            blkB.read(2048 + 7, 8192).data(), "B serves A's last write, not the page it had fetched before it");
        assertArrayEquals(java.util.Arrays.copyOf(expected, 4096), blkB.read(0, 4096).data());
        assertEquals(2, Integer.parseInt(a.status().get("migration_final_pages")), "the two pages written after B fetched them");
        assertArrayEquals(new byte[] {0}, feB.getConfig(io.lazyblk.blk.VirtioBlk.CFG_WRITEBACK, 1),
            "the guest's write-through choice came along");
        assertTrue(b.lazyStore() == null || b.lazyStore().awaitDiskOnly(TimeUnit.SECONDS.toNanos(30)), "B completes");
        io.lazyblk.pagemap.Await.until("A's status says complete", Duration.ofSeconds(10),
            () -> "complete".equals(a.status().get("migration")));
        a.close();
        assertArrayEquals(expected, Files.readAllBytes(imageB), "B's file is the disk A's guest last saw");
    }

    /**
     * The source engine is killed after the switchover, before the destination asked for the final set: restarted on its
     * file and exported again under the same name (and port), it serves the same disk under the same identity with the
     * final set it recorded, and the destination finishes. Once a VM runs on the source's disk again, the record goes
     * and the restored export closes: it cannot know what the destination fetched before.
     */
    @Test
    void shouldLetTheDestinationFinishFromASourceEngineRestartedAfterTheSwitchover() throws Exception {
        final Path imageA = TestImage.create(dir.resolve("a.img"), IMAGE_BYTES, 11);
        final byte[] expected = Files.readAllBytes(imageA);
        final Engine a = Engine.start(Engine.Options.file(dir.resolve("a.sock"), imageA));
        final Map<String, String> answer;
        try {
            answer = exportOn(dir.resolve("a.sock"), "vm2-move");
            final String[] hostPort = answer.get("listen").split(":");
            final Engine b = keep(Engine.startLazy(Engine.Options.file(dir.resolve("b.sock"), dir.resolve("b.img")),
                fromExport(hostPort, "vm2-move")));
            io.lazyblk.pagemap.Await.until("B fetched every page", Duration.ofSeconds(30),
                () -> b.lazyStore() != null && b.lazyStore().localPages() == b.lazyStore().pageCount());
            try (VhostUserFrontend feA = FrontEnds.connect(dir.resolve("a.sock"))) {
                final byte[] late = TestImage.pattern(4096, 12);
                assertEquals(VirtioBlk.S_OK, FrontEnds.client(feA, 0).write(4096, late), "a write after B fetched its page");
                System.arraycopy(late, 0, expected, 4096 * 512, late.length);
                final int log = FrontEnds.startMigration(feA, FrontEnds.RAM_BYTES);
                keep(() -> LibC.close(log));
                FrontEnds.switchover(feA);
            }
            assertTrue(Files.exists(ExportRecord.beside(imageA)), "the switchover is recorded beside the image");
        } finally {
            a.close(); // the source engine dies after the switchover
        }
        final Engine a2 = keep(Engine.start(Engine.Options.file(dir.resolve("a2.sock"), imageA)));
        assertTrue(exportOn(dir.resolve("a2.sock"), "other-name").getOrDefault("error", "").contains("export it again as vm2-move"),
            "exported under another name, the record says which one");
        final Path secret = dir.resolve("secret");
        final Map<String, String> again = StatusCommand.request(StatusServer.controlSocket(dir.resolve("a2.sock")),
            "migrate-export listen=" + answer.get("listen") + " name=vm2-move secret-file=" + secret, false);
        assertEquals("1", again.get("ok"), again.toString());
        assertEquals("switched-over", a2.status().get("migration"));

        final VhostUserFrontend feB = keep(FrontEnds.connect(dir.resolve("b.sock")));
        assertArrayEquals(java.util.Arrays.copyOfRange(expected, 4096 * 512, 4096 * 512 + 4096),
            FrontEnds.client(feB, 0).timeout(Duration.ofSeconds(20)).read(4096, 4096).data(), "the write made before the switchover");
        io.lazyblk.pagemap.Await.until("A's status says complete", Duration.ofSeconds(30),
            () -> "complete".equals(a2.status().get("migration")));
        assertArrayEquals(expected, Files.readAllBytes(dir.resolve("b.img")), "B's file is the disk A's guest last saw");

        // The VM runs on A's disk again (the operator's choice): the record goes, and the restored export closes.
        try (VhostUserFrontend feA2 = FrontEnds.connect(dir.resolve("a2.sock"))) {
            assertEquals(VirtioBlk.S_OK, FrontEnds.client(feA2, 0).write(0, TestImage.pattern(512, 13)));
        }
        assertTrue(Files.notExists(ExportRecord.beside(imageA)), "the record is gone once the disk changes again");
        assertEquals("closed", a2.status().get("migration"));
        assertEquals("1", exportOn(dir.resolve("a2.sock"), "vm2-again").get("ok"), "a new export may start once that one closed");
    }

    /**
     * The migration fails after the switchover (QEMU-B died before it ran the VM): QEMU-A starts the rings again, the
     * export goes on tracking, and the next switchover hands the destination everything changed since it fetched it,
     * before the failed attempt and after.
     */
    @Test
    void shouldKeepTrackingWhenTheMigrationFailsAfterItsSwitchoverAndHandOverBothWritesNextTime() throws Exception {
        final Path imageA = TestImage.create(dir.resolve("a.img"), IMAGE_BYTES, 14);
        final byte[] expected = Files.readAllBytes(imageA);
        final Engine a = keep(Engine.start(Engine.Options.file(dir.resolve("a.sock"), imageA)));
        final VhostUserFrontend feA = keep(FrontEnds.connect(dir.resolve("a.sock")));
        final Map<String, String> answer = exportOn(dir.resolve("a.sock"), "vm3-move");
        final String[] hostPort = answer.get("listen").split(":");
        final Engine b = keep(Engine.startLazy(Engine.Options.file(dir.resolve("b.sock"), dir.resolve("b.img")),
            fromExport(hostPort, "vm3-move")));
        io.lazyblk.pagemap.Await.until("B fetched every page", Duration.ofSeconds(30),
            () -> b.lazyStore() != null && b.lazyStore().localPages() == b.lazyStore().pageCount());
        final byte[] first = TestImage.pattern(4096, 15);
        assertEquals(VirtioBlk.S_OK, FrontEnds.client(feA, 0).write(128, first));
        System.arraycopy(first, 0, expected, 128 * 512, first.length);
        final int log = FrontEnds.startMigration(feA, FrontEnds.RAM_BYTES);
        keep(() -> LibC.close(log));
        final int[] bases = FrontEnds.switchover(feA);
        assertEquals("switched-over", a.status().get("migration"));

        // QEMU-B died: QEMU-A turns logging off and runs the VM again.
        feA.setFeatures(feA.features() & ~(1L << io.lazyblk.vhost.proto.Protocol.F_LOG_ALL));
        feA.restartQueue(0, bases[0]);
        final byte[] second = TestImage.pattern(4096, 16);
        assertEquals(VirtioBlk.S_OK, FrontEnds.client(feA, 0).write(6000, second), "the guest writes on after the failed attempt");
        System.arraycopy(second, 0, expected, 6000 * 512, second.length);
        assertEquals("exporting", a.status().get("migration"));
        assertTrue(Files.notExists(ExportRecord.beside(imageA)), "no record while the VM runs here");

        feA.setFeatures(feA.features() | (1L << io.lazyblk.vhost.proto.Protocol.F_LOG_ALL));
        FrontEnds.switchover(feA);
        final VhostUserFrontend feB = keep(FrontEnds.connect(dir.resolve("b.sock")));
        final BlkClient blkB = FrontEnds.client(feB, 0).timeout(Duration.ofSeconds(20));
        assertArrayEquals(first, blkB.read(128, 4096).data(), "the write before the failed attempt");
        assertArrayEquals(second, blkB.read(6000, 4096).data(), "and the one after it");
        assertEquals(2, Integer.parseInt(a.status().get("migration_final_pages")));
        assertTrue(b.lazyStore() == null || b.lazyStore().awaitDiskOnly(TimeUnit.SECONDS.toNanos(30)), "B completes");
        a.close();
        assertArrayEquals(expected, Files.readAllBytes(dir.resolve("b.img")));
    }

    /**
     * An export in a chain would be refused by the seed's hashes, and the chain would then fill the golden image instead
     * of the VM's disk: the engine refuses to start. A destination's copy is never exported as a peer (no hashes to
     * check its pages against).
     */
    @Test
    void shouldRefuseAnExportInAChainAndNeverExportADestinationsCopyAsAPeer() throws Exception {
        final Path imageA = TestImage.create(dir.resolve("a.img"), IMAGE_BYTES, 17);
        keep(Engine.start(Engine.Options.file(dir.resolve("a.sock"), imageA)));
        final String[] hostPort = exportOn(dir.resolve("a.sock"), "vm4-move").get("listen").split(":");
        final Path golden = TestImage.create(dir.resolve("golden.raw"), IMAGE_BYTES, 18);
        final io.lazyblk.pull.provider.ImageServer provider = keep(io.lazyblk.pull.provider.ImageServer.start(
            new InetSocketAddress("127.0.0.1", 0), Map.of("vm4-move", golden), SECRET, 64 << 10,
            new io.lazyblk.pull.manifest.ManifestBuilder(dir.resolve("manifests"))));
        final TokenSource token = TokenSource.fixed(AccessToken.mint(SECRET, "vm4-move", Instant.now().plusSeconds(600)));
        final Engine.LazySource chain = new Engine.LazySource(java.util.List.of(
            SourceUri.tcp(new InetSocketAddress(hostPort[0], Integer.parseInt(hostPort[1])), "vm4-move"),
            SourceUri.tcp(new InetSocketAddress("127.0.0.1", provider.port()), "vm4-move")), java.util.List.of(token), 8L << 20, 0,
            Duration.ofSeconds(10), 0);
        final java.io.IOException refused = org.junit.jupiter.api.Assertions.assertThrows(java.io.IOException.class,
            () -> Engine.startLazy(Engine.Options.file(dir.resolve("b.sock"), dir.resolve("b.img")), chain));
        assertTrue(refused.getMessage().contains("give it as the only --source"), refused.getMessage());

        final Engine b = keep(Engine.startLazy(Engine.Options.file(dir.resolve("c.sock"), dir.resolve("c.img")),
            chain.withSources(java.util.List.of(chain.sources().get(0)), java.util.List.of(token))));
        io.lazyblk.pagemap.Await.until("the copy has every page", Duration.ofSeconds(30),
            () -> b.lazyStore() != null && b.lazyStore().localPages() == b.lazyStore().pageCount());
        final java.io.IOException notAPeer = org.junit.jupiter.api.Assertions.assertThrows(java.io.IOException.class,
            () -> PeerExport.of("c", dir.resolve("c.img")));
        assertTrue(notAPeer.getMessage().contains("live migration"), notAPeer.getMessage());
    }

    @Test
    void shouldRefuseASecondExportAndAnExportOfAnEngineThatHandedItsImageOver() throws Exception {
        final Path image = TestImage.create(dir.resolve("a.img"), IMAGE_BYTES, 10);
        keep(Engine.start(Engine.Options.file(dir.resolve("a.sock"), image)));
        assertEquals("1", exportOn(dir.resolve("a.sock"), "one").get("ok"));
        final Map<String, String> second = exportOn(dir.resolve("a.sock"), "two");
        assertTrue(second.getOrDefault("error", "").contains("already exports"), second.toString());
        final Map<String, String> bad = StatusCommand.request(StatusServer.controlSocket(dir.resolve("a.sock")),
            "migrate-export name=x", false);
        assertTrue(bad.getOrDefault("error", "").contains("needs listen="), bad.toString());
        final Map<String, String> unknown = StatusCommand.request(StatusServer.controlSocket(dir.resolve("a.sock")), "reboot", false);
        assertTrue(unknown.getOrDefault("error", "").contains("unknown request"), unknown.toString());
        // A client that sends no request (a script of an earlier release, socat) still gets the status.
        try (java.nio.channels.SocketChannel c = java.nio.channels.SocketChannel.open(java.net.StandardProtocolFamily.UNIX)) {
            c.connect(java.net.UnixDomainSocketAddress.of(StatusServer.controlSocket(dir.resolve("a.sock"))));
            final java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(1 << 16);
            while (c.read(b) >= 0) {
                // to the end: the engine closes after its answer
            }
            final String answer = new String(b.array(), 0, b.position(), java.nio.charset.StandardCharsets.UTF_8);
            assertTrue(answer.contains("mode=disk-only") && answer.contains("migration=exporting"), answer);
        }
    }
}
