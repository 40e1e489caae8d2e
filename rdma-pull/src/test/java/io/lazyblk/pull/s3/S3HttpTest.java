package io.lazyblk.pull.s3;

import io.lazyblk.pagemap.Await;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The S3 client's own HTTP/1.1 layer: kept-alive reuse, the server closing connections (idle, or as a request
 * arrives, or mid-body), bodies longer than asked, malformed answers, chunked error bodies and timeouts, against
 * s3proxy (through S3FaultProxy) and against a canned server that answers what S3 never would.
 */
class S3HttpTest {
    private static final S3Location LOC = new S3Location("bkt", "k");
    private static final Duration WAIT = Duration.ofSeconds(10);

    @TempDir
    Path dir;

    static S3Client client(final URI endpoint, final Duration timeout) {
        return new S3Client(new S3Config("AKIDEXAMPLE", "secret", null, "us-east-1", endpoint), 2, timeout);
    }

    static byte[] bytes(final int n, final int seed) {
        final byte[] b = new byte[n];
        new Random(seed).nextBytes(b);
        return b;
    }

    /** Answers every request on a connection with a 206 of {@code body}. */
    private static void answerAll(final CannedHttpServer s, final java.io.InputStream in, final java.io.OutputStream out,
                                  final byte[] body) throws IOException {
        while (s.readHead(in) != null) {
            out.write(CannedHttpServer.partialHead(body.length, body.length, ""));
            out.write(body);
            out.flush();
        }
    }

    private static byte[] get(final S3Client c, final Arena arena, final int length) throws IOException {
        final MemorySegment dst = arena.allocate(length);
        c.getRange(LOC, 0, length, dst, 0, null);
        return dst.toArray(ValueLayout.JAVA_BYTE);
    }

    @Test
    void shouldCarryManyGetsOnOneKeptAliveConnection() throws Exception {
        final byte[] content = bytes(1 << 20, 1);
        final S3Location loc = new S3Location("bucket", "obj.raw");
        try (S3TestServer server = S3TestServer.start(dir)) {
            server.createBucket("bucket");
            server.putObject("bucket", loc.key(), content);
            try (S3FaultProxy proxy = S3FaultProxy.start(server.endpoint());
                 S3Client c = new S3Client(new S3Config(server.accessKey(), server.secretKey(), null, server.region(), proxy.endpoint()),
                     4, WAIT);
                 Arena arena = Arena.ofConfined()) {
                final MemorySegment dst = arena.allocate(256 << 10);
                for (int i = 0; i < 20; i++) {
                    final int at = i * 40_000;
                    c.getRange(loc, at, 256 << 10, dst, 0, null);
                    assertArrayEquals(Arrays.copyOfRange(content, at, at + (256 << 10)), dst.toArray(ValueLayout.JAVA_BYTE));
                }
                assertEquals(20, proxy.requests());
                assertEquals(1, proxy.maxConnectionsOpen(), "the proxy never saw a second connection");
                assertEquals(1, c.connectionsOpened(), "the client opened one connection for 20 GETs");
            }
        }
    }

    @Test
    void shouldFailAGetCutMidBodyAndServeTheNextOnAFreshConnection() throws Exception {
        final byte[] content = bytes(2 << 20, 2);
        final S3Location loc = new S3Location("bucket", "obj.raw");
        try (S3TestServer server = S3TestServer.start(dir)) {
            server.createBucket("bucket");
            server.putObject("bucket", loc.key(), content);
            try (S3FaultProxy proxy = S3FaultProxy.start(server.endpoint());
                 S3Client c = new S3Client(new S3Config(server.accessKey(), server.secretKey(), null, server.region(), proxy.endpoint()),
                     4, WAIT);
                 Arena arena = Arena.ofConfined()) {
                final MemorySegment dst = arena.allocate(1 << 20);
                c.getRange(loc, 0, 1 << 20, dst, 0, null); // a kept-alive connection first: the drop must not be retried
                proxy.dropNext(1);
                final IOException e = assertThrows(IOException.class, () -> c.getRange(loc, 1 << 20, 1 << 20, dst, 0, null));
                assertFalse(e instanceof S3Client.S3Exception, e.toString());
                assertTrue(e.getMessage().contains("closed the connection after"), e.getMessage());
                assertEquals(0, c.connectionsOpen(), "the cut connection is closed, not kept");
                c.getRange(loc, 1 << 20, 1 << 20, dst, 0, null);
                assertArrayEquals(Arrays.copyOfRange(content, 1 << 20, 2 << 20), dst.toArray(ValueLayout.JAVA_BYTE));
                assertEquals(2, c.connectionsOpened());
            }
        }
    }

