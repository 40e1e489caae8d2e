package io.lazyblk.pull.provider;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageGeometry;
import io.lazyblk.pagemap.PageSource;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;

/**
 * The image provider's TCP protocol, version 2. All integers little endian.
 *
 * <pre>
 * client hello     magic "LZBP" u32 | version u16 | name length u16 | name (1..255 bytes UTF-8)
 *                  | token length u16 | token (0..512 bytes ASCII)
 * server answer    status u32 ({@link HelloStatus}) | message length u16 | message (UTF-8, at most 1024 bytes)
 *                  | if OK: manifest length u32 | {@link Manifest#encode()} bytes
 *                  a refusal is followed by the server closing the connection.
 * request          id u64 | first page u32 | flags (high 16 bits) and page count (low 16 bits) u32   (16 bytes, pipelined)
 *                  flags: {@link #FLAG_DEMAND} (bit 31): a reader waits for these pages (a demand fetch, not
 *                  background fill or a prefetch). Every other flag bit is a protocol error.
 * response         id u64 | status u32 ({@link #RESPONSE_OK} or {@link #RESPONSE_READ_ERROR}) | length u32
 *                  | length bytes of page data (the image's last page may be short)
 * </pre>
 *
 * After an OK answer the client may also send a control request (RDMA set-up, see {@link RdmaOffer}; the boot profile):
 *
 * <pre>
 * control request  id u64 | {@link #CONTROL_MARKER} u32 | 0 u32 | op u32 | payload length u32 (at most
 *                  {@link #MAX_CONTROL_PAYLOAD}) | payload        (a request for 0 pages at 2^32-1: invalid as a page request)
 *                  op {@link #OP_RDMA_OFFER}: empty payload. "May I read this image by RDMA?"
 *                  op {@link #OP_RDMA_CLAIM}: IPv4 address 4 bytes | port u16: "my RDMA CM connection comes from here"
 *                  op {@link #OP_PROFILE}: empty payload. "Which pages do boots of this image read, in what order?"
 *                  op {@link #OP_MIGRATION_FINAL}: empty payload. "Which pages did the guest change since I fetched
 *                  them?" (the destination of a live migration, at the switchover; see below)
 *                  op {@link #OP_MIGRATION_DONE}: empty payload. "My copy is complete."
 * control answer   a response header (id echoed | status | length) and length bytes of payload:
 *                  {@link #RESPONSE_RDMA_UNAVAILABLE}: the reason, UTF-8, at most {@link #MAX_MESSAGE_BYTES}
 *                  {@link #RESPONSE_RDMA_OFFER}: {@link RdmaOffer#encode()}
 *                  {@link #RESPONSE_RDMA_CLAIMED}: empty; the client may now connect
 *                  {@link #RESPONSE_PROFILE}: the boot profile, provider page numbers u32 each, in the order to fetch
 *                  them, none twice, at most {@link PageSource#MAX_PROFILE_PAGES} (empty: none learned, or learning off)
 *                  {@link #RESPONSE_MIGRATION_UNAVAILABLE}: the export is no live migration's (it has no
 *                  {@link MigrationControl}); the reason, UTF-8, at most {@link #MAX_MESSAGE_BYTES}
 *                  {@link #RESPONSE_MIGRATION_PENDING}: empty; the source has not reached its switchover within
 *                  {@link #MIGRATION_WAIT_MILLIS}: ask again
 *                  {@link #RESPONSE_MIGRATION_FINAL}: flags u32 | the final set of changed pages, export page numbers
 *                  u32 each, each below the manifest's page count, none twice, in no particular order (so the length
 *                  is 4 + 4 x pages, at most 4 + page count x 4 bytes: 64 MiB for {@link Manifest#MAX_PAGES}, more
 *                  than any buffer: the length is the header's). Flags: {@link #FINAL_FLAG_GUEST_WRITEBACK} (bit 0):
 *                  the guest's write cache is on (writeback; clear: write-through), as at the switchover. Every other
 *                  bit is 0; a client refuses an answer with another bit set.
 *                  {@link #RESPONSE_MIGRATION_DONE}: empty; the source recorded that the destination is complete
 * </pre>
 *
 * <p>Live migration without shared storage. A running engine (the source) exports its disk with a
 * {@link Manifest#live live manifest} and a {@link MigrationControl}; the destination engine fills from it like from any
 * provider. At the switchover the destination asks {@link #OP_MIGRATION_FINAL} on a connection of its own: the
 * server waits on {@link MigrationControl#awaitFinal} for up to {@link #MIGRATION_WAIT_MILLIS} (its idle and stall
 * timeouts do not run meanwhile; closing the server ends the wait) and answers PENDING or FINAL. The destination
 * drops and fetches again every page in the final set, then sends {@link #OP_MIGRATION_DONE} once its copy is
 * complete, which calls {@link MigrationControl#destinationComplete}. The FINAL answer also carries the guest's
 * write-cache mode ({@link MigrationControl#guestWriteback}): the guest sets it on the source (virtio-blk
 * CONFIG_WCE, by SET_CONFIG) and QEMU does not send it to the destination again, so the destination engine learns it
 * here. An export without a control answers both ops
 * UNAVAILABLE (not a protocol error). Both ops came with no version change: they change no layout, a client that
 * predates them never sends them, and a provider that predates them closes the connection on the unknown op (a
 * protocol error), which the client reports as a provider that cannot migrate.
 *
 * A provider that predates control requests sees a request past the image's end and closes the connection, which
 * a client takes as "not available". An unknown op, an oversized or wrong-length payload, or a claim without an
 * offer is a protocol error.
 *
 * The client may send many requests without waiting; the server answers each exactly once, in the order received.
 * A request with count 0, more than {@link #MAX_PAGES_PER_REQUEST} pages or {@link #MAX_BYTES_PER_REQUEST} bytes, or
 * a range past the image's end is a protocol error: the server closes that connection. The client's request ids are
 * its own business; the server echoes them.
 *
 * <p>Versions. 2 added the request flags (the provider learns boot profiles from demand-marked requests) and
 * {@link #OP_PROFILE}. A version 1 request has the same layout with the flags zero, so the server still accepts a
 * version 1 hello ({@link #MIN_VERSION}), and then refuses any flag bit: an engine of the previous release keeps
 * filling from an upgraded provider (providers can be upgraded first, engines as their VMs restart); its fetches are
 * only not learned. A version 1 provider refuses a version 2 hello (MALFORMED, naming both versions).
 */
