package io.lazyblk.pull.s3;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.Map;

/**
 * One HTTP/1.1 request and its response on an {@link HttpConnection}: the request head written from the connection's
 * reusable buffer, the response head parsed in the connection's own array, and the body framed by Content-Length (or
 * chunked, for S3's error bodies). A 200/206 GET with a destination reads its body straight into the destination,
 * never more than the bytes asked for; any other body is kept up to {@link S3Client#MAX_ERROR_BODY} bytes.
 *
 * <p>Everything from the server is hostile: the head is bounded ({@value HttpConnection#MAX_HEAD_BYTES} bytes),
 * numbers are bounded, control characters, folded lines, conflicting lengths and unknown codings are refused. Any
 * such answer throws an {@link IOException} saying what was wrong; the caller then closes the connection.
 */
final class HttpExchange {
    /** Content-Length digits accepted: 18 fit a long, far above any object S3 stores (5 TiB). */
    private static final int MAX_LENGTH_DIGITS = 18;
    /** Hex digits of a chunk size: 8 reach 4 GiB, far above an error body. */
    private static final int MAX_CHUNK_DIGITS = 8;
    /** Informational (1xx) answers skipped before the real one; S3 sends none unasked. */
    private static final int MAX_INTERIM = 4;

    private HttpExchange() {
    }

    /**
     * Sends the request and reads the response into {@code r}. Returns whether the connection may carry another
     * request. {@code started[0]} is set once a response byte arrived (a failure before that on a reused connection
     * may be retried on a fresh one).
     */
    static boolean run(final HttpConnection c, final String method, final String target, final Map<String, String> headers,
                       final Map<String, String> auth, final byte[] body, final MemorySegment dst, final long dstOffset,
                       final int length, final long deadline, final S3Client.Response r, final boolean[] started)
        throws IOException {
        writeRequest(c, method, target, headers, auth, body, deadline);
        final ByteBuffer in = c.in;
        if (in.position() > 0) {
            throw new IOException("S3 at " + c.host() + " sent bytes before the request");
        }
        int headEnd;
        Head h;
        int interim = 0;
        for (;;) {
            headEnd = readHead(c, deadline, started);
            h = parseHead(c, headEnd);
            if (h.status >= 200) {
                break;
            }
            if (h.status == 101 || ++interim > MAX_INTERIM) {
                throw new IOException("S3 at " + c.host() + " answered with status " + h.status + " where a final answer was due");
            }
            consume(in, headEnd);
        }
        consume(in, headEnd);
        r.status = h.status;
        r.etag = h.etag;
        r.contentRange = h.contentRange;
        boolean reusable = h.keepAlive;
        final boolean noBody = "HEAD".equals(method) || h.status == 204 || h.status == 304;
        if (noBody) {
            r.bodyLength = 0;
        } else if (dst != null && "GET".equals(method) && (h.status == 200 || h.status == 206)) {
            if (h.chunked || h.contentLength < 0) {
                throw new IOException("S3 at " + c.host() + " answered a ranged GET without a Content-Length");
            }
            if (h.contentLength > length) {
                throw new IOException("S3 at " + c.host() + " sent a body of " + h.contentLength + " bytes where at most " + length
                    + " were asked");
            }
            readInto(c, dst.asSlice(dstOffset, h.contentLength).asByteBuffer(), deadline);
            r.bodyLength = h.contentLength;
        } else {
            reusable &= readSmall(c, h, r, deadline);
        }
        if (c.holdsUnreadBytes()) {
            throw new IOException("S3 at " + c.host() + " sent more bytes than its response's framing announced");
        }
        return reusable;
    }

    private static void writeRequest(final HttpConnection c, final String method, final String target,
                                     final Map<String, String> headers, final Map<String, String> auth, final byte[] body,
                                     final long deadline) throws IOException {
        final ByteBuffer out = c.requestHead();
        try {
            ascii(out, method).put((byte) ' ');
            ascii(out, target);
            ascii(out, " HTTP/1.1");
            header(out, "host", headers.get("host")); // first, and exactly what SigV4 signed
            for (final Map.Entry<String, String> e : headers.entrySet()) {
                if (!"host".equals(e.getKey())) {
                    header(out, e.getKey(), e.getValue());
                }
            }
            for (final Map.Entry<String, String> e : auth.entrySet()) {
                header(out, e.getKey(), e.getValue());
            }
            if (body != null) {
                header(out, "content-length", Integer.toString(body.length));
            }
            out.put((byte) '\r').put((byte) '\n').put((byte) '\r').put((byte) '\n');
        } catch (final java.nio.BufferOverflowException e) {
            throw new IOException("the request head of " + method + " " + c.host() + " is longer than "
                + HttpConnection.REQUEST_HEAD_BYTES + " bytes");
        }
        c.writeFully(out.flip(), deadline);
        if (body != null && body.length > 0) {
            c.writeFully(ByteBuffer.wrap(body), deadline);
        }
    }