    @Test
    void shouldOpenAFreshConnectionWhenTheServerClosedTheIdleOne() throws Exception {
        final byte[] body = bytes(100, 3);
        final AtomicBoolean firstClosed = new AtomicBoolean();
        final CannedHttpServer[] self = new CannedHttpServer[1];
        try (CannedHttpServer s = CannedHttpServer.start((n, sock, in, out) -> {
            if (n == 0) {
                self[0].readHead(in);
                out.write(CannedHttpServer.partialHead(100, 100, ""));
                out.write(body);
                out.flush();
                sock.close(); // the server's idle timeout, without a Connection: close
                firstClosed.set(true);
                return;
            }
            answerAll(self[0], in, out, body);
        }); S3Client c = client(s.endpoint(), WAIT); Arena arena = Arena.ofConfined()) {
            self[0] = s;
            assertArrayEquals(body, get(c, arena, 100));
            Await.until("the server closed the first connection", WAIT, firstClosed::get);
            assertArrayEquals(body, get(c, arena, 100));
            assertEquals(2, s.connections());
            assertEquals(2, s.requests(), "the closed connection was found closed before a request was sent on it");
        }
    }

    @Test
    void shouldResendOnceOnAFreshConnectionWhenAReusedOneClosesAsTheRequestArrives() throws Exception {
        final byte[] body = bytes(100, 4);
        final CannedHttpServer[] self = new CannedHttpServer[1];
        try (CannedHttpServer s = CannedHttpServer.start((n, sock, in, out) -> {
            if (n == 0) {
                self[0].readHead(in);
                out.write(CannedHttpServer.partialHead(100, 100, ""));
                out.write(body);
                out.flush();
                self[0].readHead(in); // the second request arrives as the server gives up on the connection
                return;
            }
            answerAll(self[0], in, out, body);
        }); S3Client c = client(s.endpoint(), WAIT); Arena arena = Arena.ofConfined()) {
            self[0] = s;
            assertArrayEquals(body, get(c, arena, 100));
            assertArrayEquals(body, get(c, arena, 100));
            assertEquals(2, s.connections());
            assertEquals(3, s.requests(), "sent once more, on a fresh connection");
        }
    }

    @Test
    void shouldNotResendWhenAFreshConnectionClosesBeforeAnswering() throws Exception {
        final CannedHttpServer[] self = new CannedHttpServer[1];
        try (CannedHttpServer s = CannedHttpServer.start((n, sock, in, out) -> self[0].readHead(in));
             S3Client c = client(s.endpoint(), WAIT); Arena arena = Arena.ofConfined()) {
            self[0] = s;
            final IOException e = assertThrows(IOException.class, () -> get(c, arena, 100));
            assertTrue(e.getMessage().contains("closed the connection before answering"), e.getMessage());
            assertEquals(1, s.requests(), "a fresh connection's failure is the caller's to retry");
        }
    }

    @Test
    void shouldRefuseABodyLongerThanAskedWithoutWritingPastTheAskedLength() throws Exception {
        final byte[] body = bytes(164, 5);
        final CannedHttpServer[] self = new CannedHttpServer[1];
        try (CannedHttpServer s = CannedHttpServer.start((n, sock, in, out) -> {
            while (self[0].readHead(in) != null) {
                out.write(CannedHttpServer.partialHead(100, n == 0 ? 164 : 100, ""));
                out.write(body); // 164 bytes: announced on the first connection, unannounced on the second
                out.flush();
            }
        }); S3Client c = client(s.endpoint(), WAIT); Arena arena = Arena.ofConfined()) {
            self[0] = s;
            final MemorySegment dst = arena.allocate(256);
            dst.fill((byte) 0x5a);
            final IOException announced = assertThrows(IOException.class, () -> c.getRange(LOC, 0, 100, dst, 0, null));
            assertTrue(announced.getMessage().contains("164 bytes where at most 100"), announced.getMessage());
            Await.until("the client closed the connection", WAIT, () -> s.closedByClient() == 1);
            assertUntouchedPast(dst, 100);

            // Announced as 100 but followed by 64 more: the extra bytes are refused now or found before reuse.
            try {
                c.getRange(LOC, 0, 100, dst, 0, null);
            } catch (final IOException e) {
                assertTrue(e.getMessage().contains("more bytes than"), e.getMessage());
            }
            assertUntouchedPast(dst, 100);
            Await.until("the client closed the second connection", WAIT, () -> s.closedByClient() == 2 || c.connectionsOpen() == 1);
            assertEquals(2, s.connections());
        }
    }

