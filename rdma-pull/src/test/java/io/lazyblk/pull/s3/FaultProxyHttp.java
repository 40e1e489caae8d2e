package io.lazyblk.pull.s3;

import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.ProtocolException;
import java.nio.charset.StandardCharsets;
import java.util.Locale;

/**
 * The HTTP/1.1 framing S3FaultProxy needs (RFC 9112): where a message head ends, and how long its body is. It copies
 * bytes as they came and interprets only what framing requires; everything else in a head passes through unread.
 */
final class FaultProxyHttp {
    /** Far above any S3 head (a SigV4 request's is under 2 KiB): only garbage hits it. */
    static final int MAX_HEAD_BYTES = 64 * 1024;
    /** A chunk-size line is hex digits and perhaps extensions: 4 KiB is garbage. */
    private static final int MAX_CHUNK_LINE = 4096;
    private static final int COPY_BUFFER = 64 * 1024;

    private FaultProxyHttp() {
    }

    /** How a message's body is delimited. */
    record Framing(Kind kind, long length) {
        enum Kind { NONE, LENGTH, CHUNKED, UNTIL_CLOSE }

        static final Framing NONE = new Framing(Kind.NONE, 0);

        boolean hasBody() {
            return kind == Kind.CHUNKED || kind == Kind.UNTIL_CLOSE || (kind == Kind.LENGTH && length > 0);
        }
    }

    /** A message head (start line and headers), its raw bytes kept to forward as they came. */
    record Head(byte[] raw, String method, int status, boolean http10, long contentLength, String transferEncoding,
                boolean connectionClose, boolean connectionKeepAlive, boolean expectContinue) {

        /** Whether the sender keeps the connection open after this message (HTTP/1.0 only when it says keep-alive). */
        boolean keepAlive() {
            return http10 ? connectionKeepAlive && !connectionClose : !connectionClose;
        }

        /** A request's body framing (RFC 9112 6.3: chunked, else Content-Length, else none). */
        Framing requestFraming() throws ProtocolException {
            if (transferEncoding != null) {
                if (!isChunked()) {
                    throw new ProtocolException("request transfer coding not ending in chunked: " + transferEncoding);
                }
                return new Framing(Framing.Kind.CHUNKED, -1);
            }
            return contentLength >= 0 ? new Framing(Framing.Kind.LENGTH, contentLength) : Framing.NONE;
        }

        /** A response's body framing, given its request's method (a HEAD response never has one). */
        Framing responseFraming(final String requestMethod) {
            if ("HEAD".equals(requestMethod) || status / 100 == 1 || status == 204 || status == 304) {
                return Framing.NONE;
            }
            if (transferEncoding != null) {
                return isChunked() ? new Framing(Framing.Kind.CHUNKED, -1) : new Framing(Framing.Kind.UNTIL_CLOSE, -1);
            }
            return contentLength >= 0 ? new Framing(Framing.Kind.LENGTH, contentLength)
                : new Framing(Framing.Kind.UNTIL_CLOSE, -1);
        }

        private boolean isChunked() {
            final String[] codings = transferEncoding.split(",");
            return codings[codings.length - 1].trim().equalsIgnoreCase("chunked");
        }

        /**
         * Reads one head; null if the stream ends before its first byte (the peer closed between messages). Empty
         * lines before a request are skipped (RFC 9112 2.2).
         */
        static Head read(final InputStream in, final boolean request) throws IOException {
            final ByteArrayOutputStream raw = new ByteArrayOutputStream(1024);
            int b = in.read();
            while (request && (b == '\r' || b == '\n')) {
                b = in.read();
            }
            if (b < 0) {
                return null;
            }
            // The head ends at the first CRLF CRLF: track the last four bytes.
            int last4 = 0;
            while (true) {
                if (b < 0) {
                    throw new EOFException("connection closed inside a message head");
                }
                raw.write(b);
                last4 = (last4 << 8) | b;
                if (last4 == 0x0d0a0d0a) {
                    break;
                }
                if (raw.size() > MAX_HEAD_BYTES) {
                    throw new ProtocolException("message head over " + MAX_HEAD_BYTES + " bytes");
                }
                b = in.read();
            }
            return parse(raw.toByteArray(), request);
        }

        private static Head parse(final byte[] raw, final boolean request) throws ProtocolException {
            final String[] lines = new String(raw, 0, raw.length - 4, StandardCharsets.ISO_8859_1).split("\r\n", -1);
            final String[] start = lines[0].split(" ", 3);
            if (start.length < 2) {
                throw new ProtocolException("bad start line: " + lines[0]);
            }
            final String version = request ? (start.length == 3 ? start[2] : "") : start[0];
            if (!version.equals("HTTP/1.1") && !version.equals("HTTP/1.0")) {
                throw new ProtocolException("not HTTP/1.x: " + lines[0]);
            }
            final String method = request ? start[0] : null;
            int status = -1;
            if (!request) {
                try {
                    status = Integer.parseInt(start[1]);
                } catch (final NumberFormatException e) {
                    throw new ProtocolException("bad status: " + lines[0]);
                }
            }
            long contentLength = -1;
            String transferEncoding = null;
            boolean close = false;
            boolean keepAlive = false;
            boolean expectContinue = false;
            for (int i = 1; i < lines.length; i++) {
                final String line = lines[i];
                final int colon = line.indexOf(':');
                if (colon <= 0 || line.charAt(0) == ' ' || line.charAt(0) == '\t') {
                    throw new ProtocolException("bad header line: " + line);
                }
                final String name = line.substring(0, colon).trim().toLowerCase(Locale.ROOT);
                final String value = line.substring(colon + 1).trim();
                switch (name) {
                    case "content-length" -> {
                        final long n;
                        try {
                            n = Long.parseLong(value);
                        } catch (final NumberFormatException e) {
                            throw new ProtocolException("bad Content-Length: " + value);
                        }
                        if (n < 0 || (contentLength >= 0 && contentLength != n)) {
                            throw new ProtocolException("bad or conflicting Content-Length: " + value);
                        }
                        contentLength = n;
                    }
                    case "transfer-encoding" ->
                        transferEncoding = transferEncoding == null ? value : transferEncoding + ", " + value;
                    case "connection" -> {
                        for (final String token : value.split(",")) {
                            close |= token.trim().equalsIgnoreCase("close");
                            keepAlive |= token.trim().equalsIgnoreCase("keep-alive");
                        }
                    }
                    case "expect" -> expectContinue |= value.equalsIgnoreCase("100-continue");
                    default -> { }
                }
            }
            return new Head(raw, method, status, version.equals("HTTP/1.0"), contentLength, transferEncoding, close,
                keepAlive, expectContinue);
        }
    }

