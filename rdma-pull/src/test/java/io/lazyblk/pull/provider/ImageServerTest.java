package io.lazyblk.pull.provider;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ProviderProtocol.HelloStatus;
import io.lazyblk.pull.tcp.TcpPageSource;
import io.lazyblk.pull.token.AccessToken;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The provider over real TCP on loopback: no token no bytes, hostile clients lose only their own connection. */
class ImageServerTest {
    private static final byte[] SECRET = "image-server-test-secret-0123456".getBytes();
    private static final int PAGE = 16 << 10;
    private static final int PAGES = 20;

    @TempDir
    Path dir;
    private byte[] content;
    private Path image;
    private ImageServer server;
    private final Arena arena = Arena.ofShared();

    @BeforeEach
    void start() throws IOException {
        content = new byte[PAGES * PAGE - 1024]; // a short last page
        new Random(3).nextBytes(content);
        image = dir.resolve("disk.img");
        Files.write(image, content);
        server = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0),
            List.of(new ImageExport("disk", image, ManifestBuilder.build(image, PAGE, ManifestBuilder.Progress.NONE))), SECRET);
    }

    @AfterEach
    void stop() {
        server.close();
        arena.close();
    }

    private static String token(final String image) {
        return AccessToken.mint(SECRET, image, Instant.now().plus(Duration.ofHours(1)));
    }

    @Test
    void shouldRefuseEveryHelloWithoutAValidTokenForTheImageAndServeNothing() throws IOException {
        final byte[] otherSecret = "another-secret-entirely-01234567".getBytes();
        record Case(String image, String token, HelloStatus status, String says) {
        }
        final List<Case> cases = List.of(
            new Case("disk", "", HelloStatus.BAD_TOKEN, "no access token"),
            new Case("disk", "not-a-token", HelloStatus.BAD_TOKEN, "malformed access token"),
            new Case("disk", AccessToken.mint(otherSecret, "disk", Instant.now().plusSeconds(60)), HelloStatus.BAD_TOKEN, "not valid for image 'disk'"),
            new Case("disk", token("other-disk"), HelloStatus.BAD_TOKEN, "not valid for image 'disk'"),
            new Case("disk", AccessToken.mint(SECRET, "disk", Instant.now().minusSeconds(5)), HelloStatus.EXPIRED_TOKEN, "expired"),
            new Case("nope", token("nope"), HelloStatus.UNKNOWN_IMAGE, "no image 'nope'"));
        for (final Case c : cases) {
            try (RawClient client = new RawClient(server.address())) {
                final RawClient.Answer a = client.hello(c.image(), c.token());
                assertEquals(c.status().code, a.status(), c.toString());
                assertTrue(a.message().contains(c.says()), a.message());
                assertNull(a.manifest());
                assertTrue(client.closedByServer(), "the server closes after a refusal");
            }
        }
        final ImageServer.Stats s = server.stats();
        assertEquals(cases.size(), s.refused());
        assertEquals(0, s.requests());
        assertEquals(0, s.bytes());
    }

    @Test
    void shouldThrowTheProvidersRefusalTextWhenASourceConnects() {
        final ProviderRefusedException e = assertThrows(ProviderRefusedException.class,
            () -> TcpPageSource.connect(server.address(), "disk", AccessToken.mint(SECRET, "disk", Instant.now().minusSeconds(1))));
        assertEquals(HelloStatus.EXPIRED_TOKEN, e.status());
        assertTrue(e.getMessage().contains("expired") && e.getMessage().contains("'disk'"), e.getMessage());
    }

    @Test
    void shouldAnswerPipelinedRequestsInOrderWithTheFilesBytes() throws IOException {
        try (RawClient client = new RawClient(server.address())) {
            final RawClient.Answer a = client.hello("disk", token("disk"));
            assertEquals(HelloStatus.OK.code, a.status());
            assertEquals(content.length, a.manifest().size());
            final int[][] asks = {{0, 1}, {5, 3}, {PAGES - 1, 1}, {PAGES - 3, 3}, {2, 16}};
            final ByteBuffer all = ByteBuffer.allocate(16 * asks.length).order(ByteOrder.LITTLE_ENDIAN);
            for (int i = 0; i < asks.length; i++) {
                all.putLong(1000 + i).putInt(asks[i][0]).putInt(asks[i][1]);
            }
            client.send(all.flip()); // all requests in one write, before reading any answer
            for (int i = 0; i < asks.length; i++) {
                final RawClient.Response r = client.response();
                assertEquals(1000 + i, r.id());
                assertEquals(ProviderProtocol.RESPONSE_OK, r.status());
                final int from = asks[i][0] * PAGE;
                assertArrayEquals(Arrays.copyOfRange(content, from, Math.min(from + asks[i][1] * PAGE, content.length)), r.data());
            }
        }
    }

    @Test
    void shouldCloseOnlyTheConnectionThatSendsAMalformedHello() throws Exception {
        try (TcpPageSource good = TcpPageSource.connect(server.address(), "disk", token("disk"))) {
            final ByteBuffer badMagic = ProviderProtocol.encodeHello("disk", token("disk"));
            badMagic.putInt(0, 0x12345678);
            final ByteBuffer badVersion = ProviderProtocol.encodeHello("disk", token("disk"));
            badVersion.putShort(ProviderProtocol.HELLO_VERSION_OFFSET, (short) (ProviderProtocol.VERSION + 1));
            final ByteBuffer versionZero = ProviderProtocol.encodeHello("disk", token("disk"));
            versionZero.putShort(ProviderProtocol.HELLO_VERSION_OFFSET, (short) 0);
            final ByteBuffer emptyName = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putInt(ProviderProtocol.MAGIC)
                .putShort((short) 1).putShort((short) 0).flip();
            final ByteBuffer longName = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putInt(ProviderProtocol.MAGIC)
                .putShort((short) 1).putShort((short) 300).flip();
            final ByteBuffer longToken = ByteBuffer.allocate(8 + 4 + 2).order(ByteOrder.LITTLE_ENDIAN).putInt(ProviderProtocol.MAGIC)
                .putShort((short) 1).putShort((short) 4).put("disk".getBytes()).putShort((short) 600).flip();
            final ByteBuffer badUtf8 = ByteBuffer.allocate(8 + 2 + 2).order(ByteOrder.LITTLE_ENDIAN).putInt(ProviderProtocol.MAGIC)
                .putShort((short) 1).putShort((short) 2).put((byte) 0xc3).put((byte) 0x28).putShort((short) 0).flip();
            final List<ByteBuffer> hellos = List.of(badMagic, badVersion, versionZero, emptyName, longName, longToken, badUtf8);
            for (final ByteBuffer hello : hellos) {
                try (RawClient client = new RawClient(server.address())) {
                    client.send(hello);
                    final RawClient.Answer a = client.answer();
                    assertEquals(HelloStatus.MALFORMED.code, a.status(), a.message());
                    assertTrue(client.closedByServer());
                }
                assertFetches(good, 4, 2);
            }
            assertEquals(0, server.stats().bytes() - 2L * PAGE * hellos.size(), "only the good client got bytes");
        }
    }

    @Test
    void shouldCloseOnlyTheConnectionThatSendsABadRequest() throws Exception {
        final int max = ProviderProtocol.maxPagesPerRequest(PAGE);
        try (TcpPageSource good = TcpPageSource.connect(server.address(), "disk", token("disk"))) {
            final int[][] bad = {{0, 0}, {0, max + 1}, {PAGES - 1, 2}, {PAGES, 1}, {-1, 1}, {1, -1}};
            for (final int[] b : bad) {
                try (RawClient client = new RawClient(server.address())) {
                    assertEquals(HelloStatus.OK.code, client.hello("disk", token("disk")).status());
                    client.request(7, 0, 1);
                    assertEquals(7, client.response().id());
                    client.request(8, b[0], b[1]);
                    assertTrue(client.closedByServer(), "request for [" + b[0] + " +" + b[1] + ") ends the connection");
                }
                assertFetches(good, 0, 3);
            }
            assertEquals(bad.length, server.stats().protocolErrors());
        }
    }

    @Test
    void shouldRefuseARequestOfMoreThan16MiBEvenWithinThePageLimit() throws Exception {
        final Path big = dir.resolve("big.img");
        final int bigPage = 1 << 20;
        try (FileChannel ch = FileChannel.open(big, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.wrap(new byte[1]), 20L * bigPage - 1); // sparse 20 MiB
        }
        try (ImageServer s = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0),
            List.of(new ImageExport("big", big, ManifestBuilder.build(big, bigPage, ManifestBuilder.Progress.NONE))), SECRET);
             RawClient client = new RawClient(s.address())) {
            assertEquals(HelloStatus.OK.code, client.hello("big", token("big")).status());
            assertEquals(16, ProviderProtocol.maxPagesPerRequest(bigPage));
            client.request(1, 0, 17);
            assertTrue(client.closedByServer());
            assertEquals(1, s.stats().protocolErrors());
        }
    }

    @Test
    void shouldCorruptOnlyTheChosenPageOnTheWireWhenATestAsks() throws Exception {
        server.corruptServedPageForTesting("disk", 3);
        try (TcpPageSource source = TcpPageSource.connect(server.address(), "disk", token("disk"))) {
            final MemorySegment dst = fetch(source, 2, 3, PageSource.OK);
            final ByteBuffer got = dst.asByteBuffer();
            assertTrue(source.manifest().verify(2, got.slice(0, PAGE)));
            assertFalse(source.manifest().verify(3, got.slice(PAGE, PAGE)), "page 3 arrives corrupted");
            assertTrue(source.manifest().verify(4, got.slice(2 * PAGE, PAGE)));
            assertEquals((byte) ~content[3 * PAGE], got.get(PAGE));
            assertEquals(-1, MemorySegment.mismatch(dst, PAGE + 1, 2L * PAGE, MemorySegment.ofArray(content), 3L * PAGE + 1, 4L * PAGE),
                "only the first byte differs");
        }
        assertArrayEquals(content, Files.readAllBytes(image), "the file itself is untouched");
    }

    @Test
    void shouldFailFetchesPastTheEndOfAShrunkImageAndKeepServingTheRest() throws Exception {
        try (TcpPageSource source = TcpPageSource.connect(server.address(), "disk", token("disk"))) {
            try (FileChannel ch = FileChannel.open(image, StandardOpenOption.WRITE)) {
                ch.truncate(10L * PAGE);
            }
            fetch(source, PAGES - 1, 1, PageSource.FAILED);
            assertFetches(source, 9, 1);
            assertTrue(source.connected());
        }
    }

    private MemorySegment fetch(final PageSource source, final int first, final int count, final int expectStatus) throws Exception {
        final MemorySegment dst = arena.allocate((long) count * PAGE);
        final CompletableFuture<Integer> status = new CompletableFuture<>();
        assertTrue(source.fetch(first, count, dst, PageSource.DEMAND, 1, (tag, f, c, st) -> status.complete(st)));
        assertEquals(expectStatus, status.get(10, TimeUnit.SECONDS));
        return dst;
    }

    private void assertFetches(final PageSource source, final int first, final int count) throws Exception {
        final MemorySegment dst = fetch(source, first, count, PageSource.OK);
        final int from = first * PAGE;
        final byte[] expected = Arrays.copyOfRange(content, from, Math.min(from + count * PAGE, content.length));
        assertArrayEquals(expected, dst.asSlice(0, expected.length).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE));
        assertNotEquals(0, server.stats().bytes());
    }
}