public final class ProviderProtocol {
    /** "LZBP": the bytes 'L' 'Z' 'B' 'P' read as a little-endian u32. */
    public static final int MAGIC = 0x50425a4c;
    /** The version this side speaks. */
    public static final int VERSION = 2;
    /** The oldest client hello the server accepts (see the class comment: version 1 sends no request flags). */
    public static final int MIN_VERSION = 1;

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
    /** The u32 holding the page count (low 16 bits, {@link #REQUEST_COUNT_MASK}) and the flags (high 16 bits). */
    public static final int REQUEST_COUNT_OFFSET = 12;
    /** The page count's bits of the count word: room for {@link #MAX_PAGES_PER_REQUEST} and more (more is invalid). */
    public static final int REQUEST_COUNT_MASK = 0x0000_FFFF;
    /** Request flag: a demand fetch (a reader waits for it). The provider learns boot profiles from these alone. */
    public static final int FLAG_DEMAND = 0x8000_0000;
    /** Every flag a version 2 request may carry; any other bit of the high 16 is a protocol error. */
    public static final int KNOWN_FLAGS = FLAG_DEMAND;
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

    /** First-page value of a control request (with page count 0): no image has 2^32-1 pages (Manifest.MAX_PAGES is far below). */
    public static final int CONTROL_MARKER = 0xFFFF_FFFF;
    /** Control request: offer RDMA access to this connection's image. */
    public static final int OP_RDMA_OFFER = 1;
    /** Control request: the client's RDMA CM source address, the only one the offer's connection may come from. */
    public static final int OP_RDMA_CLAIM = 2;
    /** Control request: the boot profile the provider learned for this connection's image. */
    public static final int OP_PROFILE = 3;
    /** Bytes after a control request's 16-byte head and before its payload: op u32, payload length u32. */
    public static final int CONTROL_TAIL_BYTES = 8;
    /** Largest control payload a server reads: a claim is 6 bytes; room for growth, no room for abuse. */
    public static final int MAX_CONTROL_PAYLOAD = 64;
    public static final int CLAIM_PAYLOAD_BYTES = 6;
    /** Control answer: RDMA is not available for this connection; the payload says why. */
    public static final int RESPONSE_RDMA_UNAVAILABLE = 2;
    /** Control answer: the payload is an {@link RdmaOffer}. */
    public static final int RESPONSE_RDMA_OFFER = 3;
    /** Control answer: the claim is recorded; connect now (within the hello timeout). */
    public static final int RESPONSE_RDMA_CLAIMED = 4;
    /** Control answer to {@link #OP_PROFILE}: the payload is the profile's pages, u32 each. */
    public static final int RESPONSE_PROFILE = 5;
    /** Largest {@link #RESPONSE_PROFILE} payload: {@link PageSource#MAX_PROFILE_PAGES} pages of 4 bytes (256 KiB). */
    public static final int MAX_PROFILE_ANSWER_BYTES = 4 * PageSource.MAX_PROFILE_PAGES;
    /** Control request of a live migration's destination: the final set of changed pages (empty payload). */
    public static final int OP_MIGRATION_FINAL = 4;
    /** Control request of a live migration's destination: its copy is complete (empty payload). */
    public static final int OP_MIGRATION_DONE = 5;
    /** Control answer to both migration ops for an export that is not migrating; the payload says why. */
    public static final int RESPONSE_MIGRATION_UNAVAILABLE = 6;
    /** Control answer to {@link #OP_MIGRATION_FINAL}: no switchover yet; ask again. Empty. */
    public static final int RESPONSE_MIGRATION_PENDING = 7;
    /** Control answer to {@link #OP_MIGRATION_FINAL}: the final changed pages, u32 each. */
    public static final int RESPONSE_MIGRATION_FINAL = 8;
    /**
     * Flag of a {@link #RESPONSE_MIGRATION_FINAL} answer: the guest's write cache is on (virtio-blk writeback), as the
     * guest last set it on the source before the switchover. Clear: write-through.
     */
    public static final int FINAL_FLAG_GUEST_WRITEBACK = 1;
    /** Every flag a {@link #RESPONSE_MIGRATION_FINAL} answer may carry; any other bit makes the answer invalid. */
    public static final int FINAL_KNOWN_FLAGS = FINAL_FLAG_GUEST_WRITEBACK;
    /** Bytes of a {@link #RESPONSE_MIGRATION_FINAL} answer's payload before its pages: the flags u32. */
    public static final int FINAL_FLAGS_BYTES = 4;
    /** Control answer to {@link #OP_MIGRATION_DONE}: recorded. Empty. */
    public static final int RESPONSE_MIGRATION_DONE = 9;
    /**
     * How long the server waits for the switchover before answering {@link #RESPONSE_MIGRATION_PENDING}: 20 s. Long
     * enough that a destination waiting through a long pre-copy asks only a few times a minute; short enough that a
     * destination which died without closing (its FIN never comes) holds the server's thread no longer than that, and
     * that a client bounding its whole wait (say to a minute) gets an answer well inside it.
     */
    public static final long MIGRATION_WAIT_MILLIS = 20_000;

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

