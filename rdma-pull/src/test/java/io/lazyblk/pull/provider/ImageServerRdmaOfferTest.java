package io.lazyblk.pull.provider;

import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.rdma.RdmaProbe;
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
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

/**
 * The RDMA offer exchange against a real ImageServer over real TCP on a host where RDMA is not usable: every offer
 * is answered "not available" with the probe's reason and the connection goes on serving pages; hostile control
 * requests close only their own connection, with the server serving the next client.
 */
class ImageServerRdmaOfferTest {
    private static final byte[] SECRET = "image-server-rdma-secret-0123456".getBytes();
    private static final int PAGE = 16 << 10;

    @TempDir
    Path dir;
    private byte[] content;
    private ImageServer server;

    @BeforeEach
    void start() throws IOException {
        content = new byte[8 * PAGE];
        new Random(5).nextBytes(content);
        final Path image = dir.resolve("disk.img");
        Files.write(image, content);
        server = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0),
            List.of(new ImageExport("disk", image, ManifestBuilder.build(image, PAGE, ManifestBuilder.Progress.NONE))), SECRET);
    }

    @AfterEach
    void stop() {
        server.close();
    }

    private RawClient greeted() throws IOException {
        final RawClient c = new RawClient(server.address());
        assertEquals(ProviderProtocol.HelloStatus.OK.code, c.hello("disk", AccessToken.mint(SECRET, "disk", Instant.now().plus(Duration.ofHours(1)))).status());
        return c;
    }

    @Test
    void shouldAnswerAnOfferRequestNotAvailableWithTheProbeReasonAndKeepServingPages() throws IOException {
        final RdmaProbe.Availability probe = RdmaProbe.probe();
        assumeFalse(probe.usable(), "RDMA is usable here: the server would offer it");
        try (RawClient c = greeted()) {
            c.send(ProviderProtocol.encodeControl(77, ProviderProtocol.OP_RDMA_OFFER, new byte[0]));
            final RawClient.Response r = c.response();
            assertEquals(77, r.id());
            assertEquals(ProviderProtocol.RESPONSE_RDMA_UNAVAILABLE, r.status());
            final String reason = new String(r.data(), StandardCharsets.UTF_8);
            assertTrue(reason.contains("not available") && reason.contains(probe.reason()), reason);
            c.request(5, 2, 3);
            final RawClient.Response page = c.response();
            assertEquals(ProviderProtocol.RESPONSE_OK, page.status());
            assertArrayEquals(Arrays.copyOfRange(content, 2 * PAGE, 5 * PAGE), page.data());
        }
        assertEquals(0, server.stats().protocolErrors());
    }

    @Test
    void shouldAnswerNotAvailableOverLoopbackEvenWithAnExporterThatWouldOffer() throws IOException {
        // The server owns its exporter: a second server with one that refuses exactly as the DiSNI one does on loopback.
        server.close();
        final Path image = dir.resolve("disk.img");
        server = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), null,
            List.of(new ImageExport("disk", image, ManifestBuilder.build(image, PAGE, ManifestBuilder.Progress.NONE))), SECRET,
            RdmaExporter.unavailable("no RDMA device serves loopback"));
        try (RawClient c = greeted()) {
            c.send(ProviderProtocol.encodeControl(1, ProviderProtocol.OP_RDMA_OFFER, new byte[0]));
            final RawClient.Response r = c.response();
            assertEquals(ProviderProtocol.RESPONSE_RDMA_UNAVAILABLE, r.status());
            assertTrue(new String(r.data(), StandardCharsets.UTF_8).contains("no RDMA device serves loopback"));
        }
    }

    @Test
    void shouldCloseOnlyTheConnectionOfAHostileControlRequest() throws IOException {
        record Case(String what, ByteBuffer bytes) {
        }
        final List<Case> cases = List.of(
            new Case("unknown op", control(1, 99, 0, new byte[0])),
            new Case("oversized payload", control(2, ProviderProtocol.OP_RDMA_OFFER, ProviderProtocol.MAX_CONTROL_PAYLOAD + 1, new byte[0])),
            new Case("payload length near 4 GiB", control(3, ProviderProtocol.OP_RDMA_CLAIM, -1, new byte[0])),
            new Case("offer with a payload", control(4, ProviderProtocol.OP_RDMA_OFFER, 2, new byte[2])),
            new Case("claim without an offer", control(5, ProviderProtocol.OP_RDMA_CLAIM, 6, new byte[] {10, 0, 0, 1, 1, 0})),
            new Case("claim of the wrong length", control(6, ProviderProtocol.OP_RDMA_CLAIM, 5, new byte[5])));
        long errors = 0;
        for (final Case k : cases) {
            try (RawClient c = greeted()) {
                c.send(k.bytes());
                assertTrue(c.closedByServer(), k.what() + ": the server closes the connection");
            }
            errors++;
            assertEquals(errors, awaitProtocolErrors(errors), k.what() + " counted as a protocol error");
        }
        try (RawClient c = greeted()) { // and the server still serves
            c.request(9, 0, 1);
            assertArrayEquals(Arrays.copyOfRange(content, 0, PAGE), c.response().data());
        }
    }

    @Test
    void shouldSurviveAControlRequestCutOffMidway() throws IOException {
        try (RawClient c = greeted()) {
            final ByteBuffer b = control(1, ProviderProtocol.OP_RDMA_CLAIM, 6, new byte[6]);
            c.send(b.limit(22)); // head, op and half the length field, then gone
        }
        try (RawClient c = greeted()) {
            c.request(9, 7, 1);
            assertArrayEquals(Arrays.copyOfRange(content, 7 * PAGE, 8 * PAGE), c.response().data());
        }
    }

    private long awaitProtocolErrors(final long expected) {
        final long deadline = System.nanoTime() + 10_000_000_000L;
        while (server.stats().protocolErrors() < expected && System.nanoTime() < deadline) {
            Thread.onSpinWait();
        }
        return server.stats().protocolErrors();
    }

    private static ByteBuffer control(final long id, final int op, final int length, final byte[] payload) {
        return ByteBuffer.allocate(24 + payload.length).order(ByteOrder.LITTLE_ENDIAN).putLong(id)
            .putInt(ProviderProtocol.CONTROL_MARKER).putInt(0).putInt(op).putInt(length).put(payload).flip();
    }
}
