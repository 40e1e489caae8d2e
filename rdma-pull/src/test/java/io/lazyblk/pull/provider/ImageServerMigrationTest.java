package io.lazyblk.pull.provider;

import io.lazyblk.pagemap.Await;
import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pull.token.AccessToken;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The provider's migration ops over real TCP on loopback, from a client that can say anything. */
class ImageServerMigrationTest {
    private static final byte[] SECRET = "migration-test-secret-0123456789".getBytes();
    private static final int PAGE = 4096;
    private static final int PAGES = 16;

    @TempDir
    Path dir;
    private Path disk;
    private byte[] content;
    private ImageServer server;

    @BeforeEach
    void image() throws IOException {
        content = new byte[PAGES * PAGE];
        new Random(9).nextBytes(content);
        disk = dir.resolve("live.img");
        Files.write(disk, content);
    }

    @AfterEach
    void stop() {
        if (server != null) {
            server.close();
        }
    }

    private ImageServer serve(final MigrationControl control, final ImageServer.Limits limits) throws IOException {
        final ImageExport live = new ImageExport("vm1", disk, Manifest.live(content.length, PAGE, new byte[32]));
        server = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), null,
            List.of(control == null ? live : live.withMigration(control)), SECRET, limits);
        return server;
    }

    private RawClient greeted() throws IOException {
        final RawClient c = new RawClient(server.address());
        final RawClient.Answer a = c.hello("vm1", AccessToken.mint(SECRET, "vm1", Instant.now().plus(Duration.ofHours(1))));
        assertEquals(ProviderProtocol.HelloStatus.OK.code, a.status(), a.message());
        assertTrue(a.manifest().isLive(), "the live manifest crosses the wire as one");
        return c;
    }

    @Test
    void shouldAnswerUnavailableWithAReasonForAnExportThatIsNotMigratingAndKeepServingIt() throws IOException {
        serve(null, ImageServer.Limits.defaults());
        try (RawClient c = greeted()) {
            for (final int op : new int[] {ProviderProtocol.OP_MIGRATION_FINAL, ProviderProtocol.OP_MIGRATION_DONE}) {
                c.send(ProviderProtocol.encodeControl(7 + op, op, new byte[0]));
                final RawClient.Response r = c.response();
                assertEquals(7 + op, r.id());
                assertEquals(ProviderProtocol.RESPONSE_MIGRATION_UNAVAILABLE, r.status());
                assertTrue(new String(r.data(), StandardCharsets.UTF_8).contains("not the disk of a migrating engine"));
            }
            c.request(1, 3, 1);
            final RawClient.Response page = c.response();
            assertEquals(ProviderProtocol.RESPONSE_OK, page.status(), "the connection still serves pages");
            assertArrayEquals(java.util.Arrays.copyOfRange(content, 3 * PAGE, 4 * PAGE), page.data(), "live pages as the file holds them");
        }
        assertEquals(0, server.stats().protocolErrors());
    }

    @Test
    void shouldCloseTheConnectionOfAMigrationRequestWithAPayload() throws Exception {
        final TestMigration control = new TestMigration(0);
        serve(control, ImageServer.Limits.defaults());
        for (final int op : new int[] {ProviderProtocol.OP_MIGRATION_FINAL, ProviderProtocol.OP_MIGRATION_DONE}) {
            try (RawClient c = greeted()) {
                c.send(ProviderProtocol.encodeControl(1, op, new byte[] {1, 2, 3, 4}));
                assertTrue(c.closedByServer(), "op " + op + " with a payload is a protocol error");
            }
        }
        Await.until("two protocol errors counted", Duration.ofSeconds(10), () -> server.stats().protocolErrors() == 2);
        assertEquals(0, control.asked.get());
        assertEquals(0, control.completed.get());
    }

    @Test
    void shouldAnswerPendingThenTheFinalSetAndRecordTheDestinationsCompletion() throws IOException {
        final TestMigration control = new TestMigration(1_000_000L);
        serve(control, ImageServer.Limits.defaults());
        try (RawClient c = greeted()) {
            c.send(ProviderProtocol.encodeControl(1, ProviderProtocol.OP_MIGRATION_FINAL, new byte[0]));
            final RawClient.Response pending = c.response();
            assertEquals(ProviderProtocol.RESPONSE_MIGRATION_PENDING, pending.status());
            assertEquals(0, pending.data().length);
            control.switchOver(15, 0, 7);
            c.send(ProviderProtocol.encodeControl(2, ProviderProtocol.OP_MIGRATION_FINAL, new byte[0]));
            final RawClient.Response fin = c.response();
            assertEquals(2, fin.id());
            assertEquals(ProviderProtocol.RESPONSE_MIGRATION_FINAL, fin.status());
            final ByteBuffer le = ByteBuffer.wrap(fin.data()).order(ByteOrder.LITTLE_ENDIAN);
            assertEquals(4 + 12, fin.data().length, "flags, then three pages");
            assertEquals(ProviderProtocol.FINAL_FLAG_GUEST_WRITEBACK, le.getInt(), "the control's default: the guest's write cache on");
            assertEquals(List.of(15, 0, 7), List.of(le.getInt(), le.getInt(), le.getInt()));
            c.send(ProviderProtocol.encodeControl(3, ProviderProtocol.OP_MIGRATION_DONE, new byte[0]));
            final RawClient.Response done = c.response();
            assertEquals(ProviderProtocol.RESPONSE_MIGRATION_DONE, done.status());
            assertEquals(1, control.completed.get());
        }
    }

    @Test
    void shouldSendAWriteThroughGuestsModeAsAClearFlagsWordBeforeAnEmptyFinalSet() throws IOException {
        final TestMigration control = new TestMigration(0);
        control.writeback = false;
        serve(control, ImageServer.Limits.defaults());
        control.switchOver();
        try (RawClient c = greeted()) {
            c.send(ProviderProtocol.encodeControl(1, ProviderProtocol.OP_MIGRATION_FINAL, new byte[0]));
            final RawClient.Response fin = c.response();
            assertEquals(ProviderProtocol.RESPONSE_MIGRATION_FINAL, fin.status());
            assertArrayEquals(new byte[4], fin.data(), "flags 0 (write-through) and no pages");
        }
    }

    @Test
    void shouldRefuseToHandOnAFinalSetTheEngineGotWrongAndKeepTheConnection() throws IOException {
        final TestMigration control = new TestMigration(0);
        serve(control, ImageServer.Limits.defaults());
        control.switchOver(3, PAGES, 3);
        try (RawClient c = greeted()) {
            c.send(ProviderProtocol.encodeControl(1, ProviderProtocol.OP_MIGRATION_FINAL, new byte[0]));
            final RawClient.Response r = c.response();
            assertEquals(ProviderProtocol.RESPONSE_MIGRATION_UNAVAILABLE, r.status());
            assertTrue(new String(r.data(), StandardCharsets.UTF_8).contains("outside an export of 16 pages"));
        }
    }

    @Test
    void shouldKeepAConnectionWaitingForTheSwitchoverPastTheIdleTimeout() throws IOException {
        // Idle timeout 1 s, the watchdog looks every second; the wait lasts 3 s and answers pending on the open connection.
        final TestMigration control = new TestMigration(3_000_000_000L);
        serve(control, new ImageServer.Limits(8, 8, Duration.ofSeconds(1)));
        try (RawClient c = greeted()) {
            c.send(ProviderProtocol.encodeControl(1, ProviderProtocol.OP_MIGRATION_FINAL, new byte[0]));
            assertEquals(ProviderProtocol.RESPONSE_MIGRATION_PENDING, c.response().status());
        }
        assertEquals(0, server.stats().idleClosed());
    }

    @Test
    void shouldEndAPendingSwitchoverWaitPromptlyWhenTheServerCloses() throws Exception {
        final TestMigration control = new TestMigration(Long.MAX_VALUE); // waits the server's whole 20 s bound
        serve(control, ImageServer.Limits.defaults());
        try (RawClient c = greeted()) {
            c.send(ProviderProtocol.encodeControl(1, ProviderProtocol.OP_MIGRATION_FINAL, new byte[0]));
            Await.until("the server waits for the switchover", Duration.ofSeconds(10), () -> control.asked.get() == 1);
            final long start = System.nanoTime();
            server.close();
            final long tookMs = (System.nanoTime() - start) / 1_000_000;
            assertTrue(tookMs < 5_000, "close() took " + tookMs + " ms with a 20 s wait pending");
            assertFalse(control.waiter.isAlive(), "no connection thread left behind");
            assertEquals(1, control.interrupted.get(), "the wait was interrupted, not run out");
            assertTrue(c.closedByServer());
        }
    }
}
