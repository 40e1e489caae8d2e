package io.lazyblk.pull.provider;

import io.lazyblk.pagemap.Await;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ProviderProtocol.HelloStatus;
import io.lazyblk.pull.shm.ShmPageSource;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.sys.UnixSocket;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.locks.LockSupport;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The provider's connection limits over real TCP (peers told apart by loopback address: Linux routes all of 127/8 to
 * lo) and a real UNIX socket (peers told apart by uid), and its idle timeout for authenticated clients.
 */
class ImageServerLimitsTest {
    private static final byte[] SECRET = "image-server-limits-secret-01234".getBytes();
    private static final int PAGE = 16 << 10;
    /** 4 MiB: one request of all of it is 256 pages, the most a request may carry. */
    private static final int PAGES = 256;

    @TempDir
    Path dir;
    private byte[] content;
    private Path image;
    private ImageServer server;
    private final List<AutoCloseable> clients = new ArrayList<>();

    @BeforeEach
    void image() throws IOException {
        content = new byte[PAGES * PAGE];
        new Random(11).nextBytes(content);
        image = Files.write(dir.resolve("disk.img"), content);
    }

    @AfterEach
    void stop() throws Exception {
        for (final AutoCloseable c : clients) {
            c.close();
        }
        if (server != null) {
            server.close();
        }
    }

