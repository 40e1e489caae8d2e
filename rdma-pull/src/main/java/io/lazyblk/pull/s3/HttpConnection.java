package io.lazyblk.pull.s3;

import javax.net.ssl.SNIHostName;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLEngineResult;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLParameters;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.SocketChannel;
import java.util.List;
import java.util.function.Consumer;

/**
 * One HTTP/1.1 connection to an S3 endpoint, plain or TLS ({@link SSLEngine} over the same channel), used by one
 * request at a time (see {@link HttpPool}). Bytes move through this connection's own buffers, allocated once: the
 * request is written from a reusable direct buffer, and a data body is read straight into the caller's destination
 * (see {@link HttpExchange}). The bytes this class reads and writes are framed by {@link HttpExchange}.
 *
 * <p>Why a non-blocking channel and a {@link Selector}: a blocking {@link SocketChannel} has no read timeout, and its
 * socket adaptor's {@code SO_TIMEOUT} only applies to the adaptor's stream, which reads into heap arrays (a copy). In
 * non-blocking mode a read goes straight into the destination buffer and only an empty read waits, in
 * {@link Selector#select(Consumer, long)} (the form that fills no selected-key set, so waiting allocates nothing),
 * bounded by the request's deadline. An interrupt wakes that wait: the request then ends with an
 * {@link InterruptedIOException}.
 */
final class HttpConnection implements AutoCloseable {
    /** The request head's buffer: S3's longest requests carry a session token (about 1 to 2 KiB) and a signature. */
    static final int REQUEST_HEAD_BYTES = 16 << 10;
    /** The longest response head accepted: S3's are well under 2 KiB; a longer one is hostile or not S3. */
    static final int MAX_HEAD_BYTES = 16 << 10;
    private static final Consumer<SelectionKey> IGNORE = k -> { };
    /** Nothing to send: what a handshake's wrap takes (never written to, so shared). */
    private static final ByteBuffer EMPTY = ByteBuffer.allocate(0);

    final String key;
    private final String host;
    private final SocketChannel channel;
    private final Selector selector;
    private final SelectionKey selectionKey;
    private final ByteBuffer out = ByteBuffer.allocateDirect(REQUEST_HEAD_BYTES);
    /** Bytes read and not yet consumed (a response's head, the start of its body), in write mode: data in [0, position). */
    final ByteBuffer in = ByteBuffer.allocateDirect(MAX_HEAD_BYTES);
    /** The response head, copied out of {@link #in} for parsing. */
    final byte[] head = new byte[MAX_HEAD_BYTES];
    /** A non-data body (S3's error XML), bounded. */
    final byte[] small = new byte[S3Client.MAX_ERROR_BODY];
    private final Tls tls;
    private int interest;
    /** When this connection last finished a request (System.nanoTime), for the pool's idle limit. */
    long idleSince;
    /** Whether this connection served a request before the current one (a reused one may have been closed by S3). */
    boolean reused;

    private HttpConnection(final String key, final String host, final SocketChannel channel, final Selector selector,
                           final SSLEngine engine) throws IOException {
        this.key = key;
        this.host = host;
        this.channel = channel;
        this.selector = selector;
        this.selectionKey = channel.register(selector, 0);
        this.tls = engine == null ? null : new Tls(engine);
    }

    /**
     * Connects to {@code host:port} within {@code connectMillis}, and for {@code tls != null} completes a TLS handshake
     * that checks the server's certificate names {@code host} (and sends it as SNI), within {@code deadline}.
     */
    static HttpConnection open(final String key, final String host, final int port, final SSLContext tls,
                               final long connectMillis, final long deadline) throws IOException {
        final InetSocketAddress address = new InetSocketAddress(host, port);
        if (address.isUnresolved()) {
            throw new IOException("cannot resolve the S3 host " + host);
        }
        final SocketChannel ch = SocketChannel.open();
        Selector sel = null;
        HttpConnection c = null;
        try {
            ch.configureBlocking(false);
            ch.setOption(StandardSocketOptions.TCP_NODELAY, true);
            sel = Selector.open();
            SSLEngine engine = null;
            if (tls != null) {
                engine = tls.createSSLEngine(host, port);
                engine.setUseClientMode(true);
                final SSLParameters p = engine.getSSLParameters();
                p.setEndpointIdentificationAlgorithm("HTTPS");
                if (!isIpLiteral(host)) {
                    p.setServerNames(List.of(new SNIHostName(host))); // not for an IP address, which SNI cannot name
                }
                engine.setSSLParameters(p);
            }
            c = new HttpConnection(key, host, ch, sel, engine);
            final long connectBy = Math.min(deadline, System.nanoTime() + connectMillis * 1_000_000L);
            try {
                if (!ch.connect(address)) {
                    while (!ch.finishConnect()) {
                        c.await(SelectionKey.OP_CONNECT, connectBy, "connecting");
                    }
                }
            } catch (final InterruptedIOException e) {
                throw e;
            } catch (final IOException e) {
                throw new IOException("cannot connect to S3 at " + host + ":" + port + " (" + e.getMessage() + ")", e);
            }
            if (c.tls != null) {
                c.tls.handshake(deadline);
            }
            return c;
        } catch (final IOException | RuntimeException e) {
            if (c != null) {
                c.close();
            } else {
                ch.close();
                if (sel != null) {
                    sel.close();
                }
            }
            throw e;
        }
    }