    /** A control request: the 16-byte head, the payload length, the payload. */
    public static ByteBuffer encodeControl(final long id, final int op, final byte[] payload) {
        if (payload.length > MAX_CONTROL_PAYLOAD) {
            throw new IllegalArgumentException("control payload of " + payload.length + " bytes; at most " + MAX_CONTROL_PAYLOAD);
        }
        return ByteBuffer.allocate(REQUEST_BYTES + CONTROL_TAIL_BYTES + payload.length).order(ByteOrder.LITTLE_ENDIAN)
            .putLong(id).putInt(CONTROL_MARKER).putInt(0).putInt(op).putInt(payload.length).put(payload).flip();
    }

    /** The claim payload: an IPv4 address and a port (1..65535). */
    public static byte[] encodeClaim(final java.net.InetSocketAddress source) {
        final byte[] ip = source.getAddress().getAddress();
        if (ip.length != 4 || source.getPort() < 1 || source.getPort() > 0xFFFF) {
            throw new IllegalArgumentException("claim for " + source + ": an IPv4 address and a port 1..65535 are needed");
        }
        return ByteBuffer.allocate(CLAIM_PAYLOAD_BYTES).order(ByteOrder.LITTLE_ENDIAN).put(ip).putShort((short) source.getPort()).array();
    }

    /** Decodes a claim payload; throws IllegalArgumentException saying what is wrong. */
    public static java.net.InetSocketAddress decodeClaim(final ByteBuffer payload) {
        if (payload.remaining() != CLAIM_PAYLOAD_BYTES) {
            throw new IllegalArgumentException("RDMA claim of " + payload.remaining() + " bytes; " + CLAIM_PAYLOAD_BYTES + " expected");
        }
        final byte[] ip = new byte[4];
        payload.get(payload.position(), ip);
        final int port = Short.toUnsignedInt(payload.order(ByteOrder.LITTLE_ENDIAN).getShort(payload.position() + 4));
        if (port == 0) {
            throw new IllegalArgumentException("RDMA claim for port 0");
        }
        try {
            return new java.net.InetSocketAddress(java.net.InetAddress.getByAddress(ip), port);
        } catch (final java.net.UnknownHostException e) {
            throw new IllegalArgumentException("RDMA claim with a bad address", e); // cannot happen for 4 bytes
        }
    }

    /** A control answer: response header with {@code status}, then {@code payload}. */
    public static ByteBuffer encodeControlAnswer(final long id, final int status, final byte[] payload) {
        return ByteBuffer.allocate(RESPONSE_HEADER_BYTES + payload.length).order(ByteOrder.LITTLE_ENDIAN)
            .putLong(id).putInt(status).putInt(payload.length).put(payload).flip();
    }

