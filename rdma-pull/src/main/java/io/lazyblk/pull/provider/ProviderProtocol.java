package io.lazyblk.pull.provider;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageGeometry;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;

/**
 * The image provider's TCP protocol, version 1. All integers little endian.
 *
 * <pre>
 * client hello     magic "LZBP" u32 | version u16 | name length u16 | name (1..255 bytes UTF-8)
 *                  | token length u16 | token (0..512 bytes ASCII)
 * server answer    status u32 ({@link HelloStatus}) | message length u16 | message (UTF-8, at most 1024 bytes)
 *                  | if OK: manifest length u32 | {@link Manifest#encode()} bytes
 *                  a refusal is followed by the server closing the connection.
 * request          id u64 | first page u32 | page count u32                                  (16 bytes, pipelined)
 * response         id u64 | status u32 ({@link #RESPONSE_OK} or {@link #RESPONSE_READ_ERROR}) | length u32
 *                  | length bytes of page data (the image's last page may be short)
 * </pre>
 *
 * The client may send many requests without waiting; the server answers each exactly once, in the order received.
 * A request with count 0, more than {@link #MAX_PAGES_PER_REQUEST} pages or {@link #MAX_BYTES_PER_REQUEST} bytes, or
 * a range past the image's end is a protocol error: the server closes that connection. The client's request ids are
 * its own business; the server echoes them.
 */
public final class ProviderProtocol {
    /** "LZBP": the bytes 'L' 'Z' 'B' 'P' read as a little-endian u32. */
    public static final int MAGIC = 0x50425a4c;
    public static final int VERSION = 1;

    public static final int HELLO_MAGIC_OFFSET = 0;
    public static final int HELLO_VERSION_OFFSET = 4;
    public static final int HELLO_NAME_LENGTH_OFFSET = 6;
    public static final int HELLO_NAME_OFFSET = 8;
    /** Bytes of the hello before the name. */
    public static final int HELLO_FIXED_BYTES = HELLO_NAME_OFFSET;
    public static final int HELLO_TOKEN_LENGTH_BYTES = 2;
    public static final int MAX_NAME_BYTES = 255;
    public static final int MAX_TOKEN_BYTES = 512;

    public static final int ANSWER_STATUS_OFFSET = 0;
    public static final int ANSWER_MESSAGE_LENGTH_OFFSET = 4;
    public static final int ANSWER_MESSAGE_OFFSET = 6;
    public static final int MAX_MESSAGE_BYTES = 1024;
    public static final int ANSWER_MANIFEST_LENGTH_BYTES = 4;
    /** The largest manifest a client accepts: {@link Manifest#MAX_PAGES} checksums (64 MiB). */
    public static final long MAX_MANIFEST_BYTES = Manifest.HEADER_BYTES + 4L * Manifest.MAX_PAGES;

    public static final int REQUEST_BYTES = 16;
    public static final int REQUEST_ID_OFFSET = 0;
    public static final int REQUEST_FIRST_PAGE_OFFSET = 8;
    public static final int REQUEST_COUNT_OFFSET = 12;
    /** At most this many pages per request... */
    public static final int MAX_PAGES_PER_REQUEST = 256;
    /** ...and at most this many bytes: bounds what one request makes the server send before the next. */
    public static final int MAX_BYTES_PER_REQUEST = 16 << 20;

    public static final int RESPONSE_HEADER_BYTES = 16;
    public static final int RESPONSE_ID_OFFSET = 0;
    public static final int RESPONSE_STATUS_OFFSET = 8;
    public static final int RESPONSE_LENGTH_OFFSET = 12;
    /** Status of a response carrying the requested bytes. */
    public static final int RESPONSE_OK = 0;
    /** The server could not read the range (the image shrank or failed); length is 0; the connection stays up. */
    public static final int RESPONSE_READ_ERROR = 1;

    /**
     * On the provider's UNIX socket ({@code image-server --unix}) the hello and answer are the same; after an OK
     * answer the server sends this one byte with the image's read-only fd attached ({@code SCM_RIGHTS}). The client
     * maps the image and closes the connection.
     */
    public static final byte SHM_FD_MESSAGE = 'F';

    private ProviderProtocol() {
    }

    /** The server's answer to a hello. */
    public enum HelloStatus {
        OK(0), UNKNOWN_IMAGE(1), BAD_TOKEN(2), EXPIRED_TOKEN(3), MALFORMED(4);

        public final int code;

        HelloStatus(final int code) {
            this.code = code;
        }

        /** The status with this wire code, or null. */
        public static HelloStatus ofCode(final int code) {
            for (final HelloStatus s : values()) {
                if (s.code == code) {
                    return s;
                }
            }
            return null;
        }
    }

    /** Most pages one request may carry at this page size. */
    public static int maxPagesPerRequest(final int pageSize) {
        return Math.min(MAX_PAGES_PER_REQUEST, MAX_BYTES_PER_REQUEST / pageSize);
    }

