package io.lazyblk.pull.provider;

import io.lazyblk.pagemap.PageGeometry;
import io.lazyblk.pull.profile.BootRecorder;
import io.lazyblk.pull.provider.ProviderConnection.ProtocolViolation;
import io.lazyblk.pull.provider.ProviderConnection.Waiting;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.EOFException;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SocketChannel;

import static io.lazyblk.pull.provider.ProviderConnection.NO_DEADLINE;
import static io.lazyblk.pull.provider.ProviderConnection.REQUEST_BATCH;
import static io.lazyblk.pull.provider.ProviderProtocol.*;

/**
 * An authenticated TCP client's requests, on its connection's thread: page requests answered in order (sendfile(2)
 * from the image, or read and checked first for a verified export), control requests (RDMA set-up, the boot profile),
 * and the boot this client's demand-marked requests show, recorded for the image's profile
 * ({@link io.lazyblk.pull.profile.BootRecorder}). Every length, range and flag is checked; a violation throws
 * {@link ProtocolViolation}, which ends the connection with one log line.
 */
final class PageRequests {
    private static final Logger LOG = LoggerFactory.getLogger(PageRequests.class);
    /**
     * How long a request for pages a host cache lacks waits for its fetch from the cache's source before it is answered
     * as missing (the client then asks its next source): an S3 GET takes about a millisecond, a slow one seconds.
     */
    static final long MISSING_PAGE_WAIT_NANOS = 10_000_000_000L;

    private final ProviderConnection connection;
    private final ImageServer server;
    private final SocketChannel channel;
    private final ServedImage image;
    /** The hello's version: 1 sends no flags and knows no profile request. */
    private final int version;
    /** Flag bits this client may set: none for version 1. */
    private final int allowedFlags;
    /** This client's boot, or null if nothing is learned from it (learning off, or a version 1 client). */
    private final BootRecorder boot;
    /** Where a verified export's pages are read and checked before they are sent (allocated on first use). */
    private ByteBuffer verifyBuffer;
    /** {@link #verifyBuffer} as a segment, for the page checks. */
    private MemorySegment verifySegment;
    /** This client's RDMA access, if it asked for one; revoked when the connection ends. Only this thread touches it. */
    private RdmaExporter.Grant rdma;

    PageRequests(final ProviderConnection connection, final ImageServer server, final SocketChannel channel, final ServedImage image,
                 final int version) {
        this.connection = connection;
        this.server = server;
        this.channel = channel;
        this.image = image;
        this.version = version;
        this.allowedFlags = version >= 2 ? KNOWN_FLAGS : 0;
        this.boot = version >= 2 && image.profile != null ? image.profile.recorder() : null;
    }

    /** The connection ends: merges the boot it recorded and revokes its RDMA access. */
    void end() {
        try {
            if (boot != null) {
                boot.finish();
            }
        } finally {
            if (rdma != null) {
                rdma.close(); // the client's queue pair goes with its control connection: no READ after it ends
            }
        }
    }

    private void writeFully(final ByteBuffer b) throws IOException {
        connection.writeFully(b);
    }

    /**
     * Nice value of a connection's thread while it serves only a background fill (a v2 client's requests without the
     * demand mark): on a host where guests run beside the provider (a host cache), it gives way to them and to demand
     * connections when cores are short, about a tenth of a contended core (CFS weights 110 against 1024), and runs
     * flat out on an idle one. {@code -Dlazyblk.fill.nice=0} turns it off.
     */
    static final int BACKGROUND_NICE = Integer.getInteger("lazyblk.fill.nice", 10);
    private boolean niced;
    private boolean sawDemand;

    private void nice() {
        niced = true; // tried once, whatever the outcome
        if (BACKGROUND_NICE != 0 && io.lazyblk.sys.Threads.niceCurrentThread(BACKGROUND_NICE) != 0) {
            LOG.debug("could not lower a background connection's thread to nice {}", BACKGROUND_NICE);
        }
    }