    private static void assertUntouchedPast(final MemorySegment dst, final int length) {
        for (long i = length; i < dst.byteSize(); i++) {
            assertEquals((byte) 0x5a, dst.get(ValueLayout.JAVA_BYTE, i), "byte " + i + " past the asked length was written");
        }
    }

    static Stream<String[]> malformedAnswers() {
        return Stream.of(
            new String[] {"HTTP/1.1 2x6 Partial Content\r\n\r\n", "malformed status line"},
            new String[] {"garbage\r\n\r\n", "malformed status line"},
            new String[] {"HTTP/1.1 99 Low\r\n\r\n", "malformed status line"},
            new String[] {"HTTP/1.1 206 OK\r\nno colon here\r\n\r\n", "malformed header line"},
            new String[] {"HTTP/1.1 206 OK\r\nX-A: 1\r\n folded\r\n\r\n", "malformed header line"},
            new String[] {"HTTP/1.1 206 OK\r\nX-A: a\u0001b\r\n\r\n", "control character"},
            new String[] {"HTTP/1.1 206 OK\r\nX-A: a\nb\r\n\r\n", "control character"},
            new String[] {"HTTP/1.1 206 OK\r\nContent-Length: 12a\r\n\r\n", "malformed Content-Length"},
            new String[] {"HTTP/1.1 206 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", "malformed Content-Length"},
            new String[] {"HTTP/1.1 206 OK\r\nContent-Length: 100\r\nContent-Length: 101\r\n\r\n", "two different Content-Lengths"},
            new String[] {"HTTP/1.1 206 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding"},
            new String[] {"HTTP/1.1 206 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", "both Content-Length"},
            new String[] {"HTTP/1.1 206 OK\r\nContent-Range: bytes 0-99/200\r\n\r\n", "without a Content-Length"},
            new String[] {"HTTP/1.1 206 OK\r\nX-Big: " + "a".repeat(20_000) + "\r\n\r\n", "head longer than"},
            new String[] {"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"},
            new String[] {"HTTP/1.1 101 Switching Protocols\r\n\r\n", "where a final answer was due"});
    }

    @ParameterizedTest
    @MethodSource("malformedAnswers")
    void shouldCloseTheConnectionAndSayWhatWasWrongWithAMalformedAnswer(final String answer, final String says) throws Exception {
        final CannedHttpServer[] self = new CannedHttpServer[1];
        try (CannedHttpServer s = CannedHttpServer.start((n, sock, in, out) -> {
            while (self[0].readHead(in) != null) {
                out.write(answer.getBytes(StandardCharsets.ISO_8859_1));
                out.flush();
            }
        }); S3Client c = client(s.endpoint(), WAIT); Arena arena = Arena.ofShared()) {
            self[0] = s;
            final IOException e = assertTimeoutPreemptively(WAIT, () -> assertThrows(IOException.class, () -> get(c, arena, 100)));
            assertFalse(e instanceof S3Client.S3Exception, e.toString());
            assertTrue(e.getMessage().contains(says), e.getMessage());
            Await.until("the client closed the connection", WAIT, () -> s.closedByClient() == 1);
            assertEquals(0, c.connectionsOpen());
        }
    }