    /** CRLF, then {@code name: value}. */
    private static void header(final ByteBuffer out, final String name, final String value) throws IOException {
        out.put((byte) '\r').put((byte) '\n');
        ascii(out, name).put((byte) ':').put((byte) ' ');
        ascii(out, value);
    }

    /** Latin-1 bytes of {@code s}; a character beyond it or a control character (CR, LF) would corrupt the request. */
    private static ByteBuffer ascii(final ByteBuffer out, final String s) throws IOException {
        for (int i = 0; i < s.length(); i++) {
            final char ch = s.charAt(i);
            if (ch > 0xff || (ch < ' ' && ch != '\t') || ch == 0x7f) {
                throw new IOException("a request line or header holds a character HTTP cannot carry (U+" + Integer.toHexString(ch) + ")");
            }
            out.put((byte) ch);
        }
        return out;
    }

    /** Reads until the head's blank line; returns the offset just past it in {@code c.in}. */
    private static int readHead(final HttpConnection c, final long deadline, final boolean[] started) throws IOException {
        final ByteBuffer in = c.in;
        int scanned = 0;
        for (;;) {
            for (int i = Math.max(0, scanned - 3); i + 3 < in.position(); i++) {
                if (in.get(i) == '\r' && in.get(i + 1) == '\n' && in.get(i + 2) == '\r' && in.get(i + 3) == '\n') {
                    return i + 4;
                }
            }
            scanned = in.position();
            if (!in.hasRemaining()) {
                throw new IOException("S3 at " + c.host() + " sent a response head longer than " + in.capacity() + " bytes");
            }
            final int n = c.read(in, deadline);
            if (n < 0) {
                throw new IOException("S3 at " + c.host() + " closed the connection " + (in.position() == 0 ? "before answering"
                    : "in the middle of a response head"));
            }
            started[0] = true;
        }
    }

    /** What the response head said. */
    private static final class Head {
        int status;
        boolean keepAlive;
        long contentLength = -1;
        boolean chunked;
        String etag;
        String contentRange;
    }

    private static Head parseHead(final HttpConnection c, final int headEnd) throws IOException {
        final byte[] b = c.head;
        c.in.get(0, b, 0, headEnd);
        final int end = headEnd - 2; // the last line's CRLF ends at the blank line's start
        int eol = lineEnd(c, b, 0, end);
        // Status line: HTTP/1.x SSS[ reason]
        if (eol < 12 || !startsWith(b, 0, "HTTP/1.") || (b[7] != '0' && b[7] != '1') || b[8] != ' '
            || !digit(b[9]) || !digit(b[10]) || !digit(b[11]) || (eol > 12 && b[12] != ' ')) {
            throw malformed(c, "status line", b, 0, eol);
        }
        final Head h = new Head();
        h.status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
        if (h.status < 100) {
            throw malformed(c, "status line", b, 0, eol);
        }
        h.keepAlive = b[7] == '1';
        for (int at = eol + 2; at < end; at = eol + 2) {
            eol = lineEnd(c, b, at, end);
            int colon = at;
            while (colon < eol && token(b[colon])) {
                colon++;
            }
            if (colon == at || colon == eol || b[colon] != ':') {
                throw malformed(c, "header line", b, at, eol);
            }
            int v = colon + 1;
            while (v < eol && (b[v] == ' ' || b[v] == '\t')) {
                v++;
            }
            int ve = eol;
            while (ve > v && (b[ve - 1] == ' ' || b[ve - 1] == '\t')) {
                ve--;
            }
            if (name(b, at, colon, "content-length")) {
                final long len = number(c, b, v, ve);
                if (h.contentLength >= 0 && h.contentLength != len) {
                    throw new IOException("S3 at " + c.host() + " sent two different Content-Lengths");
                }
                h.contentLength = len;
            } else if (name(b, at, colon, "transfer-encoding")) {
                if (ve - v != 7 || !name(b, v, ve, "chunked")) {
                    throw malformed(c, "Transfer-Encoding (only chunked is understood)", b, at, eol);
                }
                h.chunked = true;
            } else if (name(b, at, colon, "connection")) {
                if (contains(b, v, ve, "close")) {
                    h.keepAlive = false;
                }
            } else if (name(b, at, colon, "etag")) {
                h.etag = new String(b, v, ve - v, java.nio.charset.StandardCharsets.ISO_8859_1);
            } else if (name(b, at, colon, "content-range")) {
                h.contentRange = new String(b, v, ve - v, java.nio.charset.StandardCharsets.ISO_8859_1);
            }
        }
        if (h.chunked && h.contentLength >= 0) {
            throw new IOException("S3 at " + c.host() + " sent both Content-Length and Transfer-Encoding (a response that"
                + " could be framed two ways)");
        }
        return h;
    }

