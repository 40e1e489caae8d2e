package io.lazyblk.pull.provider;

import io.lazyblk.pagemap.PageGeometry;
import io.lazyblk.pull.provider.ProviderProtocol.HelloStatus;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.sys.LibC;
import io.lazyblk.sys.UnixSocket;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.EOFException;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.channels.SocketChannel;
import java.time.Instant;

import static io.lazyblk.pull.provider.ProviderProtocol.*;

/**
 * One client of the provider, on its own thread: the hello, then requests answered in order (TCP), or the image's
 * read-only fd handed over by {@code SCM_RIGHTS} (a same-host client on the UNIX socket, which then reads the
 * image's pages through that fd). The client is
 * hostile until proven otherwise: every length and range is checked, a violation ends this connection only, with
 * one log line. What a client may have queued here is bounded by {@link #REQUEST_BATCH} requests; beyond that it
 * waits in the socket buffers, and TCP flow control stops a client that sends without reading.
 */
final class ProviderConnection implements Runnable {
    private static final Logger LOG = LoggerFactory.getLogger(ProviderConnection.class);
    /** Requests read per read(2): 64 x 16 bytes; more would only add to what a greedy client keeps queued here. */
    static final int REQUEST_BATCH = 64;
    static final long NO_DEADLINE = Long.MAX_VALUE;

    private final ImageServer server;
    /** The TCP connection, or null for a UNIX-socket client. */
    private final SocketChannel channel;
    /** The UNIX-socket connection, or null for a TCP client. */
    private final UnixSocket unix;
    private final String peer;
    /** The peer's key in the server's {@link ConnectionSlots}: its slot, given back when this connection ends. */
    final Object slot;
    /** Set by this thread around blocking steps, read by the server's watchdog, which closes the channel when passed. */
    volatile long deadlineNanos = NO_DEADLINE;
    /**
     * What the thread waits for until {@link #deadlineNanos}, for the watchdog's log line. Written before the deadline
     * and read after it (both volatile), so the watchdog sees the reason of the deadline it acts on, or a newer one
     * if the thread moved on meanwhile (then it closes a connection that just made progress, as it always could).
     */
    volatile Waiting waiting = Waiting.HELLO;
    /** Nanoseconds an authenticated TCP client may wait between requests with none outstanding. */
    private final long idleNanos;
    private String imageName = "?";
    /** Where a verified export's pages are read and checked before they are sent (allocated on first use). */
    private ByteBuffer verifyBuffer;
    /** {@link #verifyBuffer} as a segment, for the page checks. */
    private MemorySegment verifySegment;
    /** This client's RDMA access, if it asked for one; revoked when the connection ends. Only this thread touches it. */
    private RdmaExporter.Grant rdma;

    /** What a connection's thread may be blocked on, with a deadline; the watchdog says which when it closes one. */
    enum Waiting {
        HELLO("no complete hello within " + ImageServer.HELLO_TIMEOUT_NANOS / 1_000_000_000L + " s"),
        CONTROL("stalled inside a control request"),
        WRITE("not reading its responses (a write stalled " + ImageServer.WRITE_STALL_NANOS / 1_000_000_000L + " s)"),
        HANDED_OVER("still connected " + ImageServer.HELLO_TIMEOUT_NANOS / 1_000_000_000L + " s after the hand-over"),
        /** Idle between requests: the server logs this one itself, with the configured timeout. */
        REQUEST("idle");

        final String why;

        Waiting(final String why) {
            this.why = why;
        }
    }

    ProviderConnection(final ImageServer server, final SocketChannel channel, final String peer, final Object slot) {
        this.server = server;
        this.channel = channel;
        this.unix = null;
        this.peer = peer;
        this.slot = slot;
        this.idleNanos = server.limits.idleTimeout().toNanos();
    }

    ProviderConnection(final ImageServer server, final UnixSocket unix, final String peer, final Object slot) {
        this.server = server;
        this.channel = null;
        this.unix = unix;
        this.peer = peer;
        this.slot = slot;
        this.idleNanos = server.limits.idleTimeout().toNanos();
    }

    /** Sets the deadline of what this thread waits for next; the watchdog closes the connection once it passes. */
    private void await(final Waiting what, final long nanos) {
        waiting = what; // before the deadline: see waiting
        deadlineNanos = System.nanoTime() + nanos;
    }

    String describe() {
        return peer + " (image '" + imageName + "')";
    }

    /** Ends the connection; from any thread (the watchdog, close()): a blocked read or write returns at once. */
    void abort() {
        if (unix != null) {
            unix.shutdown(); // wakes this connection's thread; it closes the fd itself, so no other thread reuses it meanwhile
            return;
        }
        try {
            channel.close();
        } catch (final IOException e) {
            // closing a socket: nothing more to do
        }
    }