    @Test
    void shouldReadAChunkedErrorBodyAndKeepTheConnection() throws Exception {
        final byte[] body = bytes(100, 6);
        final String xml = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>The key does not exist</Message></Error>";
        final CannedHttpServer[] self = new CannedHttpServer[1];
        try (CannedHttpServer s = CannedHttpServer.start((n, sock, in, out) -> {
            self[0].readHead(in);
            final String a = xml.substring(0, 30);
            final String b = xml.substring(30);
            out.write(("HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nContent-Type: application/xml\r\n\r\n"
                + Integer.toHexString(a.length()) + ";ext=1\r\n" + a + "\r\n" + Integer.toHexString(b.length()) + "\r\n" + b
                + "\r\n0\r\nX-Trailer: t\r\n\r\n").getBytes(StandardCharsets.ISO_8859_1));
            out.flush();
            answerAll(self[0], in, out, body);
        }); S3Client c = client(s.endpoint(), WAIT); Arena arena = Arena.ofConfined()) {
            self[0] = s;
            final S3Client.S3Exception e = assertThrows(S3Client.S3Exception.class, () -> get(c, arena, 100));
            assertEquals(404, e.status());
            assertEquals("NoSuchKey", e.code());
            assertTrue(e.getMessage().contains("The key does not exist"), e.getMessage());
            assertArrayEquals(body, get(c, arena, 100));
            assertEquals(1, s.connections(), "the connection outlived the chunked error");
        }
    }

    @Test
    void shouldKeepTheStartOfAnOverlongErrorBodyAndDropTheConnection() throws Exception {
        final byte[] body = bytes(100, 7);
        final String xml = "<Error><Code>InternalError</Code><Message>m</Message>" + " ".repeat(100_000) + "</Error>";
        final CannedHttpServer[] self = new CannedHttpServer[1];
        try (CannedHttpServer s = CannedHttpServer.start((n, sock, in, out) -> {
            if (n == 0) {
                self[0].readHead(in);
                out.write(("HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + Integer.toHexString(xml.length()) + "\r\n" + xml + "\r\n0\r\n\r\n").getBytes(StandardCharsets.ISO_8859_1));
                out.flush();
                self[0].readHead(in);
                return;
            }
            answerAll(self[0], in, out, body);
        }); S3Client c = client(s.endpoint(), WAIT); Arena arena = Arena.ofConfined()) {
            self[0] = s;
            final S3Client.S3Exception e = assertThrows(S3Client.S3Exception.class, () -> get(c, arena, 100));
            assertEquals("InternalError", e.code());
            assertTrue(e.retryable());
            assertArrayEquals(body, get(c, arena, 100));
            assertEquals(2, s.connections(), "a body past the bound is not drained: its connection is dropped");
        }
    }

    @Test
    void shouldTimeOutAServerThatNeverAnswers() throws Exception {
        final CountDownLatch done = new CountDownLatch(1);
        final CannedHttpServer[] self = new CannedHttpServer[1];
        try (CannedHttpServer s = CannedHttpServer.start((n, sock, in, out) -> {
            self[0].readHead(in);
            done.await(30, TimeUnit.SECONDS);
        }); S3Client c = client(s.endpoint(), Duration.ofMillis(300)); Arena arena = Arena.ofConfined()) {
            self[0] = s;
            final long t0 = System.nanoTime();
            final IOException e = assertThrows(IOException.class, () -> get(c, arena, 100));
            final long ms = (System.nanoTime() - t0) / 1_000_000;
            assertTrue(e.getMessage().contains("timed out"), e.getMessage());
            assertTrue(ms >= 250 && ms < 5_000, "timed out after " + ms + " ms");
            done.countDown();
        }
    }

    @Test
    void shouldEndAGetWithAnInterruptedIOExceptionWhenItsThreadIsInterrupted() throws Exception {
        final CountDownLatch done = new CountDownLatch(1);
        final CannedHttpServer[] self = new CannedHttpServer[1];
        try (CannedHttpServer s = CannedHttpServer.start((n, sock, in, out) -> {
            self[0].readHead(in);
            done.await(30, TimeUnit.SECONDS);
        }); S3Client c = client(s.endpoint(), Duration.ofSeconds(30)); Arena arena = Arena.ofShared()) {
            self[0] = s;
            final Throwable[] thrown = new Throwable[1];
            final Thread t = Thread.ofPlatform().start(() -> {
                try {
                    get(c, arena, 100);
                } catch (final Throwable e) {
                    thrown[0] = e;
                }
            });
            Await.until("the request arrived", WAIT, () -> s.requests() == 1);
            t.interrupt();
            t.join(WAIT.toMillis());
            assertFalse(t.isAlive());
            assertInstanceOf(IOException.class, thrown[0]);
            assertEquals(0, c.connectionsOpen());
            done.countDown();
        }
    }
}
