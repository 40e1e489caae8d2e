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
    /**
     * Beyond a migration wait's own bound, how long the watchdog lets {@link MigrationControl#awaitFinal} overrun before
     * it closes the connection (which interrupts the wait): 10 s, half the wait again, against an engine that blocks.
     */
    static final long MIGRATION_GRACE_NANOS = 10_000_000_000L;
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
    final long idleNanos;
    private String imageName = "?";
    /** The hello's protocol version ({@link ProviderProtocol#MIN_VERSION} to {@link ProviderProtocol#VERSION}). */
    private int version;
    /** The request loop of an authenticated TCP client; null before (and for UNIX-socket clients). This thread only. */
    private PageRequests requests;
    /** This connection's thread while it waits in {@link #awaitFinal}, else null. Guarded by {@code this}. */
    private Thread migrationWaiter;
    /** {@link #abort()} was called. Guarded by {@code this}: a wait that starts after it ends at once. */
    private boolean aborted;

    /** What a connection's thread may be blocked on, with a deadline; the watchdog says which when it closes one. */
    enum Waiting {
        HELLO("no complete hello within " + ImageServer.HELLO_TIMEOUT_NANOS / 1_000_000_000L + " s"),
        CONTROL("stalled inside a control request"),
        WRITE("not reading its responses (a write stalled " + ImageServer.WRITE_STALL_NANOS / 1_000_000_000L + " s)"),
        HANDED_OVER("still connected " + ImageServer.HELLO_TIMEOUT_NANOS / 1_000_000_000L + " s after the hand-over"),
        MIGRATION("the migrating engine did not answer a wait for its switchover within "
            + (ProviderProtocol.MIGRATION_WAIT_MILLIS / 1000 + MIGRATION_GRACE_NANOS / 1_000_000_000L) + " s"),
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
    void await(final Waiting what, final long nanos) {
        waiting = what; // before the deadline: see waiting
        deadlineNanos = System.nanoTime() + nanos;
    }

    String imageName() {
        return imageName;
    }

    String peer() {
        return peer;
    }

    String describe() {
        return peer + " (image '" + imageName + "')";
    }

    /**
     * Waits up to {@code nanos} for {@code control}'s final set of changed pages (null: not yet), on this connection's
     * thread. Neither the idle timeout nor the stall timeout runs meanwhile; the watchdog ends a wait that overruns
     * its bound by {@link #MIGRATION_GRACE_NANOS}. {@link #abort()} (the watchdog, the server's close) interrupts it.
     *
     * @throws IOException if the connection was aborted before or during the wait
     */
    int[] awaitFinal(final MigrationControl control, final long nanos) throws IOException {
        await(Waiting.MIGRATION, nanos + MIGRATION_GRACE_NANOS);
        synchronized (this) {
            if (aborted) {
                throw new EOFException("connection closed before the wait for the migration's switchover");
            }
            migrationWaiter = Thread.currentThread();
        }
        try {
            return control.awaitFinal(nanos);
        } catch (final InterruptedException e) {
            throw new EOFException("connection closed while waiting for the migration's switchover");
        } finally {
            synchronized (this) {
                migrationWaiter = null;
                // An abort that interrupted us after the wait returned: the channel is closed, the next write fails. The
                // flag must not outlive the wait: an interrupt in a FileChannel call would close the image for every client.
                Thread.interrupted();
            }
            deadlineNanos = NO_DEADLINE;
        }
    }

    /** Ends the connection; from any thread (the watchdog, close()): a blocked read or write returns at once. */
    void abort() {
        synchronized (this) {
            aborted = true;
            if (migrationWaiter != null) {
                // Only inside the wait (both under this lock): an interrupt anywhere else could land in a FileChannel call.
                migrationWaiter.interrupt();
            }
        }
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
                    requests = new PageRequests(this, server, channel, image, version);
                    requests.serve();
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
            if (requests != null) {
                requests.end(); // the boot it recorded is merged; its RDMA access revoked: no READ after the connection ends
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
        final int spoken = Short.toUnsignedInt(fixed.getShort(HELLO_VERSION_OFFSET));
        if (spoken < MIN_VERSION || spoken > VERSION) {
            return refuse(HelloStatus.MALFORMED, "protocol version " + spoken + "; this provider speaks versions " + MIN_VERSION
                + " to " + VERSION);
        }
        this.version = spoken;
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
        if (unix != null && !image.availability.complete()) {
            // A mapping would bypass the per-page check: a peer's local file, or a host cache still filling, is served
            // over TCP only (a host cache over shm:// too once it is complete: an engine's late shm:// source retries).
            return refuse(HelloStatus.UNKNOWN_IMAGE, "'" + imageName + "' is not complete here (an engine's local file, or a host"
                + " cache still filling): it is served page by page over TCP only until then; use its tcp:// address");
        }
        writeFully(ProviderProtocol.encodeAnswer(HelloStatus.OK, "serving '" + imageName + "'", image.manifest));
        LOG.debug("serving '{}' to {}", imageName, peer);
        return image;
    }

    private ServedImage refuse(final HelloStatus status, final String message) throws IOException {
        server.stats.refused.increment();
        server.stats.refusedBy[status.ordinal()].increment();
        // One line: who, which image, why. Never the token: a log reader must not be able to replay it.
        LOG.warn("refused {} for image '{}': {} ({})", peer, imageName, status, message);
        writeFully(ProviderProtocol.encodeAnswer(status, message, null));
        return null;
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

    void writeFully(final ByteBuffer b) throws IOException {
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
