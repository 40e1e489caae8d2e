package io.lazyblk.pull.rdma;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.onesided.OneSidedPageSource;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.provider.ProviderRefusedException;
import io.lazyblk.pull.provider.RdmaExporter;
import io.lazyblk.pull.tcp.TwoLaneTcpSource;
import io.lazyblk.pull.token.AccessToken;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

/**
 * rdma:// as the engine meets it: without RDMA (this host, or a provider that refuses, or a set-up that fails) it
 * gets a working TCP source and one log line saying why; a refused token is an error, not a fallback; with the
 * offer taken, reads go through the queue pair, destinations are registered once, and a failed READ turns the source
 * down instead of corrupting anything.
 */
class RdmaSourcesTest {
    private static final byte[] SECRET = "rdma-sources-secret-0123456789ab".getBytes();
    private static final int PAGE = 16 << 10;
    private static final int PAGES = 40;

    @TempDir
    Path dir;
    private byte[] content;
    private Path image;
    private ImageServer server;
    private final Arena arena = Arena.ofShared();

    @BeforeEach
    void createImage() throws IOException {
        content = new byte[PAGES * PAGE];
        new Random(9).nextBytes(content);
        image = dir.resolve("disk.img");
        Files.write(image, content);
    }

    @AfterEach
    void stop() {
        if (server != null) {
            server.close();
        }
        arena.close();
    }