    /** The end (the CR) of the line starting at {@code at}; refuses control characters and a bare CR or LF. */
    private static int lineEnd(final HttpConnection c, final byte[] b, final int at, final int end) throws IOException {
        for (int i = at; i < end; i++) {
            final int ch = b[i] & 0xff;
            if (ch == '\r' && b[i + 1] == '\n') {
                return i;
            }
            if ((ch < ' ' && ch != '\t') || ch == 0x7f) {
                throw malformed(c, "line (a control character)", b, at, i);
            }
        }
        return end;
    }

    private static long number(final HttpConnection c, final byte[] b, final int from, final int to) throws IOException {
        if (to == from || to - from > MAX_LENGTH_DIGITS) {
            throw malformed(c, "Content-Length", b, from, to);
        }
        long n = 0;
        for (int i = from; i < to; i++) {
            if (!digit(b[i])) {
                throw malformed(c, "Content-Length", b, from, to);
            }
            n = n * 10 + (b[i] - '0');
        }
        return n;
    }

    private static IOException malformed(final HttpConnection c, final String what, final byte[] b, final int from, final int to) {
        final int shown = Math.min(to - from, 80);
        final StringBuilder s = new StringBuilder(shown);
        for (int i = from; i < from + shown; i++) {
            final int ch = b[i] & 0xff;
            s.append(ch >= ' ' && ch < 0x7f ? (char) ch : '?');
        }
        return new IOException("S3 at " + c.host() + " sent a malformed " + what + ": \"" + s + (to - from > shown ? "..." : "") + "\"");
    }

    private static boolean digit(final byte b) {
        return b >= '0' && b <= '9';
    }

    /** RFC 9110 tchar. */
    private static boolean token(final byte b) {
        return b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || "!#$%&'*+-.^_`|~".indexOf(b) >= 0;
    }

    private static boolean startsWith(final byte[] b, final int at, final String s) {
        for (int i = 0; i < s.length(); i++) {
            if (b[at + i] != s.charAt(i)) {
                return false;
            }
        }
        return true;
    }

    /** Case-insensitive equality of {@code b[from, to)} and lower-case {@code s}. */
    private static boolean name(final byte[] b, final int from, final int to, final String s) {
        if (to - from != s.length()) {
            return false;
        }
        for (int i = 0; i < s.length(); i++) {
            final int ch = b[from + i];
            if ((ch >= 'A' && ch <= 'Z' ? ch + 32 : ch) != s.charAt(i)) {
                return false;
            }
        }
        return true;
    }

    /** Whether the comma-separated list {@code b[from, to)} holds the token {@code s} (any case). */
    private static boolean contains(final byte[] b, final int from, final int to, final String s) {
        int at = from;
        while (at < to) {
            int e = at;
            while (e < to && b[e] != ',') {
                e++;
            }
            int f = at;
            int g = e;
            while (f < g && (b[f] == ' ' || b[f] == '\t')) {
                f++;
            }
            while (g > f && (b[g - 1] == ' ' || b[g - 1] == '\t')) {
                g--;
            }
            if (name(b, f, g, s)) {
                return true;
            }
            at = e + 1;
        }
        return false;
    }

    /** Drops the first {@code n} bytes of {@code in} (write mode, data in [0, position)). */
    private static void consume(final ByteBuffer in, final int n) {
        in.flip().position(n);
        in.compact();
    }

    /** Exactly {@code view.remaining()} body bytes into {@code view}: those already read first, then from the connection. */
    private static void readInto(final HttpConnection c, final ByteBuffer view, final long deadline) throws IOException {
        final ByteBuffer in = c.in;
        final int total = view.remaining();
        if (in.position() > 0) {
            final int take = Math.min(in.position(), view.remaining());
            view.put(view.position(), in, 0, take);
            view.position(view.position() + take);
            consume(in, take);
        }
        while (view.hasRemaining()) {
            if (c.read(view, deadline) < 0) {
                throw new IOException("S3 at " + c.host() + " closed the connection after " + (total - view.remaining()) + " of "
                    + total + " body bytes");
            }
        }
    }