    /** True if {@code [first, first + count)} (both read as unsigned u32) is a request this image can answer. */
    public static boolean validRange(final PageGeometry g, final long first, final long count) {
        return count >= 1 && count <= maxPagesPerRequest(g.pageSize()) && first < g.pageCount() && first + count <= g.pageCount();
    }

    /** Bytes of data in the answer to a valid request: whole pages, but the image's last page may be short. */
    public static int rangeBytes(final PageGeometry g, final int first, final int count) {
        return (int) (Math.min(g.pageStart(first) + (long) count * g.pageSize(), g.imageSize()) - g.pageStart(first));
    }

    /** Reads exactly {@code n} bytes from a provider connection (little endian), or throws EOFException. */
    @FunctionalInterface
    public interface ExactReader {
        ByteBuffer read(int n) throws java.io.IOException;
    }

    /**
     * Reads the server's answer to a hello and returns the manifest; a refusal throws {@link ProviderRefusedException}
     * with the server's message, anything malformed an IOException naming {@code provider}.
     */
    public static Manifest readAnswer(final ExactReader in, final String provider, final String image) throws java.io.IOException {
        final ByteBuffer head = in.read(ANSWER_MESSAGE_OFFSET);
        final int code = head.getInt(ANSWER_STATUS_OFFSET);
        final int messageLength = Short.toUnsignedInt(head.getShort(ANSWER_MESSAGE_LENGTH_OFFSET));
        final HelloStatus status = HelloStatus.ofCode(code);
        if (status == null || messageLength > MAX_MESSAGE_BYTES) {
            throw new java.io.IOException("provider " + provider + " answered with status " + code + " and a " + messageLength
                + "-byte message: not a lazyblk provider, or another protocol version");
        }
        final ByteBuffer mb = in.read(messageLength);
        final byte[] msg = new byte[messageLength];
        mb.get(0, msg);
        final String message = new String(msg, StandardCharsets.UTF_8);
        if (status != HelloStatus.OK) {
            throw new ProviderRefusedException(provider, image, status, message);
        }
        final long manifestLength = Integer.toUnsignedLong(in.read(ANSWER_MANIFEST_LENGTH_BYTES).getInt(0));
        if (manifestLength > MAX_MANIFEST_BYTES) {
            throw new java.io.IOException("provider " + provider + " announced a manifest of " + manifestLength + " bytes (at most "
                + MAX_MANIFEST_BYTES + ")");
        }
        try {
            return Manifest.decode(in.read((int) manifestLength));
        } catch (final IllegalArgumentException e) {
            throw new java.io.IOException("provider " + provider + " sent a bad manifest for '" + image + "': " + e.getMessage(), e);
        }
    }

    /** The client hello for {@code image} and {@code token}; throws if either exceeds the protocol's limits. */
    public static ByteBuffer encodeHello(final String image, final String token) {
        final byte[] name = image.getBytes(StandardCharsets.UTF_8);
        final byte[] tok = token.getBytes(StandardCharsets.US_ASCII);
        if (name.length < 1 || name.length > MAX_NAME_BYTES) {
            throw new IllegalArgumentException("image name of " + name.length + " bytes; 1 to " + MAX_NAME_BYTES + " allowed");
        }
        if (tok.length > MAX_TOKEN_BYTES) {
            throw new IllegalArgumentException("token of " + tok.length + " bytes; at most " + MAX_TOKEN_BYTES + " allowed");
        }
        final ByteBuffer b = ByteBuffer.allocate(HELLO_FIXED_BYTES + name.length + HELLO_TOKEN_LENGTH_BYTES + tok.length)
            .order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(HELLO_MAGIC_OFFSET, MAGIC).putShort(HELLO_VERSION_OFFSET, (short) VERSION)
            .putShort(HELLO_NAME_LENGTH_OFFSET, (short) name.length).put(HELLO_NAME_OFFSET, name)
            .putShort(HELLO_NAME_OFFSET + name.length, (short) tok.length)
            .put(HELLO_NAME_OFFSET + name.length + HELLO_TOKEN_LENGTH_BYTES, tok);
        return b;
    }

    /** The server's answer: status, message (cut to {@link #MAX_MESSAGE_BYTES}), and the manifest if OK. */
    public static ByteBuffer encodeAnswer(final HelloStatus status, final String message, final Manifest manifest) {
        byte[] msg = message.getBytes(StandardCharsets.UTF_8);
        if (msg.length > MAX_MESSAGE_BYTES) {
            msg = java.util.Arrays.copyOf(msg, MAX_MESSAGE_BYTES);
        }
        final ByteBuffer m = status == HelloStatus.OK ? manifest.encode() : null;
        final int length = ANSWER_MESSAGE_OFFSET + msg.length + (m == null ? 0 : ANSWER_MANIFEST_LENGTH_BYTES + m.remaining());
        final ByteBuffer b = ByteBuffer.allocate(length).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(status.code).putShort((short) msg.length).put(msg);
        if (m != null) {
            b.putInt(m.remaining()).put(m);
        }
        return b.flip();
    }
}