    private ImageServer serve(final RdmaExporter rdma) throws IOException {
        server = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), null,
            List.of(new ImageExport("disk", image, ManifestBuilder.build(image, PAGE, ManifestBuilder.Progress.NONE))), SECRET, rdma);
        return server;
    }

    private static String token() {
        return AccessToken.mint(SECRET, "disk", Instant.now().plus(Duration.ofHours(1)));
    }

    /** Runs {@code action} and returns what was logged (slf4j-simple writes to System.err). */
    private static synchronized String logged(final IoAction action) throws IOException {
        final PrintStream err = System.err;
        final ByteArrayOutputStream b = new ByteArrayOutputStream();
        try {
            System.setErr(new PrintStream(b, true, StandardCharsets.UTF_8));
            action.run();
        } finally {
            System.setErr(err);
        }
        return b.toString(StandardCharsets.UTF_8);
    }

    @FunctionalInterface
    interface IoAction {
        void run() throws IOException;
    }

    private static List<String> linesOf(final String log, final String logger) {
        return log.lines().filter(l -> l.contains(logger)).toList();
    }

    /** Fetches pages [first, first + count) and checks they are the image's bytes. */
    private void assertFetches(final PageSource s, final int first, final int count) throws InterruptedException {
        final MemorySegment dst = arena.allocate((long) count * PAGE, 4096);
        final BlockingQueue<Integer> done = new ArrayBlockingQueue<>(1);
        assertTrue(s.fetch(first, count, dst, PageSource.DEMAND, 7, (tag, f, c, status) -> done.add(status)));
        final Integer status = done.poll(10, TimeUnit.SECONDS);
        assertEquals(PageSource.OK, status, "fetch status");
        assertArrayEquals(Arrays.copyOfRange(content, first * PAGE, (first + count) * PAGE), dst.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE));
    }

    @Test
    void shouldFallBackToTcpOnThisHostWithOneLineNamingTheProbeReasonAndFetch() throws Exception {
        final RdmaProbe.Availability probe = RdmaProbe.probe();
        assumeFalse(probe.usable(), "RDMA is usable on this host");
        serve(RdmaExporter.unavailable("unused"));
        final PageSource[] s = new PageSource[1];
        final String log = logged(() -> s[0] = RdmaSources.connect(server.address(), "disk", token(), Duration.ofSeconds(5)));
        try (PageSource source = s[0]) {
            assertInstanceOf(TwoLaneTcpSource.class, source);
            final List<String> lines = linesOf(log, "RdmaSources");
            assertEquals(1, lines.size(), "exactly one line says why: " + log);
            assertTrue(lines.get(0).contains("INFO") && lines.get(0).contains("using tcp:// because") && lines.get(0).contains(probe.reason()),
                lines.get(0));
            assertFetches(source, 3, 4);
        }
    }

    @Test
    void shouldFallBackToTcpWithTheProvidersRefusalWhenItOffersNoRdma() throws Exception {
        serve(RdmaExporter.unavailable("no RDMA device serves 127.0.0.1"));
        final RdmaSources.Opened[] o = new RdmaSources.Opened[1];
        final String log = logged(() -> o[0] = RdmaSources.open(server.address(), "disk", token(), FakeFabric.TIMEOUT, FakeFabric.usable(),
            (offer, control, channel, window, t) -> {
                throw new AssertionError("no offer, so no connect");
            }));
        try (PageSource source = o[0].source()) {
            assertFalse(o[0].rdma());
            assertInstanceOf(TwoLaneTcpSource.class, source);
            final List<String> lines = linesOf(log, "RdmaSources");
            assertEquals(1, lines.size(), log);
            assertTrue(lines.get(0).contains("WARN") && lines.get(0).contains("the provider did not offer RDMA")
                && lines.get(0).contains("no RDMA device serves 127.0.0.1"), lines.get(0));
            assertFetches(source, 0, 2);
        }
    }

    @Test
    void shouldFallBackToTcpWhenTheRdmaConnectionCannotBeMade() throws Exception {
        serve(new FakeFabric(1 << 20, 1 << 20).exporter());
        final RdmaSources.Opened[] o = new RdmaSources.Opened[1];
        final String log = logged(() -> o[0] = RdmaSources.open(server.address(), "disk", token(), FakeFabric.TIMEOUT, FakeFabric.usable(),
            (offer, control, channel, window, t) -> {
                throw new IOException("resolving " + offer.cm() + ": RDMA_CM_EVENT_ADDR_ERROR (status -110) instead of RDMA_CM_EVENT_ADDR_RESOLVED");
            }));
        try (PageSource source = o[0].source()) {
            assertInstanceOf(TwoLaneTcpSource.class, source);
            final String line = linesOf(log, "RdmaSources").get(0);
            assertTrue(line.contains("RDMA set-up failed") && line.contains("ADDR_ERROR"), line);
            assertFetches(source, 39, 1);
        }
    }

    @Test
    void shouldFallBackWhenAProviderWithoutControlRequestsClosesTheConnection() throws Exception {
        serve(RdmaExporter.unavailable("unused"));
        // A stand-in for an older provider: greets like the real one (it is one, behind this relay), then hangs up on
        // the first control request, as a provider that sees an out-of-range request does.
        try (ServerSocket old = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            final Thread relay = Thread.ofVirtual().start(() -> relayHelloThenClose(old));
            final RdmaSources.Opened[] o = new RdmaSources.Opened[1];
            final InetSocketAddress oldAddress = new InetSocketAddress(InetAddress.getLoopbackAddress(), old.getLocalPort());
            final String log = logged(() -> {
                try {
                    o[0] = RdmaSources.open(oldAddress, "disk", token(), Duration.ofSeconds(2), FakeFabric.usable(), new FakeFabric(1, 1).connector());
                } catch (final IOException e) {
                    // the fallback also goes to oldAddress, which the relay no longer serves: expected here
                    assertTrue(e.getMessage() != null);
                }
            });
            relay.join();
            final String line = linesOf(log, "RdmaSources").get(0);
            assertTrue(line.contains("closed the connection at the RDMA offer request"), line);
        }
    }

    private void relayHelloThenClose(final ServerSocket old) {
        try (Socket client = old.accept(); Socket real = new Socket(server.address().getAddress(), server.address().getPort())) {
            client.setSoTimeout(5000);
            real.setSoTimeout(5000);
            final var in = client.getInputStream();
            final byte[] head = in.readNBytes(8);
            final int nameLength = (head[6] & 0xff) | (head[7] & 0xff) << 8;
            final byte[] name = in.readNBytes(nameLength + 2);
            final int tokenLength = (name[nameLength] & 0xff) | (name[nameLength + 1] & 0xff) << 8;
            final byte[] tok = in.readNBytes(tokenLength);
            real.getOutputStream().write(head);
            real.getOutputStream().write(name);
            real.getOutputStream().write(tok);
            final var rin = real.getInputStream();
            final byte[] answer = rin.readNBytes(6);
            final int msg = (answer[4] & 0xff) | (answer[5] & 0xff) << 8;
            final byte[] m = rin.readNBytes(msg);
            final byte[] len = rin.readNBytes(4);
            final int manifest = java.nio.ByteBuffer.wrap(len).order(java.nio.ByteOrder.LITTLE_ENDIAN).getInt();
            final byte[] man = rin.readNBytes(manifest);
            client.getOutputStream().write(answer);
            client.getOutputStream().write(m);
            client.getOutputStream().write(len);
            client.getOutputStream().write(man);
            in.readNBytes(24); // the control request
        } catch (final IOException e) {
            // the test checks what the client logged
        }
    }

    @Test
    void shouldNotFallBackButFailWhenTheProviderRefusesTheToken() throws Exception {
        serve(RdmaExporter.unavailable("unused"));
        final String expired = AccessToken.mint(SECRET, "disk", Instant.now().minusSeconds(1));
        assertThrows(ProviderRefusedException.class,
            () -> RdmaSources.open(server.address(), "disk", expired, FakeFabric.TIMEOUT, FakeFabric.usable(), new FakeFabric(1, 1).connector()));
        assertThrows(ProviderRefusedException.class, () -> RdmaSources.connect(server.address(), "disk", expired, Duration.ofSeconds(5)));
    }

    @Test
    void shouldRegisterEachDestinationBufferOnceAcrossManyReads() throws Exception {
        final FakeFabric fabric = new FakeFabric(256 << 10, 256 << 10);
        serve(fabric.exporter());
        final RdmaSources.Opened o = RdmaSources.open(server.address(), "disk", token(), FakeFabric.TIMEOUT, FakeFabric.usable(), fabric.connector());
        try (PageSource source = o.source()) {
            assertInstanceOf(OneSidedPageSource.class, source);
            final MemorySegment[] buffers = {arena.allocate(PAGE, 4096), arena.allocate(PAGE, 4096), arena.allocate(PAGE, 4096)};
            final BlockingQueue<Integer> done = new ArrayBlockingQueue<>(64);
            for (int i = 0; i < 60; i++) {
                final MemorySegment b = buffers[i % buffers.length];
                final int page = (i * 7) % PAGES;
                assertTrue(source.fetch(page, 1, b, PageSource.BACKGROUND, i, (tag, f, c, status) -> done.add(status)));
                assertEquals(PageSource.OK, done.poll(10, TimeUnit.SECONDS));
                assertArrayEquals(Arrays.copyOfRange(content, page * PAGE, (page + 1) * PAGE), b.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE));
            }
            assertEquals(buffers.length, fabric.registrations.get(), "one registration per buffer, not per read");
            assertEquals(0, fabric.badKeys.get());
        }
    }

    @Test
    void shouldFailTheReadAndGoDownWhenAReadCompletesInError() throws Exception {
        final FakeFabric fabric = new FakeFabric(256 << 10, 256 << 10);
        fabric.failRead = 2;
        serve(fabric.exporter());
        final RdmaSources.Opened o = RdmaSources.open(server.address(), "disk", token(), FakeFabric.TIMEOUT, FakeFabric.usable(), fabric.connector());
        try (PageSource source = o.source()) {
            assertFetches(source, 1, 1);
            final BlockingQueue<Integer> done = new ArrayBlockingQueue<>(4);
            assertTrue(source.fetch(2, 1, arena.allocate(PAGE, 4096), PageSource.DEMAND, 1, (tag, f, c, status) -> done.add(status)));
            final Integer status = done.poll(10, TimeUnit.SECONDS);
            assertNotNull(status);
            assertEquals(PageSource.FAILED, (int) status, "the read in error fails its fetch (the engine retries elsewhere)");
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (source.connected() && System.nanoTime() < deadline) {
                Thread.onSpinWait();
            }
            assertFalse(source.connected(), "a queue pair in error takes the source down");
            assertTrue(fabric.last.stopped, "the queue pair is destroyed before the fetches still posted are failed");
            assertFalse(source.fetch(3, 1, arena.allocate(PAGE, 4096), PageSource.DEMAND, 2, (tag, f, c, st) -> { }));
        }
    }
}