    /**
     * A non-data body into the connection's bounded array, then copied out for {@code r}. Returns false when the
     * connection cannot carry another request: the body ran to the end of the connection, or was longer than the
     * bound (the rest is not read).
     */
    private static boolean readSmall(final HttpConnection c, final Head h, final S3Client.Response r, final long deadline)
        throws IOException {
        final int max = c.small.length;
        int kept = 0;
        long total = 0;
        boolean reusable = true;
        if (h.chunked) {
            for (;;) {
                final long size = chunkSize(c, deadline);
                if (size == 0) {
                    while (line(c, deadline) > 0) {
                        // trailer fields: ignored
                    }
                    break;
                }
                if (kept + size > max) {
                    total = kept + size;
                    reusable = false;
                    kept += take(c, max - kept, kept, deadline);
                    break;
                }
                kept += take(c, (int) size, kept, deadline);
                total = kept;
                if (line(c, deadline) != 0) {
                    throw new IOException("S3 at " + c.host() + " sent a chunk longer than its size");
                }
            }
        } else if (h.contentLength >= 0) {
            total = h.contentLength;
            final int want = (int) Math.min(max, h.contentLength);
            kept = take(c, want, 0, deadline);
            reusable = h.contentLength <= max;
        } else {
            // Neither length nor chunks: the body runs to the end of the connection (bounded here).
            reusable = false;
            for (;;) {
                fill(c, deadline);
                if (c.in.position() == 0) {
                    break;
                }
                final int n = Math.min(c.in.position(), max - kept);
                c.in.get(0, c.small, kept, n);
                consume(c.in, c.in.position());
                kept += n;
                if (kept == max) {
                    break;
                }
            }
            total = kept;
        }
        if (!reusable) {
            c.in.clear(); // whatever else arrived is dropped with the connection
        }
        r.bodyLength = total;
        r.errorBody = Arrays.copyOf(c.small, kept);
        return reusable;
    }

    /** Reads more into {@code c.in}; at the end of the stream leaves it as it was. */
    private static boolean fill(final HttpConnection c, final long deadline) throws IOException {
        if (!c.in.hasRemaining()) {
            throw new IOException("S3 at " + c.host() + " sent a line longer than " + c.in.capacity() + " bytes");
        }
        return c.read(c.in, deadline) >= 0;
    }

    /** Exactly {@code n} body bytes into {@code c.small} at {@code at}; returns n. */
    private static int take(final HttpConnection c, final int n, final int at, final long deadline) throws IOException {
        int got = 0;
        while (got < n) {
            if (c.in.position() == 0 && !fill(c, deadline)) {
                throw new IOException("S3 at " + c.host() + " closed the connection in the middle of a response body");
            }
            final int k = Math.min(c.in.position(), n - got);
            c.in.get(0, c.small, at + got, k);
            consume(c.in, k);
            got += k;
        }
        return n;
    }

    /** Reads one CRLF-ended line into {@code c.head} (bounded); returns its length. */
    private static int line(final HttpConnection c, final long deadline) throws IOException {
        for (;;) {
            final int p = c.in.position();
            for (int i = 0; i + 1 < p; i++) {
                if (c.in.get(i) == '\r' && c.in.get(i + 1) == '\n') {
                    c.in.get(0, c.head, 0, i);
                    consume(c.in, i + 2);
                    return i;
                }
            }
            if (!fill(c, deadline)) {
                throw new IOException("S3 at " + c.host() + " closed the connection in the middle of a chunked body");
            }
        }
    }

    private static long chunkSize(final HttpConnection c, final long deadline) throws IOException {
        final int len = line(c, deadline);
        final byte[] b = c.head;
        int end = 0;
        while (end < len && b[end] != ';' && b[end] != ' ' && b[end] != '\t') {
            end++;
        }
        if (end == 0 || end > MAX_CHUNK_DIGITS) {
            throw malformed(c, "chunk size", b, 0, len);
        }
        long size = 0;
        for (int i = 0; i < end; i++) {
            final int d = Character.digit(b[i], 16);
            if (d < 0) {
                throw malformed(c, "chunk size", b, 0, len);
            }
            size = size * 16 + d;
        }
        return size;
    }
}
