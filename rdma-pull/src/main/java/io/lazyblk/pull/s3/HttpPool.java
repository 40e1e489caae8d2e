package io.lazyblk.pull.s3;

import javax.net.ssl.SSLContext;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.lang.foreign.MemorySegment;
import java.net.URI;
import java.security.NoSuchAlgorithmException;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReferenceArray;

/**
 * lazyblk's HTTP/1.1 client for S3 ({@link HttpConnection}, {@link HttpExchange}): at most {@code maxConnections}
 * connections, kept alive between requests. The caller bounds requests at once to {@code maxConnections} (S3Client's
 * semaphore), so an idle connection or room for a new one is always there.
 *
 * <p>Reuse: the most recently used idle connection to the same endpoint first (the others age out: S3 closes
 * connections idle for a while), one idle longer than {@link #IDLE_LIMIT_NANOS} or found closed by the server is
 * closed instead. A connection that failed, was told {@code Connection: close}, or was left mid-body is closed, never
 * reused. A request on a reused connection that fails before any response byte arrives is sent again once on a fresh
 * connection, as browsers do: the server may have closed the connection while the request was on its way.
 *
 * <p>The idle slots are an array of atomic references (taking one is a compare-and-set), so a request takes no lock.
 */
final class HttpPool implements AutoCloseable {
    /** Below the idle timeouts of S3 (about 20 s and more) and of common proxies, so that reuse rarely meets a close. */
    static final long IDLE_LIMIT_NANOS = 20_000_000_000L;
    static final long CONNECT_MILLIS = 5_000;

    private final SSLContext tls;
    private final AtomicReferenceArray<HttpConnection> idle;
    /** Connections open (idle or in use); bounded by the idle array's length. */
    private final AtomicInteger open = new AtomicInteger();
    /** Connections ever opened (tests prove reuse with it). */
    private final AtomicInteger opened = new AtomicInteger();
    /** Set by close(); a connection given back after it is closed instead of kept. */
    private volatile boolean closed;

    /** @param tls for https:// endpoints; null: the JDK's default context (its trust store) */
    HttpPool(final int maxConnections, final SSLContext tls) {
        this.idle = new AtomicReferenceArray<>(maxConnections);
        this.tls = tls;
    }

    /**
     * One request: {@code headers} must hold "host" (sent first, as signed), {@code auth} the signature's headers.
     * Fills {@code r}. A 200/206 GET with {@code dst} gets its body in {@code dst} at {@code dstOffset} (at most
     * {@code length} bytes, more is an IOException).
     */
    void send(final String method, final URI uri, final Map<String, String> headers, final Map<String, String> auth,
              final byte[] body, final MemorySegment dst, final long dstOffset, final int length, final long timeoutNanos,
              final S3Client.Response r) throws IOException {
        final long deadline = System.nanoTime() + timeoutNanos;
        final String target = uri.getRawQuery() == null ? uri.getRawPath() : uri.getRawPath() + "?" + uri.getRawQuery();
        final boolean https = "https".equalsIgnoreCase(uri.getScheme());
        final int port = uri.getPort() != -1 ? uri.getPort() : https ? 443 : 80;
        final String key = S3Client.host(uri) + (https ? "/tls" : "");
        final boolean[] started = new boolean[1];
        for (int attempt = 0; ; attempt++) {
            final HttpConnection c = attempt == 0 ? take(key) : null;
            final HttpConnection conn = c != null ? c : connect(key, uri.getHost(), port, https, deadline);
            started[0] = false;
            boolean keep = false;
            try {
                keep = HttpExchange.run(conn, method, target, headers, auth, body, dst, dstOffset, length, deadline, r, started);
            } catch (final InterruptedIOException e) {
                throw e;
            } catch (final IOException e) {
                if (conn.reused && !started[0] && attempt == 0 && !Thread.currentThread().isInterrupted()) {
                    continue; // S3 closed the idle connection as the request went out: once more on a fresh one
                }
                throw e;
            } finally {
                giveBack(conn, keep);
            }
            return;
        }
    }

    private HttpConnection connect(final String key, final String host, final int port, final boolean https, final long deadline)
        throws IOException {
        final SSLContext ctx;
        try {
            ctx = !https ? null : tls != null ? tls : SSLContext.getDefault();
        } catch (final NoSuchAlgorithmException e) {
            throw new IOException("this JDK has no default TLS context for https:// S3 endpoints", e);
        }
        if (open.incrementAndGet() > idle.length()) {
            closeOneIdle(); // an idle connection to another endpoint (another bucket's host) makes room
        }
        try {
            final HttpConnection c = HttpConnection.open(key, host, port, ctx, CONNECT_MILLIS, deadline);
            opened.incrementAndGet();
            return c;
        } catch (final IOException | RuntimeException e) {
            open.decrementAndGet();
            throw e;
        }
    }

    /** The most recently used idle connection to {@code key} that still looks open, or null. */
    private HttpConnection take(final String key) {
        final long now = System.nanoTime();
        for (;;) {
            int best = -1;
            long bestSince = Long.MIN_VALUE;
            for (int i = 0; i < idle.length(); i++) {
                final HttpConnection c = idle.get(i);
                if (c != null && c.key.equals(key) && c.idleSince > bestSince) {
                    best = i;
                    bestSince = c.idleSince;
                }
            }
            if (best < 0) {
                return null;
            }
            final HttpConnection c = idle.get(best);
            // The CAS pairs with giveBack's set: the taker owns the connection, and sees its buffers as left.
            if (c == null || c.idleSince != bestSince || !idle.compareAndSet(best, c, null)) {
                continue; // another thread took it first
            }
            if (now - c.idleSince > IDLE_LIMIT_NANOS || !c.stillOpen()) {
                discard(c);
                continue;
            }
            c.reused = true;
            return c;
        }
    }

    private void giveBack(final HttpConnection c, final boolean keep) {
        if (!keep || closed) {
            discard(c);
            return;
        }
        c.idleSince = System.nanoTime();
        for (int i = 0; i < idle.length(); i++) {
            if (idle.compareAndSet(i, null, c)) {
                if (closed) {
                    closeIdle(); // close() may have swept the slots before this one was set
                }
                return;
            }
        }
        discard(c); // no free slot: cannot happen while requests are bounded by the slots, but never leak it
    }

    private void closeOneIdle() {
        int oldest = -1;
        long since = Long.MAX_VALUE;
        for (int i = 0; i < idle.length(); i++) {
            final HttpConnection c = idle.get(i);
            if (c != null && c.idleSince < since) {
                oldest = i;
                since = c.idleSince;
            }
        }
        if (oldest >= 0) {
            final HttpConnection c = idle.getAndSet(oldest, null);
            if (c != null) {
                discard(c);
            }
        }
    }

    private void discard(final HttpConnection c) {
        c.close();
        open.decrementAndGet();
    }

    private void closeIdle() {
        for (int i = 0; i < idle.length(); i++) {
            final HttpConnection c = idle.getAndSet(i, null);
            if (c != null) {
                discard(c);
            }
        }
    }

    /** Connections open now (for tests). */
    int open() {
        return open.get();
    }

    /** Connections opened so far (for tests). */
    int opened() {
        return opened.get();
    }

    /** Closes the idle connections; one in use is closed when its request ends. */
    @Override
    public void close() {
        closed = true;
        closeIdle();
    }
}