    /**
     * Copies one body framed as {@code framing} from {@code in} to {@code out}, byte for byte (chunk-size lines and
     * trailers included). With {@code cut}, stops halfway: after half of a Content-Length body, or after half of the
     * first chunk's data. Returns whether the whole body was copied.
     */
    static boolean copyBody(final Framing framing, final InputStream in, final OutputStream out, final boolean cut)
        throws IOException {
        final byte[] buf = new byte[COPY_BUFFER];
        switch (framing.kind()) {
            case NONE -> {
                return true;
            }
            case LENGTH -> {
                final long n = framing.length();
                copyExactly(in, out, cut ? n / 2 : n, buf);
                return !cut || n == 0;
            }
            case CHUNKED -> {
                while (true) {
                    final byte[] line = readLine(in);
                    out.write(line);
                    final long size = chunkSize(line);
                    if (size == 0) {
                        // The last chunk, then trailer lines up to an empty one.
                        byte[] trailer;
                        do {
                            trailer = readLine(in);
                            out.write(trailer);
                        } while (trailer.length > 2);
                        return true;
                    }
                    if (cut) {
                        copyExactly(in, out, size / 2, buf);
                        return false;
                    }
                    copyExactly(in, out, size, buf);
                    final byte[] crlf = readLine(in);
                    if (crlf.length != 2) {
                        throw new ProtocolException("chunk data longer than its size");
                    }
                    out.write(crlf);
                }
            }
            case UNTIL_CLOSE -> {
                int n;
                if (cut) {
                    n = in.read(buf);
                    if (n > 0) {
                        out.write(buf, 0, Math.max(1, n / 2));
                    }
                    return false;
                }
                while ((n = in.read(buf)) >= 0) {
                    out.write(buf, 0, n);
                }
                return true;
            }
            default -> throw new AssertionError(framing);
        }
    }

    private static void copyExactly(final InputStream in, final OutputStream out, long n, final byte[] buf)
        throws IOException {
        while (n > 0) {
            final int r = in.read(buf, 0, (int) Math.min(buf.length, n));
            if (r < 0) {
                throw new EOFException("connection closed with " + n + " body bytes still to come");
            }
            out.write(buf, 0, r);
            n -= r;
        }
    }

    /** One line up to and including its CRLF. */
    private static byte[] readLine(final InputStream in) throws IOException {
        final ByteArrayOutputStream line = new ByteArrayOutputStream(16);
        int prev = -1;
        while (true) {
            final int b = in.read();
            if (b < 0) {
                throw new EOFException("connection closed inside a chunked body");
            }
            line.write(b);
            if (prev == '\r' && b == '\n') {
                return line.toByteArray();
            }
            if (line.size() > MAX_CHUNK_LINE) {
                throw new ProtocolException("chunk line over " + MAX_CHUNK_LINE + " bytes");
            }
            prev = b;
        }
    }

    private static long chunkSize(final byte[] line) throws ProtocolException {
        String s = new String(line, 0, line.length - 2, StandardCharsets.ISO_8859_1);
        final int ext = s.indexOf(';');
        if (ext >= 0) {
            s = s.substring(0, ext);
        }
        s = s.trim();
        // 15 hex digits: any size a long holds without overflowing.
        if (s.isEmpty() || s.length() > 15 || !s.chars().allMatch(c -> Character.digit(c, 16) >= 0)) {
            throw new ProtocolException("bad chunk size: " + s);
        }
        try {
            return Long.parseLong(s, 16);
        } catch (final NumberFormatException e) {
            throw new ProtocolException("bad chunk size: " + s);
        }
    }
}
