package io.lazyblk.pull.s3;

import io.lazyblk.pull.s3.FaultProxyHttp.Framing;
import io.lazyblk.pull.s3.FaultProxyHttp.Head;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * An HTTP/1.1 proxy in front of an S3 endpoint that fails on a test's script. It listens on 127.0.0.1 and a port the
 * kernel picks; each client connection gets its own upstream connection, kept alive as long as both sides keep theirs.
 * Requests and responses pass byte for byte, headers included: the Host header stays the one the client sent, which
 * is what its SigV4 signature covers and what the server checks it against (so clients sign for the proxy's
 * address). Bodies are framed by Content-Length or chunked transfer coding; responses to HEAD, 1xx, 204 and 304 have
 * none; a response with neither header runs to the end of the connection. {@code Expect: 100-continue} is honoured:
 * the body follows the server's 100, and a final answer instead ends the connection.
 * <p>
 * Faults, taken in arrival order by the next requests on any connection: {@link #failNext} answers requests itself
 * with an S3 error and never forwards them; {@link #dropNext} forwards requests and cuts the client's connection
 * halfway through the response body. An injected failure does not use up a scripted drop.
 * <p>
 * Test-only: one platform thread per client connection, at most {@value #MAX_CONNECTIONS} at once (more are closed on
 * accept, though counted in {@link #maxConnectionsOpen()}). Malformed traffic closes the connection, silently.
 */
public final class S3FaultProxy implements AutoCloseable {
    /** Far above what a test opens: a client that bounds its connections stays well under it. */
    private static final int MAX_CONNECTIONS = 256;
    /** A test that stalls longer than this has failed anyway; the proxy then gives up instead of hanging the run. */
    private static final int UPSTREAM_TIMEOUT_MS = 30_000;
    /** A kept-alive client connection idle this long is closed, as servers do. */
    private static final int CLIENT_IDLE_TIMEOUT_MS = 60_000;
    private static final Duration CLOSE_JOIN = Duration.ofSeconds(5);
    private static final int COPY_BUFFER = 64 * 1024;

    private final InetSocketAddress upstream;
    private final ServerSocket server;
    private final Thread acceptor;
    private final Set<Socket> sockets = ConcurrentHashMap.newKeySet();
    private final Set<Thread> threads = ConcurrentHashMap.newKeySet();
    private final AtomicInteger requests = new AtomicInteger();
    private final AtomicInteger open = new AtomicInteger();
    private final AtomicInteger maxOpen = new AtomicInteger();
    private final AtomicInteger connectionIds = new AtomicInteger();
    /** Written by close(), read by the acceptor and the connection threads so they stop. */
    private volatile boolean closed;

    // The fault script, guarded by this: failNext/dropNext (the test thread) against takeFault (connection threads).
    private int failRemaining;
    private int failStatus;
    private String failCode = "";
    private int dropRemaining;

    private enum Fault { NONE, FAIL, DROP }

    private S3FaultProxy(final InetSocketAddress upstream, final ServerSocket server) {
        this.upstream = upstream;
        this.server = server;
        this.acceptor = Thread.ofPlatform().daemon().name("s3-fault-proxy-accept").unstarted(this::acceptLoop);
    }

    /** Starts a proxy in front of {@code upstream} ({@code http://host:port}; https is not proxied). */
    public static S3FaultProxy start(final URI upstream) throws IOException {
        if (!"http".equals(upstream.getScheme()) || upstream.getPort() < 0) {
            throw new IllegalArgumentException("need http://host:port, got " + upstream);
        }
        final ServerSocket server = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
        final S3FaultProxy proxy = new S3FaultProxy(new InetSocketAddress(upstream.getHost(), upstream.getPort()), server);
        proxy.acceptor.start();
        return proxy;
    }

    /** {@code http://127.0.0.1:PORT}: what clients use as their S3 endpoint (path-style). */
    public URI endpoint() {
        return URI.create("http://" + server.getInetAddress().getHostAddress() + ":" + server.getLocalPort());
    }

    /**
     * The next {@code n} requests are answered by the proxy with {@code status} and an S3 error document whose Code is
     * {@code s3Code} (e.g. 503 SlowDown, 500 InternalError), without reaching the server. Replaces any earlier
     * failNext script still pending.
     */
    public synchronized void failNext(final int n, final int status, final String s3Code) {
        if (n < 0 || status < 400 || status > 599) {
            throw new IllegalArgumentException("n=" + n + " status=" + status);
        }
        failRemaining = n;
        failStatus = status;
        failCode = s3Code;
    }

    /**
     * The next {@code n} forwarded requests get the response head and half the response body (half the first chunk of
     * a chunked one), then their client connection is closed. Replaces any earlier dropNext script still pending.
     */
    public synchronized void dropNext(final int n) {
        if (n < 0) {
            throw new IllegalArgumentException("n=" + n);
        }
        dropRemaining = n;
    }

    /** Requests received from clients, injected failures and drops included. */
    public int requests() {
        return requests.get();
    }

    /** Client connections open now (accepted and not yet closed by either side). */
    public int connectionsOpen() {
        return open.get();
    }

    /** The most client connections ever open at once. */
    public int maxConnectionsOpen() {
        return maxOpen.get();
    }

    private synchronized Fault takeFault() {
        if (failRemaining > 0) {
            failRemaining--;
            return Fault.FAIL;
        }
        if (dropRemaining > 0) {
            dropRemaining--;
            return Fault.DROP;
        }
        return Fault.NONE;
    }

    private synchronized int failStatus() {
        return failStatus;
    }

    private synchronized String failCode() {
        return failCode;
    }

    private void acceptLoop() {
        while (!closed) {
            final Socket client;
            try {
                client = server.accept();
            } catch (final IOException e) {
                return; // close() closed the server socket
            }
            final int now = open.incrementAndGet();
            maxOpen.accumulateAndGet(now, Math::max);
            if (now > MAX_CONNECTIONS || closed) {
                closeQuietly(client);
                open.decrementAndGet();
                continue;
            }
            sockets.add(client);
            final Thread t = Thread.ofPlatform().daemon().name("s3-fault-proxy-conn-" + connectionIds.incrementAndGet())
                .unstarted(() -> serve(client));
            threads.add(t);
            t.start();
        }
    }

    /** One client connection: requests in order, each to the end of its response, until either side closes. */
    private void serve(final Socket client) {
        Socket up = null;
        try {
            client.setSoTimeout(CLIENT_IDLE_TIMEOUT_MS);
            client.setTcpNoDelay(true);
            final InputStream cin = new BufferedInputStream(client.getInputStream(), COPY_BUFFER);
            final OutputStream cout = new BufferedOutputStream(client.getOutputStream(), COPY_BUFFER);
            InputStream upIn = null;
            OutputStream upOut = null;
            while (!closed) {
                final Head req = Head.read(cin, true);
                if (req == null) {
                    return; // the client closed between requests
                }
                requests.incrementAndGet();
                final Fault fault = takeFault();
                if (fault == Fault.FAIL) {
                    // With Expect: 100-continue the client may or may not send the body after a final answer: the
                    // connection cannot be reused, so it gets Connection: close instead of the body being read.
                    final boolean closeAfter = req.expectContinue() || !req.keepAlive();
                    if (!closeAfter) {
                        FaultProxyHttp.copyBody(req.requestFraming(), cin, OutputStream.nullOutputStream(), false);
                    }
                    writeError(cout, req, failStatus(), failCode(), closeAfter);
                    if (closeAfter) {
                        return;
                    }
                    continue;
                }
                if (up == null) {
                    up = new Socket();
                    sockets.add(up);
                    if (closed) {
                        return; // close() may have run before up was in the set
                    }
                    up.connect(upstream, UPSTREAM_TIMEOUT_MS);
                    up.setSoTimeout(UPSTREAM_TIMEOUT_MS);
                    up.setTcpNoDelay(true);
                    upIn = new BufferedInputStream(up.getInputStream(), COPY_BUFFER);
                    upOut = new BufferedOutputStream(up.getOutputStream(), COPY_BUFFER);
                }
                upOut.write(req.raw());
                Head resp = null;
                boolean closeAfter = !req.keepAlive();
                if (req.expectContinue() && req.requestFraming().hasBody()) {
                    upOut.flush();
                    final Head first = Head.read(upIn, false);
                    if (first == null) {
                        return;
                    }
                    if (first.status() == 100) {
                        cout.write(first.raw());
                        cout.flush();
                        FaultProxyHttp.copyBody(req.requestFraming(), cin, upOut, false);
                    } else {
                        resp = first; // answered without the body: the client may still send it
                        closeAfter = true;
                    }
                } else {
                    FaultProxyHttp.copyBody(req.requestFraming(), cin, upOut, false);
                }
                upOut.flush();
                while (resp == null) {
                    final Head h = Head.read(upIn, false);
                    if (h == null) {
                        return;
                    }
                    if (h.status() >= 100 && h.status() < 200) {
                        if (h.status() == 101) {
                            return; // no protocol switching through this proxy
                        }
                        cout.write(h.raw()); // interim (a stray 100, 103): passed on, the final answer follows
                        continue;
                    }
                    resp = h;
                }
                final Framing framing = resp.responseFraming(req.method());
                cout.write(resp.raw());
                final boolean drop = fault == Fault.DROP;
                final boolean complete = FaultProxyHttp.copyBody(framing, upIn, cout, drop);
                cout.flush();
                if (!complete || drop || closeAfter || !resp.keepAlive() || framing.kind() == Framing.Kind.UNTIL_CLOSE) {
                    return;
                }
            }
        } catch (final IOException | RuntimeException e) {
            // A malformed message, a timeout, or either side gone: this connection ends, others carry on.
        } finally {
            if (up != null) {
                closeQuietly(up);
                sockets.remove(up);
            }
            closeQuietly(client);
            sockets.remove(client);
            open.decrementAndGet();
            threads.remove(Thread.currentThread());
        }
    }

    private static void writeError(final OutputStream out, final Head req, final int status, final String code,
                                   final boolean close) throws IOException {
        final String requestId = "FAULT" + Long.toHexString(System.nanoTime()).toUpperCase(Locale.ROOT);
        final byte[] body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>" + code + "</Code><Message>"
            + "injected by S3FaultProxy</Message><RequestId>" + requestId + "</RequestId></Error>")
            .getBytes(StandardCharsets.UTF_8);
        final boolean head = "HEAD".equals(req.method());
        final String headers = "HTTP/1.1 " + status + " " + reason(status) + "\r\n"
            + "Content-Type: application/xml\r\n"
            + "Content-Length: " + (head ? 0 : body.length) + "\r\n"
            + "x-amz-request-id: " + requestId + "\r\n"
            + (close ? "Connection: close\r\n" : "")
            + "\r\n";
        out.write(headers.getBytes(StandardCharsets.ISO_8859_1));
        if (!head) {
            out.write(body);
        }
        out.flush();
    }

    private static String reason(final int status) {
        return switch (status) {
            case 400 -> "Bad Request";
            case 403 -> "Forbidden";
            case 404 -> "Not Found";
            case 409 -> "Conflict";
            case 429 -> "Too Many Requests";
            case 500 -> "Internal Server Error";
            case 502 -> "Bad Gateway";
            case 503 -> "Service Unavailable";
            case 504 -> "Gateway Timeout";
            default -> "Error";
        };
    }

    private static void closeQuietly(final Socket s) {
        try {
            s.close();
        } catch (final IOException ignored) {
            // closing: nothing left to do with it
        }
    }

    /** Stops accepting, closes every connection, and waits for the proxy's threads to end. Idempotent. */
    @Override
    public void close() throws IOException {
        closed = true;
        server.close();
        final long deadline = System.nanoTime() + CLOSE_JOIN.toNanos();
        try {
            // The acceptor first: once it has ended no client socket or thread is added, so the loops below see all.
            acceptor.join(CLOSE_JOIN);
            for (final Socket s : sockets) {
                closeQuietly(s); // an upstream socket added after this is closed by its thread, which sees closed
            }
            for (final Thread t : threads) {
                final long left = deadline - System.nanoTime();
                if (left > 0) {
                    t.join(Duration.ofNanos(left));
                }
            }
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (acceptor.isAlive() || threads.stream().anyMatch(Thread::isAlive)) {
            throw new IllegalStateException("S3FaultProxy threads still running " + CLOSE_JOIN.toSeconds()
                + " s after close");
        }
    }
}