    private static boolean isIpLiteral(final String host) {
        return host.indexOf(':') >= 0 || host.chars().allMatch(ch -> ch == '.' || (ch >= '0' && ch <= '9'));
    }

    String host() {
        return host;
    }

    /** The request head buffer, cleared, for {@link HttpExchange} to fill. */
    ByteBuffer requestHead() {
        return out.clear();
    }

    /** Writes all of {@code src} (plain, or encrypted first) by {@code deadline}. */
    void writeFully(final ByteBuffer src, final long deadline) throws IOException {
        if (tls != null) {
            tls.write(src, deadline);
            return;
        }
        while (src.hasRemaining()) {
            if (channel.write(src) == 0) {
                await(SelectionKey.OP_WRITE, deadline, "sending the request");
            }
        }
    }

    /**
     * Reads what is there (waiting for at least one byte until {@code deadline}) into {@code dst}, which must have room:
     * the number of bytes read, or -1 at the end of the stream.
     */
    int read(final ByteBuffer dst, final long deadline) throws IOException {
        if (tls != null) {
            return tls.read(dst, deadline);
        }
        for (;;) {
            final int n = channel.read(dst);
            if (n != 0) {
                return n;
            }
            await(SelectionKey.OP_READ, deadline, "waiting for the response");
        }
    }

    /** Bytes read past what the last response used (plaintext held by TLS included): none on a healthy connection. */
    boolean holdsUnreadBytes() {
        return in.position() > 0 || (tls != null && tls.spill.position() > 0);
    }

    /**
     * Whether this idle connection still looks usable: no bytes arrived unasked and the server has not closed it (a
     * non-blocking read that finds nothing). A server that closed it, or sent bytes no request asked for, makes it
     * unusable.
     */
    boolean stillOpen() {
        if (!channel.isOpen() || holdsUnreadBytes()) {
            return false;
        }
        try {
            if (tls != null) {
                // Bytes may be a late TLS message (a session ticket) or a close_notify: kept for the next read, which
                // handles both (a close_notify before any response byte makes the request retry on a fresh connection).
                return tls.netIn.hasRemaining() && channel.read(tls.netIn) >= 0;
            }
            return channel.read(in) == 0; // -1: closed by the server; >0: bytes nobody asked for
        } catch (final IOException e) {
            return false;
        }
    }

    /** Waits until the channel is ready for {@code ops} or {@code deadline} passes (then an IOException). */
    private void await(final int ops, final long deadline, final String doing) throws IOException {
        final long left = deadline - System.nanoTime();
        if (left <= 0) {
            throw new IOException("S3 at " + host + " timed out " + doing);
        }
        if (interest != ops) {
            selectionKey.interestOps(ops);
            interest = ops;
        }
        selector.select(IGNORE, Math.max(1, left / 1_000_000L));
        if (Thread.currentThread().isInterrupted()) {
            throw new InterruptedIOException("interrupted " + doing + " (S3 at " + host + ")");
        }
    }

    @Override
    public void close() {
        try {
            channel.close();
        } catch (final IOException e) {
            // nothing to do: the fd is released either way
        }
        try {
            selector.close();
        } catch (final IOException e) {
            // as above
        }
    }

    /**
     * TLS on the channel: records are read into {@link #netIn} and unwrapped straight into the caller's buffer when it
     * has room for a whole record, else into {@link #spill} and copied from there.
     */
    private final class Tls {
        private final SSLEngine engine;
        final ByteBuffer netIn;
        private final ByteBuffer netOut;
        /** Plaintext unwrapped but not yet handed out, in write mode: data in [0, position). */
        final ByteBuffer spill;
        private final int appSize;

