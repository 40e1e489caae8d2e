package io.lazyblk.pull.s3;

import io.lazyblk.pull.s3.FaultProxyHttp.Framing;
import io.lazyblk.pull.s3.FaultProxyHttp.Head;
import org.junit.jupiter.api.Test;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.net.ProtocolException;
import java.nio.charset.StandardCharsets;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The proxy's HTTP framing on what s3proxy never sends (trailers, chunk extensions, HTTP/1.0, malformed heads) and on
 * where a cut falls; S3FaultProxyTest covers what it does send (s3proxy's error documents come chunked).
 */
class S3FaultProxyFramingTest {
    private static InputStream in(final String s) {
        return new ByteArrayInputStream(s.getBytes(StandardCharsets.ISO_8859_1));
    }

    private static final String CHUNKED = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + "a;ext=1\r\n0123456789\r\n3\r\nabc\r\n0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\nNEXT";

    @Test
    void chunkedBodyIsCopiedToItsLastChunkAndTrailersByteForByte() throws Exception {
        final InputStream src = in(CHUNKED);
        final Head h = Head.read(src, false);
        final Framing f = h.responseFraming("GET");
        assertEquals(Framing.Kind.CHUNKED, f.kind());
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        assertTrue(FaultProxyHttp.copyBody(f, src, out, false));
        assertEquals(CHUNKED.substring(CHUNKED.indexOf("\r\n\r\n") + 4, CHUNKED.length() - 4),
            out.toString(StandardCharsets.ISO_8859_1));
        assertEquals("NEXT", new String(src.readAllBytes(), StandardCharsets.ISO_8859_1), "the next message is left");
    }

    @Test
    void cutChunkedBodyStopsHalfwayThroughItsFirstChunk() throws Exception {
        final InputStream src = in(CHUNKED);
        final Framing f = Head.read(src, false).responseFraming("GET");
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        assertFalse(FaultProxyHttp.copyBody(f, src, out, true));
        assertEquals("a;ext=1\r\n01234", out.toString(StandardCharsets.ISO_8859_1));
    }

    @Test
    void headAndNoContentResponsesHaveNoBodyWhateverTheirHeadersSay() throws Exception {
        final Head h = Head.read(in("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"), false);
        assertEquals(Framing.NONE, h.responseFraming("HEAD"));
        assertEquals(new Framing(Framing.Kind.LENGTH, 5000), h.responseFraming("GET"));
        assertEquals(Framing.NONE, Head.read(in("HTTP/1.1 204 No Content\r\n\r\n"), false).responseFraming("DELETE"));
        assertEquals(Framing.Kind.UNTIL_CLOSE, Head.read(in("HTTP/1.1 200 OK\r\n\r\n"), false).responseFraming("GET").kind());
    }

    @Test
    void keepAliveFollowsVersionAndConnectionHeader() throws Exception {
        assertTrue(Head.read(in("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), true).keepAlive());
        assertFalse(Head.read(in("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"), true).keepAlive());
        assertFalse(Head.read(in("GET / HTTP/1.0\r\n\r\n"), true).keepAlive());
        assertTrue(Head.read(in("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), true).keepAlive());
    }

    @Test
    void malformedFramingIsRefusedNotGuessed() throws Exception {
        assertThrows(ProtocolException.class,
            () -> Head.read(in("PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), true));
        assertThrows(ProtocolException.class,
            () -> Head.read(in("PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), true).requestFraming());
        final InputStream negative = in("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabc");
        final Framing f = Head.read(negative, false).responseFraming("GET");
        assertThrows(ProtocolException.class, () -> FaultProxyHttp.copyBody(f, negative, new ByteArrayOutputStream(), false));
        assertNull(Head.read(in(""), true), "a connection closed between requests is not an error");
    }
}