    /** A demand request on a niced connection (its client's demand connection is down): back to nice 0 if allowed. */
    private void unnice() {
        niced = false;
        sawDemand = true;
        // Lowering the nice value needs CAP_SYS_NICE (RLIMIT_NICE is 0 by default): without it, this connection's
        // demand requests keep the background weight until the client's demand connection is back.
        io.lazyblk.sys.Threads.niceCurrentThread(0);
    }

    /** Reads and answers requests until the client closes or breaks the protocol. */
    void serve() throws IOException {
        final PageGeometry g = image.manifest.geometry();
        final ByteBuffer requests = ByteBuffer.allocateDirect(REQUEST_BATCH * REQUEST_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        final ByteBuffer header = ByteBuffer.allocateDirect(RESPONSE_HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        while (true) {
            // Every request read so far is answered (they are answered in order, on this thread), so none is outstanding:
            // a client silent from here on is idle. Not while it holds RDMA access: it reads by RDMA then, and this
            // connection is what keeps that access alive.
            if (rdma == null) {
                connection.await(Waiting.REQUEST, connection.idleNanos);
            }
            final int got = channel.read(requests);
            connection.deadlineNanos = NO_DEADLINE;
            if (got < 0) {
                return;
            }
            requests.flip();
            while (requests.remaining() >= REQUEST_BYTES) {
                final int at = requests.position();
                final long id = requests.getLong(at + REQUEST_ID_OFFSET);
                final long first = Integer.toUnsignedLong(requests.getInt(at + REQUEST_FIRST_PAGE_OFFSET));
                final int word = requests.getInt(at + REQUEST_COUNT_OFFSET);
                requests.position(at + REQUEST_BYTES);
                if (first == Integer.toUnsignedLong(CONTROL_MARKER) && word == 0) {
                    control(requests, id);
                    continue;
                }
                final int flags = word & ~REQUEST_COUNT_MASK;
                final long count = word & REQUEST_COUNT_MASK;
                if ((flags & ~allowedFlags) != 0) {
                    throw new ProtocolViolation("request " + id + " with unknown flag bits 0x" + Integer.toHexString(flags & ~allowedFlags)
                        + " (protocol version " + version + ")");
                }
                if (!ProviderProtocol.validRange(g, first, count)) {
                    throw new ProtocolViolation("request " + id + " for pages [" + first + ", " + (first + count) + ") of an image of "
                        + g.pageCount() + " pages (at most " + maxPagesPerRequest(g.pageSize()) + " pages a request)");
                }
                if ((flags & FLAG_DEMAND) != 0) {
                    server.stats.demandRequests.increment();
                    if (boot != null) {
                        boot.demand((int) first, (int) count);
                    }
                    if (niced) {
                        unnice();
                    }
                } else if (version >= 2 && !niced && !sawDemand) {
                    nice(); // a client that marks its demand sent a background request: this connection is a fill's
                }
                sawDemand |= (flags & FLAG_DEMAND) != 0;
                respond(header, id, (int) first, (int) count);
            }
            requests.compact();
        }
    }

    /**
     * A control request (RDMA set-up) whose 16-byte head was read: reads its payload, answers. Rare and off the data
     * path, so it may allocate and log.
     */
    private void control(final ByteBuffer requests, final long id) throws IOException {
        connection.await(Waiting.CONTROL, ImageServer.HELLO_TIMEOUT_NANOS); // a client stalling mid-request is cut off
        ensure(requests, CONTROL_TAIL_BYTES);
        final int op = requests.getInt();
        final long length = Integer.toUnsignedLong(requests.getInt());
        final boolean v2op = op == OP_PROFILE || op == OP_MIGRATION_FINAL || op == OP_MIGRATION_DONE;
        if (op != OP_RDMA_OFFER && op != OP_RDMA_CLAIM && (!v2op || version < 2)) {
            throw new ProtocolViolation("control request " + id + " with unknown op " + Integer.toUnsignedString(op));
        }
        if (length > MAX_CONTROL_PAYLOAD) {
            throw new ProtocolViolation("control request " + id + " with a payload of " + length + " bytes (at most "
                + MAX_CONTROL_PAYLOAD + ")");
        }
        ensure(requests, (int) length);
        final ByteBuffer payload = requests.slice(requests.position(), (int) length).order(ByteOrder.LITTLE_ENDIAN);
        requests.position(requests.position() + (int) length);
        connection.deadlineNanos = NO_DEADLINE;
        if (op == OP_MIGRATION_FINAL || op == OP_MIGRATION_DONE) {
            if (length != 0) {
                throw new ProtocolViolation((op == OP_MIGRATION_FINAL ? "migration final" : "migration done") + " request with a "
                    + length + "-byte payload (none expected)");
            }
            migration(id, op);
        } else if (op == OP_PROFILE) {
            if (length != 0) {
                throw new ProtocolViolation("profile request with a " + length + "-byte payload (none expected)");
            }
            final int[] pages = image.profilePages();
            connection.await(Waiting.WRITE, ImageServer.WRITE_STALL_NANOS);
            writeFully(ProviderProtocol.encodeProfileAnswer(id, pages));
            connection.deadlineNanos = NO_DEADLINE;
            LOG.debug("handed the boot profile of '{}' ({} pages) to {}", image.name, pages.length, connection.peer());
        } else if (op == OP_RDMA_OFFER) {
            if (length != 0) {
                throw new ProtocolViolation("RDMA offer request with a " + length + "-byte payload (none expected)");
            }
            offerRdma(id);
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
                LOG.debug("{} claimed RDMA access to '{}' from {}", connection.peer(), image.name, source);
            } catch (final RdmaExporter.Unavailable e) {
                writeFully(ProviderProtocol.encodeControlAnswer(id, RESPONSE_RDMA_UNAVAILABLE, ProviderProtocol.reasonBytes(e.getMessage())));
            }
        }
    }

    /** Bytes of the final set written at a time: it may be 64 MiB, and is written through one small buffer. */
    private static final int FINAL_CHUNK_BYTES = 64 << 10;

    /** A live migration's op ({@link ProviderProtocol}'s class comment): the final changed pages, or the destination done. */
    private void migration(final long id, final int op) throws IOException {
        final MigrationControl control = image.migration;
        if (control == null) {
            connection.await(Waiting.WRITE, ImageServer.WRITE_STALL_NANOS);
            writeFully(ProviderProtocol.encodeControlAnswer(id, RESPONSE_MIGRATION_UNAVAILABLE, ProviderProtocol.reasonBytes(
                "'" + image.name + "' is not the disk of a migrating engine (no lazyblk migrate-export serves it)")));
            connection.deadlineNanos = NO_DEADLINE;
            return;
        }
        if (op == OP_MIGRATION_DONE) {
            control.destinationComplete();
            LOG.info("{} says its copy of '{}' is complete", connection.peer(), image.name);
            connection.await(Waiting.WRITE, ImageServer.WRITE_STALL_NANOS);
            writeFully(ProviderProtocol.encodeControlAnswer(id, RESPONSE_MIGRATION_DONE, new byte[0]));
            connection.deadlineNanos = NO_DEADLINE;
            return;
        }
        final int[] pages = connection.awaitFinal(control, java.util.concurrent.TimeUnit.MILLISECONDS.toNanos(MIGRATION_WAIT_MILLIS));
        connection.await(Waiting.WRITE, ImageServer.WRITE_STALL_NANOS);
        if (pages == null) {
            writeFully(ProviderProtocol.encodeControlAnswer(id, RESPONSE_MIGRATION_PENDING, new byte[0]));
            connection.deadlineNanos = NO_DEADLINE;
            return;
        }
        final String wrong = ProviderProtocol.checkFinal(pages, image.manifest.pageCount());
        if (wrong != null) {
            // The engine's bug, not the client's: say so to both, keep the connection.
            LOG.error("the final set of changed pages of '{}' is not one: {}", image.name, wrong);
            writeFully(ProviderProtocol.encodeControlAnswer(id, RESPONSE_MIGRATION_UNAVAILABLE,
                ProviderProtocol.reasonBytes("the source engine's final set of changed pages is broken (" + wrong + ")")));
            connection.deadlineNanos = NO_DEADLINE;
            return;
        }
        // Asked after awaitFinal returned a set: the mode as at the switchover, when the guest can no longer change it.
        final boolean writeback = control.guestWriteback();
        writeFully(ProviderProtocol.encodeFinalHeader(id, pages.length, writeback));
        final ByteBuffer chunk = ByteBuffer.allocate((int) Math.min(FINAL_CHUNK_BYTES, 4L * pages.length))
            .order(ByteOrder.LITTLE_ENDIAN);
        for (int next = 0; next < pages.length; ) {
            next = ProviderProtocol.putPages(pages, next, chunk.clear());
            connection.await(Waiting.WRITE, ImageServer.WRITE_STALL_NANOS); // per chunk: a reading client keeps its connection
            writeFully(chunk.flip());
        }
        connection.deadlineNanos = NO_DEADLINE;
        LOG.info("handed the final {} changed pages of '{}' (guest write cache {}) to {}", pages.length, image.name,
            writeback ? "writeback" : "write-through", connection.peer());
    }

    private void offerRdma(final long id) throws IOException {
        if (rdma != null) {
            writeFully(ProviderProtocol.encodeControlAnswer(id, RESPONSE_RDMA_UNAVAILABLE,
                ProviderProtocol.reasonBytes("an RDMA offer is already open on this connection")));
            return;
        }
        try {
            rdma = server.rdma.offer(image.name, image.path, image.manifest.size(), (java.net.InetSocketAddress) channel.getLocalAddress(),
                connection.peer());
        } catch (final RdmaExporter.Unavailable e) {
            LOG.debug("no RDMA for {} (image '{}'): {}", connection.peer(), image.name, e.getMessage());
            writeFully(ProviderProtocol.encodeControlAnswer(id, RESPONSE_RDMA_UNAVAILABLE, ProviderProtocol.reasonBytes(e.getMessage())));
            return;
        }
        final ByteBuffer offer = rdma.offer().encode();
        final byte[] bytes = new byte[offer.remaining()];
        offer.get(bytes);
        writeFully(ProviderProtocol.encodeControlAnswer(id, RESPONSE_RDMA_OFFER, bytes));
        LOG.info("offered RDMA reads of '{}' to {}: {}", image.name, connection.peer(), rdma.offer());
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

    private void respond(final ByteBuffer header, final long id, final int first, final int count) throws IOException {
        final PageGeometry g = image.manifest.geometry();
        final long position = g.pageStart(first);
        int length = rangeBytes(g, first, count);
        int status = RESPONSE_OK;
        if (position + length > image.file.size()
            || !image.availability.has(first, count) && !image.availability.await(first, count, MISSING_PAGE_WAIT_NANOS)) {
            // The image shrank under us, or (a peer, a host cache whose source failed) does not hold these pages: say so,
            // keep the connection. A host cache fetched them meanwhile if it could (this connection waited for it).
            status = RESPONSE_READ_ERROR;
            length = 0;
        }
        header.clear();
        header.putLong(RESPONSE_ID_OFFSET, id).putInt(RESPONSE_STATUS_OFFSET, status).putInt(RESPONSE_LENGTH_OFFSET, length);
        // Counted before sending, so whoever has received a response also sees it counted.
        server.stats.requests.increment();
        server.stats.bytes.add(length);
        image.bytesSent.add(length);
        connection.await(Waiting.WRITE, ImageServer.WRITE_STALL_NANOS);
        if (length > 0 && image.corruptsAny(first, count)) {
            writeCorrupted(header, first, count, position, length);
        } else if (length > 0 && image.verifyServed) {
            writeVerified(header, id, first, count, position, length);
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
        connection.deadlineNanos = NO_DEADLINE;
    }

    /**
     * A file others write to (a peer export): reads the pages into memory, checks each against its hash, and sends those
     * bytes, not a second read of the file; if any page differs from the image (its engine's guest wrote there since the
     * records were read), the answer is "not here" and nothing of it leaves the host.
     */
    private void writeVerified(final ByteBuffer header, final long id, final int first, final int count,
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
    private void writeCorrupted(final ByteBuffer header, final int first, final int count,
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

}