    private void serve(final ImageServer.Limits limits, final Path unix) throws IOException {
        server = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), unix,
            List.of(new ImageExport("disk", image, ManifestBuilder.build(image, PAGE, ManifestBuilder.Progress.NONE))), SECRET, limits);
    }

    private static String token() {
        return AccessToken.mint(SECRET, "disk", Instant.now().plus(Duration.ofHours(1)));
    }

    private static InetAddress loopback(final int last) throws IOException {
        return InetAddress.getByAddress(new byte[] {127, 0, 0, (byte) last});
    }

    /** A client from {@code from} that completed its hello, kept open until the test ends. */
    private RawClient greeted(final InetAddress from) throws IOException {
        final RawClient c = new RawClient(server.address(), from);
        clients.add(c);
        assertEquals(HelloStatus.OK.code, c.hello("disk", token()).status(), "served from " + from);
        return c;
    }

    private void assertServes(final RawClient c, final long id, final int first, final int count) throws IOException {
        c.request(id, first, count);
        final RawClient.Response r = c.response();
        assertEquals(id, r.id());
        assertEquals(ProviderProtocol.RESPONSE_OK, r.status());
        assertArrayEquals(Arrays.copyOfRange(content, first * PAGE, (first + count) * PAGE), r.data());
    }

    @Test
    void shouldRefuseTheConnectionPastThePerPeerLimitFromOneAddressWhileAnotherAddressIsServed() throws Exception {
        serve(new ImageServer.Limits(16, 3, Duration.ofMinutes(5)), null);
        final List<RawClient> one = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            one.add(greeted(loopback(1)));
        }
        try (RawClient fourth = new RawClient(server.address(), loopback(1))) {
            assertTrue(fourth.closedByServer(), "the 4th connection from 127.0.0.1 is closed at once");
        }
        assertEquals(1, server.stats().limited());
        // An engine's source is told why, whether its hello met the close (end of stream) or a reset (sent after it).
        for (int i = 0; i < 20; i++) {
            final IOException e = assertThrows(IOException.class, () -> io.lazyblk.pull.tcp.TcpPageSource.connect(server.address(), "disk",
                token()).close());
            assertTrue(e.getMessage().contains("closed the connection during the hello (is it at its connection limit"), e.getMessage());
        }
        assertEquals(21, server.stats().limited());
        assertServes(greeted(loopback(2)), 1, 5, 2); // another host still gets in
        assertServes(one.get(0), 2, 0, 1); // and the first host's connections are untouched

        one.get(1).close(); // its slot comes back once the server sees the close
        Await.until("the server released the closed connection's slot", Duration.ofSeconds(10), () -> server.stats().open() == 3);
        assertServes(greeted(loopback(1)), 3, 7, 1);
        assertEquals(21, server.stats().limited());
    }

    @Test
    void shouldRefuseAnyPeerOnceTheServerHoldsItsLimitInAll() throws Exception {
        serve(new ImageServer.Limits(4, 3, Duration.ofMinutes(5)), null);
        for (int i = 0; i < 3; i++) {
            greeted(loopback(1));
        }
        greeted(loopback(2));
        try (RawClient fifth = new RawClient(server.address(), loopback(3))) {
            assertTrue(fifth.closedByServer(), "a new peer finds no slot once 4 are taken");
        }
        assertEquals(1, server.stats().limited());
        assertEquals(4, server.stats().open());
    }

    @Test
    void shouldLimitUnixSocketClientsPerUidAndServeAgainOnceOneLeaves() throws Exception {
        final Path sock = dir.resolve("cache.sock");
        serve(new ImageServer.Limits(16, 2, Duration.ofMinutes(5)), sock);
        // Two clients of this uid that connect and say nothing: each holds a slot (for up to the hello timeout).
        final UnixSocket a = UnixSocket.connect(sock);
        clients.add(a);
        final UnixSocket b = UnixSocket.connect(sock);
        clients.add(b);
        Await.until("both silent clients accepted", Duration.ofSeconds(10), () -> server.stats().open() == 2);
        final IOException refused = assertThrows(IOException.class,
            () -> ShmPageSource.connect(sock, "disk", token(), Duration.ofSeconds(5)).close());
        assertFalse(refused instanceof ProviderRefusedException, "closed before its hello is read: " + refused);
        assertTrue(refused.getMessage().contains("closed the connection during the hello (is it at its connection limit"),
            refused.getMessage());
        assertEquals(1, server.stats().limited());
        assertEquals(0, server.stats().handovers());

        a.close();
        Await.until("the server released the closed connection's slot", Duration.ofSeconds(10), () -> server.stats().open() == 1);
        ShmPageSource.connect(sock, "disk", token(), Duration.ofSeconds(5)).close();
        assertEquals(1, server.stats().handovers());
        // A TCP client is another peer (its IP address), not this uid: the UNIX socket's clients do not lock it out.
        assertServes(greeted(loopback(1)), 1, 0, 1);
    }

    @Test
    void shouldCloseAnIdleAuthenticatedClientAfterTheTimeoutButNotOneThatKeepsAsking() throws Exception {
        serve(new ImageServer.Limits(16, 16, Duration.ofSeconds(1)), null);
        final RawClient idle = greeted(loopback(1));
        final RawClient active = greeted(loopback(2));
        final long t0 = System.nanoTime();
        int asked = 0;
        // The active client asks every 200 ms (a fifth of the timeout) until the idle one has been closed, and a while on.
        while (server.stats().idleClosed() == 0 || System.nanoTime() - t0 < 3_000_000_000L) {
            assertTrue(System.nanoTime() - t0 < 10_000_000_000L, "the idle client is closed within 10 s");
            assertServes(active, asked, asked % PAGES, 1);
            asked++;
            LockSupport.parkNanos(200_000_000L);
        }
        assertTrue(idle.closedByServer(), "the idle client was closed");
        assertTrue(System.nanoTime() - t0 >= 1_000_000_000L, "not before its timeout");
        assertEquals(1, server.stats().idleClosed(), "only the idle one");
        assertServes(active, asked, 9, 3);
    }

    /**
     * A client reading by RDMA sends nothing over TCP, and its RDMA access lives as long as its TCP connection: the
     * idle timeout must not end it. (A hand-written exporter that grants every offer: this host may have no RDMA.)
     */
    @Test
    void shouldNotCloseAClientHoldingRdmaAccessForSendingNothing() throws Exception {
        final java.util.concurrent.atomic.AtomicInteger revoked = new java.util.concurrent.atomic.AtomicInteger();
        final RdmaExporter granting = new RdmaExporter() {
            @Override
            public Grant offer(final String name, final Path file, final long length, final InetSocketAddress local, final String peer) {
                final RdmaOffer offer = new RdmaOffer(new InetSocketAddress(local.getAddress(), 4791), length, 0x1000, length,
                    (int) length, new int[] {42});
                return new Grant() {
                    @Override
                    public RdmaOffer offer() {
                        return offer;
                    }

                    @Override
                    public void claim(final InetSocketAddress source) {
                    }

                    @Override
                    public void close() {
                        revoked.incrementAndGet();
                    }
                };
            }

            @Override
            public String describe() {
                return "a test exporter that grants every offer";
            }

            @Override
            public void close() {
            }
        };
        server = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), null,
            List.of(new ImageExport("disk", image, ManifestBuilder.build(image, PAGE, ManifestBuilder.Progress.NONE))), SECRET,
            granting, new ImageServer.Limits(16, 16, Duration.ofSeconds(1)));
        final RawClient rdma = greeted(loopback(1));
        rdma.send(ProviderProtocol.encodeControl(5, ProviderProtocol.OP_RDMA_OFFER, new byte[0]));
        assertEquals(ProviderProtocol.RESPONSE_RDMA_OFFER, rdma.response().status());
        final RawClient clock = greeted(loopback(2)); // as above: closed as idle once the RDMA client was silent as long
        Await.until("the idle client closed", Duration.ofSeconds(10), () -> server.stats().idleClosed() == 1);
        assertTrue(clock.closedByServer());
        assertEquals(0, revoked.get(), "the RDMA access is still granted");
        assertServes(rdma, 6, 1, 1);
        assertEquals(1, server.stats().idleClosed());
    }

    @Test
    void shouldNotCloseAClientThatIsSilentWhileItsRequestsAreOutstanding() throws Exception {
        serve(new ImageServer.Limits(16, 16, Duration.ofSeconds(1)), null);
        final RawClient busy = greeted(loopback(1));
        // 16 requests of 4 MiB, far more than the socket buffers hold: the server blocks writing them while the client,
        // its requests sent, reads nothing for longer than the idle timeout.
        final int requests = 16;
        final ByteBuffer all = ByteBuffer.allocate(16 * requests).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < requests; i++) {
            all.putLong(100 + i).putInt(0).putInt(PAGES);
        }
        busy.send(all.flip());
        // Another client, greeted after the busy one went silent, times the wait: once it is closed as idle, the busy
        // one has been silent longer than the timeout, and the watchdog has looked at it since.
        final RawClient clock = greeted(loopback(2));
        Await.until("the idle client closed", Duration.ofSeconds(10), () -> server.stats().idleClosed() == 1);
        assertTrue(clock.closedByServer());
        for (int i = 0; i < requests; i++) {
            final RawClient.Response r = busy.response();
            assertEquals(100 + i, r.id());
            assertEquals(ProviderProtocol.RESPONSE_OK, r.status());
            assertEquals(content.length, r.data().length);
        }
        assertEquals(1, server.stats().idleClosed(), "the busy client was not closed");
        assertServes(busy, 1, 3, 1);
    }
}