    @Override
    public void run() {
        try {
            await(Waiting.HELLO, ImageServer.HELLO_TIMEOUT_NANOS);
            final ServedImage image = hello();
            deadlineNanos = NO_DEADLINE;
            if (image != null) {
                if (unix != null) {
                    handOver(image);
                } else {
                    serve(image);
                }
            }
        } catch (final ProtocolViolation e) {
            server.stats.protocolErrors.increment();
            LOG.warn("closing connection from {}: {}", describe(), e.getMessage());
        } catch (final IOException e) {
            if (!server.isClosing()) {
                LOG.debug("connection from {} ended: {}", describe(), e.toString());
            }
        } finally {
            if (rdma != null) {
                rdma.close(); // the client's queue pair goes with its control connection: no READ after it ends
            }
            abort();
            if (unix != null) {
                unix.close();
            }
            server.remove(this);
        }
    }

    /**
     * Sends a read-only fd of the image with one byte ({@link ProviderProtocol#SHM_FD_MESSAGE}), then waits for the
     * client to close: it reads the image through the fd without us. The fd is opened O_RDONLY, so neither it nor a
     * mapping of it can write the image; what the client can read is this one image, for as long as it keeps the fd.
     */
    private void handOver(final ServedImage image) throws IOException {
        final int fd = LibC.openReadOnly(image.path.toString());
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment one = a.allocate(1);
            one.set(java.lang.foreign.ValueLayout.JAVA_BYTE, 0, ProviderProtocol.SHM_FD_MESSAGE);
            unix.send(one, 1, new int[] {fd}, 1);
        } finally {
            LibC.close(fd);
        }
        server.stats.handovers.increment();
        LOG.debug("handed '{}' to {} for shared-memory reads", imageName, peer);
        // No idle timeout here: the client closes as soon as it has the fd, and one that lingers is cut off as in the
        // hello. The fd it holds needs no connection: it reads the image without us.
        await(Waiting.HANDED_OVER, ImageServer.HELLO_TIMEOUT_NANOS);
        try (Arena a = Arena.ofConfined()) {
            // The client closes once it has the fd; a client that lingers is cut off by the watchdog. Whatever fds it
            // passes with a byte meanwhile are ours once received: the protocol has no use for them, so close them,
            // or each would stay open in this process for good.
            final int[] fds = new int[UnixSocket.MAX_FDS];
            final int[] count = new int[1];
            unix.receive(a.allocate(1), 1, fds, count);
            for (int i = 0; i < count[0]; i++) {
                LibC.close(fds[i]);
            }
        }
    }

    /** Reads and checks the hello; answers it. Returns the image to serve, or null after a refusal. */
    private ServedImage hello() throws IOException {
        final ByteBuffer fixed = readFully(ByteBuffer.allocate(HELLO_FIXED_BYTES).order(ByteOrder.LITTLE_ENDIAN));
        if (fixed.getInt(HELLO_MAGIC_OFFSET) != MAGIC) {
            return refuse(HelloStatus.MALFORMED, "not a lazyblk provider client (bad magic)");
        }
        final int version = Short.toUnsignedInt(fixed.getShort(HELLO_VERSION_OFFSET));
        if (version != VERSION) {
            return refuse(HelloStatus.MALFORMED, "protocol version " + version + "; this provider speaks version " + VERSION);
        }
        final int nameLength = Short.toUnsignedInt(fixed.getShort(HELLO_NAME_LENGTH_OFFSET));
        if (nameLength < 1 || nameLength > MAX_NAME_BYTES) {
            return refuse(HelloStatus.MALFORMED, "image name of " + nameLength + " bytes; 1 to " + MAX_NAME_BYTES + " allowed");
        }
        final ByteBuffer nameAndLength = readFully(ByteBuffer.allocate(nameLength + HELLO_TOKEN_LENGTH_BYTES).order(ByteOrder.LITTLE_ENDIAN));
        final String name;
        try {
            name = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT).decode(nameAndLength.slice(0, nameLength)).toString();
        } catch (final CharacterCodingException e) {
            return refuse(HelloStatus.MALFORMED, "image name is not valid UTF-8");
        }
        imageName = printable(name);
        final int tokenLength = Short.toUnsignedInt(nameAndLength.getShort(nameLength));
        if (tokenLength > MAX_TOKEN_BYTES) {
            return refuse(HelloStatus.MALFORMED, "token of " + tokenLength + " bytes; at most " + MAX_TOKEN_BYTES + " allowed");
        }
        final ByteBuffer tokenBytes = readFully(ByteBuffer.allocate(tokenLength));
        if (tokenLength == 0) {
            return refuse(HelloStatus.BAD_TOKEN, "no access token; ask the image's owner for one (lazyblk token)");
        }
        final String token = new String(tokenBytes.array(), StandardCharsets.ISO_8859_1);
        // The token is checked before the name is looked up: without a valid token a client learns nothing, not
        // even which images exist.
        final AccessToken.Verdict verdict = AccessToken.verify(server.secret, name, token, Instant.now());
        switch (verdict) {
            case MALFORMED -> {
                return refuse(HelloStatus.BAD_TOKEN, "malformed access token (expected v1.EXPIRY.MAC)");
            }
            case BAD_SIGNATURE -> {
                return refuse(HelloStatus.BAD_TOKEN, "access token not valid for image '" + imageName
                    + "' (signed with another secret, or for another image)");
            }
            case EXPIRED -> {
                return refuse(HelloStatus.EXPIRED_TOKEN, "access token for image '" + imageName + "' expired at "
                    + AccessToken.claimedExpiry(token) + "; mint a new one (lazyblk token)");
            }
            case OK -> {
                // fall through to the lookup
            }
        }
        final ServedImage image = server.image(name);
        if (image == null) {
            return refuse(HelloStatus.UNKNOWN_IMAGE, "no image '" + imageName + "' is exported here");
        }
        if (unix != null && image.availability != Availability.ALL) {
            // A mapping would bypass the per-page check: a peer's local file is served over TCP only.
            return refuse(HelloStatus.UNKNOWN_IMAGE, "'" + imageName + "' is an engine's local file, served page by page over TCP"
                + " only; use its tcp:// address");
        }
        writeFully(ProviderProtocol.encodeAnswer(HelloStatus.OK, "serving '" + imageName + "'", image.manifest));
        LOG.debug("serving '{}' to {}", imageName, peer);
        return image;
    }

    private ServedImage refuse(final HelloStatus status, final String message) throws IOException {
        server.stats.refused.increment();
        // One line: who, which image, why. Never the token: a log reader must not be able to replay it.
        LOG.warn("refused {} for image '{}': {} ({})", peer, imageName, status, message);
        writeFully(ProviderProtocol.encodeAnswer(status, message, null));
        return null;
    }

    private void serve(final ServedImage image) throws IOException {
        final PageGeometry g = image.manifest.geometry();
        final ByteBuffer requests = ByteBuffer.allocateDirect(REQUEST_BATCH * REQUEST_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        final ByteBuffer header = ByteBuffer.allocateDirect(RESPONSE_HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        while (true) {
            // Every request read so far is answered (they are answered in order, on this thread), so none is outstanding:
            // a client silent from here on is idle. Not while it holds RDMA access: it reads by RDMA then, and this
            // connection is what keeps that access alive.
            if (rdma == null) {
                await(Waiting.REQUEST, idleNanos);
            }
            final int got = channel.read(requests);
            deadlineNanos = NO_DEADLINE;
            if (got < 0) {
                return;
            }
            requests.flip();
            while (requests.remaining() >= REQUEST_BYTES) {
                final int at = requests.position();
                final long id = requests.getLong(at + REQUEST_ID_OFFSET);
                final long first = Integer.toUnsignedLong(requests.getInt(at + REQUEST_FIRST_PAGE_OFFSET));
                final long count = Integer.toUnsignedLong(requests.getInt(at + REQUEST_COUNT_OFFSET));
                requests.position(at + REQUEST_BYTES);
                if (first == Integer.toUnsignedLong(CONTROL_MARKER) && count == 0) {
                    control(image, requests, id);
                    continue;
                }
                if (!ProviderProtocol.validRange(g, first, count)) {
                    throw new ProtocolViolation("request " + id + " for pages [" + first + ", " + (first + count) + ") of an image of "
                        + g.pageCount() + " pages (at most " + maxPagesPerRequest(g.pageSize()) + " pages a request)");
                }
                respond(image, header, id, (int) first, (int) count);
            }
            requests.compact();
        }
    }

    /**
     * A control request (RDMA set-up) whose 16-byte head was read: reads its payload, answers. Rare and off the data
     * path, so it may allocate and log.
     */
    private void control(final ServedImage image, final ByteBuffer requests, final long id) throws IOException {
        await(Waiting.CONTROL, ImageServer.HELLO_TIMEOUT_NANOS); // a client stalling mid-request is cut off
        ensure(requests, CONTROL_TAIL_BYTES);
        final int op = requests.getInt();
        final long length = Integer.toUnsignedLong(requests.getInt());
        if (op != OP_RDMA_OFFER && op != OP_RDMA_CLAIM) {
            throw new ProtocolViolation("control request " + id + " with unknown op " + Integer.toUnsignedString(op));
        }
        if (length > MAX_CONTROL_PAYLOAD) {
            throw new ProtocolViolation("control request " + id + " with a payload of " + length + " bytes (at most "
                + MAX_CONTROL_PAYLOAD + ")");
        }
        ensure(requests, (int) length);
        final ByteBuffer payload = requests.slice(requests.position(), (int) length).order(ByteOrder.LITTLE_ENDIAN);
        requests.position(requests.position() + (int) length);
        deadlineNanos = NO_DEADLINE;
        if (op == OP_RDMA_OFFER) {
            if (length != 0) {
                throw new ProtocolViolation("RDMA offer request with a " + length + "-byte payload (none expected)");
            }
            offerRdma(image, id);
        } else {
            final java.net.InetSocketAddress source;
            try {
                source = ProviderProtocol.decodeClaim(payload);
            } catch (final IllegalArgumentException e) {
                throw new ProtocolViolation(e.getMessage());
            }
            if (rdma == null) {
                throw new ProtocolViolation("RDMA claim for " + source + " without an offer");
            }
            try {
                rdma.claim(source);
                writeFully(ProviderProtocol.encodeControlAnswer(id, RESPONSE_RDMA_CLAIMED, new byte[0]));
                LOG.debug("{} claimed RDMA access to '{}' from {}", peer, imageName, source);
            } catch (final RdmaExporter.Unavailable e) {
                writeFully(ProviderProtocol.encodeControlAnswer(id, RESPONSE_RDMA_UNAVAILABLE, ProviderProtocol.reasonBytes(e.getMessage())));
            }
        }
    }

    private void offerRdma(final ServedImage image, final long id) throws IOException {
        if (rdma != null) {
            writeFully(ProviderProtocol.encodeControlAnswer(id, RESPONSE_RDMA_UNAVAILABLE,
                ProviderProtocol.reasonBytes("an RDMA offer is already open on this connection")));
            return;
        }
        try {
            rdma = server.rdma.offer(image.name, image.path, image.manifest.size(), (java.net.InetSocketAddress) channel.getLocalAddress(), peer);
        } catch (final RdmaExporter.Unavailable e) {
            LOG.debug("no RDMA for {} (image '{}'): {}", peer, imageName, e.getMessage());
            writeFully(ProviderProtocol.encodeControlAnswer(id, RESPONSE_RDMA_UNAVAILABLE, ProviderProtocol.reasonBytes(e.getMessage())));
            return;
        }
        final ByteBuffer offer = rdma.offer().encode();
        final byte[] bytes = new byte[offer.remaining()];
        offer.get(bytes);
        writeFully(ProviderProtocol.encodeControlAnswer(id, RESPONSE_RDMA_OFFER, bytes));
        LOG.info("offered RDMA reads of '{}' to {}: {}", imageName, peer, rdma.offer());
    }

    /** Makes {@code b} (in read mode) hold at least {@code n} unread bytes, reading more from the channel as needed. */
    private void ensure(final ByteBuffer b, final int n) throws IOException {
        while (b.remaining() < n) {
            b.compact();
            final int got = channel.read(b);
            b.flip();
            if (got < 0) {
                throw new EOFException("client closed the connection inside a control request");
            }
        }
    }

    private void respond(final ServedImage image, final ByteBuffer header, final long id, final int first, final int count) throws IOException {
        final PageGeometry g = image.manifest.geometry();
        final long position = g.pageStart(first);
        int length = rangeBytes(g, first, count);
        int status = RESPONSE_OK;
        if (position + length > image.file.size() || !image.availability.has(first, count)) {
            // The image shrank under us, or (a peer) does not hold these pages yet: say so, keep the connection.
            status = RESPONSE_READ_ERROR;
            length = 0;
        }
        header.clear();
        header.putLong(RESPONSE_ID_OFFSET, id).putInt(RESPONSE_STATUS_OFFSET, status).putInt(RESPONSE_LENGTH_OFFSET, length);
        // Counted before sending, so whoever has received a response also sees it counted.
        server.stats.requests.increment();
        server.stats.bytes.add(length);
        await(Waiting.WRITE, ImageServer.WRITE_STALL_NANOS);
        if (length > 0 && image.corruptsAny(first, count)) {
            writeCorrupted(image, header, first, count, position, length);
        } else if (length > 0 && image.verifyServed) {
            writeVerified(image, header, id, first, count, position, length);
        } else {
            writeFully(header);
            long done = 0;
            while (done < length) {
                // FileChannel -> SocketChannel: sendfile(2), the bytes go from the page cache to the socket uncopied.
                final long n = image.file.transferTo(position + done, length - done, channel);
                if (n <= 0) {
                    throw new IOException("image '" + image.name + "' shrank while page " + first + " was being sent");
                }
                done += n;
            }
        }
        deadlineNanos = NO_DEADLINE;
    }

    /**
     * A file others write to (a peer export): reads the pages into memory, checks each against its hash, and sends those
     * bytes, not a second read of the file; if any page differs from the image (its engine's guest wrote there since the
     * records were read), the answer is "not here" and nothing of it leaves the host.
     */
    private void writeVerified(final ServedImage image, final ByteBuffer header, final long id, final int first, final int count,
                               final long position, final int length) throws IOException {
        if (verifyBuffer == null || verifyBuffer.capacity() < length) {
            verifyBuffer = ByteBuffer.allocateDirect(Math.max(length, image.manifest.pageSize())); // once per connection and size
            verifySegment = MemorySegment.ofBuffer(verifyBuffer);
        }
        final ByteBuffer data = verifyBuffer.clear().limit(length);
        while (data.hasRemaining()) {
            if (image.file.read(data, position + data.position()) < 0) {
                throw new IOException("image '" + image.name + "' shrank while page " + first + " was being read");
            }
        }
        final PageGeometry g = image.manifest.geometry();
        boolean intact = true;
        for (int p = first; p < first + count && intact; p++) {
            intact = image.manifest.verify(p, verifySegment, g.pageStart(p) - position); // no view per page
        }
        if (!intact) {
            header.clear();
            header.putLong(RESPONSE_ID_OFFSET, id).putInt(RESPONSE_STATUS_OFFSET, RESPONSE_READ_ERROR).putInt(RESPONSE_LENGTH_OFFSET, 0);
            writeFully(header);
            return;
        }
        writeFully(header);
        writeFully(data.flip());
    }

    /** Test hook path ({@link ImageServer#corruptServedPageForTesting}): reads, flips the first byte of chosen pages, sends. */
    private void writeCorrupted(final ServedImage image, final ByteBuffer header, final int first, final int count,
                                final long position, final int length) throws IOException {
        final ByteBuffer data = ByteBuffer.allocate(length);
        while (data.hasRemaining()) {
            if (image.file.read(data, position + data.position()) < 0) {
                throw new IOException("image '" + image.name + "' shrank while page " + first + " was being read");
            }
        }
        final PageGeometry g = image.manifest.geometry();
        for (int p = first; p < first + count; p++) {
            if (image.corrupts(p)) {
                final int at = (int) (g.pageStart(p) - position);
                data.put(at, (byte) ~data.get(at));
            }
        }
        writeFully(header);
        writeFully(data.flip());
    }

    private ByteBuffer readFully(final ByteBuffer b) throws IOException {
        if (unix != null) {
            // read(2), not recvmsg: with no control buffer the kernel drops any fds the client attached (it never
            // installs them here), so a hello with SCM_RIGHTS cannot leak fds into this process.
            try (Arena a = Arena.ofConfined()) {
                final int n = b.remaining();
                final MemorySegment buf = a.allocate(Math.max(1, n));
                if (n > 0 && !unix.readFully(buf, n)) {
                    throw new EOFException("client closed the connection during its hello");
                }
                b.put(buf.asSlice(0, n).asByteBuffer());
                return b.flip();
            }
        }
        while (b.hasRemaining()) {
            if (channel.read(b) < 0) {
                throw new EOFException("client closed the connection during its hello");
            }
        }
        return b;
    }

    private void writeFully(final ByteBuffer b) throws IOException {
        if (unix != null) {
            try (Arena a = Arena.ofConfined()) {
                final int n = b.remaining();
                final MemorySegment buf = a.allocate(Math.max(1, n));
                buf.asSlice(0, n).asByteBuffer().put(b);
                unix.send(buf, n, new int[0], 0);
                return;
            }
        }
        while (b.hasRemaining()) {
            channel.write(b);
        }
    }

    /** A name from the network, safe for one log line: control characters replaced, length capped. */
    static String printable(final String s) {
        final String p = s.replaceAll("\\p{Cntrl}", "?");
        return p.length() > 80 ? p.substring(0, 80) + "..." : p;
    }

    /** The client broke the protocol: this connection ends, with the message as its one log line. */
    static final class ProtocolViolation extends IOException {
        private static final long serialVersionUID = 1L;

        ProtocolViolation(final String message) {
            super(message);
        }
    }
}