    /** The reason text of an RDMA_UNAVAILABLE answer, cut to {@link #MAX_MESSAGE_BYTES}. */
    public static byte[] reasonBytes(final String reason) {
        final byte[] b = reason.getBytes(StandardCharsets.UTF_8);
        return b.length > MAX_MESSAGE_BYTES ? java.util.Arrays.copyOf(b, MAX_MESSAGE_BYTES) : b;
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

    /** The count word of a request for {@code count} pages, marked {@link #FLAG_DEMAND} if {@code demand}. */
    public static int countWord(final int count, final boolean demand) {
        return count | (demand ? FLAG_DEMAND : 0);
    }

    /**
     * The head of a {@link #RESPONSE_MIGRATION_FINAL} answer for {@code pages} pages: the response header (length
     * {@link #FINAL_FLAGS_BYTES} + 4 x {@code pages}) and the flags word ({@link #FINAL_FLAG_GUEST_WRITEBACK} if
     * {@code guestWriteback}); the pages follow as u32 each (the server writes them in chunks, see {@link #putPages}).
     */
    public static ByteBuffer encodeFinalHeader(final long id, final int pages, final boolean guestWriteback) {
        return ByteBuffer.allocate(RESPONSE_HEADER_BYTES + FINAL_FLAGS_BYTES).order(ByteOrder.LITTLE_ENDIAN)
            .putLong(id).putInt(RESPONSE_MIGRATION_FINAL).putInt(FINAL_FLAGS_BYTES + 4 * pages)
            .putInt(guestWriteback ? FINAL_FLAG_GUEST_WRITEBACK : 0).flip();
    }

    /**
     * Puts as many of {@code pages} from {@code from} into {@code out} (in its byte order: little endian for the wire)
     * as fit in whole u32s; returns the index of the first page not put.
     */
    public static int putPages(final int[] pages, final int from, final ByteBuffer out) {
        int i = from;
        while (i < pages.length && out.remaining() >= 4) {
            out.putInt(pages[i++]);
        }
        return i;
    }

    /**
     * Why {@code pages} is not a final set of changed pages of an export of {@code pageCount} pages, or null if it is
     * one: each in {@code [0, pageCount)}, none twice. A bit per page, no sort: the set may hold millions.
     */
    public static String checkFinal(final int[] pages, final int pageCount) {
        if (pages.length > pageCount) {
            return pages.length + " pages of an export of " + pageCount;
        }
        final long[] seen = new long[(pageCount + 63) >>> 6];
        for (int i = 0; i < pages.length; i++) {
            final int p = pages[i];
            if (p < 0 || p >= pageCount) {
                return "page " + Integer.toUnsignedString(p) + " at entry " + i + ", outside an export of " + pageCount + " pages";
            }
            if ((seen[p >>> 6] & (1L << p)) != 0) {
                return "page " + p + " listed twice";
            }
            seen[p >>> 6] |= 1L << p;
        }
        return null;
    }

    /** The answer to {@link #OP_PROFILE}: {@code pages} (already checked) as u32 each. */
    public static ByteBuffer encodeProfileAnswer(final long id, final int[] pages) {
        final ByteBuffer b = ByteBuffer.allocate(RESPONSE_HEADER_BYTES + 4 * pages.length).order(ByteOrder.LITTLE_ENDIAN)
            .putLong(id).putInt(RESPONSE_PROFILE).putInt(4 * pages.length);
        for (final int p : pages) {
            b.putInt(p);
        }
        return b.flip();
    }

    /**
     * Decodes a {@link #RESPONSE_PROFILE} payload for an image of {@code pageCount} provider pages: hostile input, so
     * checked as a whole (whole u32s, at most {@link PageSource#MAX_PROFILE_PAGES}, each page in the image, none twice).
     *
     * @throws IllegalArgumentException saying what is wrong
     */
    public static int[] decodeProfileAnswer(final ByteBuffer payload, final int pageCount) {
        final int length = payload.remaining();
        if (length % 4 != 0 || length > MAX_PROFILE_ANSWER_BYTES) {
            throw new IllegalArgumentException("a boot profile of " + length + " bytes (whole u32 pages, at most "
                + MAX_PROFILE_ANSWER_BYTES + " bytes)");
        }
        final ByteBuffer le = payload.slice().order(ByteOrder.LITTLE_ENDIAN);
        final int[] pages = new int[length / 4];
        for (int i = 0; i < pages.length; i++) {
            pages[i] = le.getInt(4 * i);
        }
        final String wrong = io.lazyblk.pull.profile.ProfilePages.check(pages, pages.length, pageCount, PageSource.MAX_PROFILE_PAGES);
        if (wrong != null) {
            throw new IllegalArgumentException("a boot profile with " + wrong);
        }
        return pages;
    }
}