        Tls(final SSLEngine engine) {
            this.engine = engine;
            final int packet = engine.getSession().getPacketBufferSize();
            this.appSize = engine.getSession().getApplicationBufferSize();
            this.netIn = ByteBuffer.allocateDirect(packet);
            this.netOut = ByteBuffer.allocateDirect(packet);
            this.spill = ByteBuffer.allocateDirect(appSize);
        }

        void handshake(final long deadline) throws IOException {
            engine.beginHandshake();
            for (;;) {
                switch (engine.getHandshakeStatus()) {
                    case NEED_WRAP -> wrapOnce(EMPTY, deadline);
                    case NEED_UNWRAP, NEED_UNWRAP_AGAIN -> {
                        if (unwrapOnce(spill, deadline) < 0) {
                            throw new IOException("S3 at " + host + " closed the connection during the TLS handshake");
                        }
                    }
                    case NEED_TASK -> runTasks();
                    default -> {
                        return;
                    }
                }
            }
        }

        void write(final ByteBuffer src, final long deadline) throws IOException {
            while (src.hasRemaining()) {
                wrapOnce(src, deadline);
            }
        }

        int read(final ByteBuffer dst, final long deadline) throws IOException {
            for (;;) {
                if (spill.position() > 0) {
                    spill.flip();
                    final int n = Math.min(spill.remaining(), dst.remaining());
                    final int limit = spill.limit();
                    spill.limit(spill.position() + n);
                    dst.put(spill);
                    spill.limit(limit);
                    spill.compact();
                    return n;
                }
                final boolean direct = dst.remaining() >= appSize;
                final int n = unwrapOnce(direct ? dst : spill, deadline);
                if (engine.getHandshakeStatus() == SSLEngineResult.HandshakeStatus.NEED_WRAP) {
                    wrapOnce(EMPTY, deadline); // a post-handshake answer the server asked for (a TLS 1.3 key update)
                }
                if (n < 0 || (direct && n > 0)) {
                    return n; // the end, or plaintext unwrapped straight into dst; else the loop copies from spill
                }
            }
        }

        /** One record wrapped from {@code src} and sent. */
        private void wrapOnce(final ByteBuffer src, final long deadline) throws IOException {
            netOut.clear();
            final SSLEngineResult r = engine.wrap(src, netOut);
            if (r.getStatus() == SSLEngineResult.Status.CLOSED) {
                throw new IOException("the TLS session with S3 at " + host + " is closed");
            }
            if (r.getStatus() != SSLEngineResult.Status.OK) {
                throw new IOException("TLS wrap with S3 at " + host + ": " + r.getStatus());
            }
            netOut.flip();
            while (netOut.hasRemaining()) {
                if (channel.write(netOut) == 0) {
                    await(SelectionKey.OP_WRITE, deadline, "sending the request");
                }
            }
            if (r.getHandshakeStatus() == SSLEngineResult.HandshakeStatus.NEED_TASK) {
                runTasks();
            }
        }

        /**
         * Unwraps one record into {@code dst}, reading from the channel as needed: plaintext bytes produced (0 for a
         * record that carried none, e.g. a TLS 1.3 session ticket), or -1 at the end of the stream.
         */
        private int unwrapOnce(final ByteBuffer dst, final long deadline) throws IOException {
            for (;;) {
                if (netIn.position() > 0) {
                    netIn.flip();
                    final SSLEngineResult r;
                    try {
                        r = engine.unwrap(netIn, dst);
                    } finally {
                        netIn.compact();
                    }
                    if (r.getHandshakeStatus() == SSLEngineResult.HandshakeStatus.NEED_TASK) {
                        runTasks();
                    }
                    switch (r.getStatus()) {
                        case OK -> {
                            return r.bytesProduced();
                        }
                        case CLOSED -> {
                            return -1;
                        }
                        case BUFFER_OVERFLOW -> throw new IOException("TLS record from S3 at " + host + " larger than "
                            + dst.remaining() + " bytes of room");
                        case BUFFER_UNDERFLOW -> {
                            if (!netIn.hasRemaining()) {
                                throw new IOException("TLS record from S3 at " + host + " larger than " + netIn.capacity() + " bytes");
                            }
                        }
                    }
                }
                final int n = channel.read(netIn);
                if (n < 0) {
                    try {
                        engine.closeInbound();
                    } catch (final SSLException e) {
                        // the server closed without close_notify; the framing above notices a cut body
                    }
                    return -1;
                }
                if (n == 0) {
                    await(SelectionKey.OP_READ, deadline, "waiting for the response");
                }
            }
        }

        private void runTasks() {
            for (Runnable t; (t = engine.getDelegatedTask()) != null; ) {
                t.run();
            }
        }
    }
}
