package io.lazyblk.pull.s3;

import javax.net.ssl.SSLContext;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A tiny HTTP server on loopback (plain, or TLS with a test's SSLContext) that answers each connection with a test's
 * script: for testing the S3 client's HTTP layer against answers s3proxy never gives (malformed, over-long, closed).
 * One thread per connection; the script reads requests with {@link #readHead} and writes whatever bytes it likes.
 */
final class CannedHttpServer implements AutoCloseable {
    /** One connection's script; {@code n} counts connections from 0. */
    @FunctionalInterface
    interface Script {
        void serve(int n, Socket s, InputStream in, OutputStream out) throws Exception;
    }

    private final ServerSocket server;
    private final boolean tls;
    private final Script script;
    private final AtomicInteger connections = new AtomicInteger();
    private final AtomicInteger requests = new AtomicInteger();
    private final AtomicInteger closedByClient = new AtomicInteger();
    private final Set<Socket> sockets = ConcurrentHashMap.newKeySet();
    private final Thread acceptor;

    private CannedHttpServer(final ServerSocket server, final boolean tls, final Script script) {
        this.server = server;
        this.tls = tls;
        this.script = script;
        this.acceptor = Thread.ofPlatform().daemon().name("canned-http-accept").start(this::accept);
    }

    static CannedHttpServer start(final Script script) throws IOException {
        return new CannedHttpServer(new ServerSocket(0, 50, InetAddress.getLoopbackAddress()), false, script);
    }

    static CannedHttpServer startTls(final SSLContext ctx, final Script script) throws IOException {
        return new CannedHttpServer(ctx.getServerSocketFactory().createServerSocket(0, 50, InetAddress.getLoopbackAddress()), true,
            script);
    }

    /** {@code http://127.0.0.1:PORT}, or {@code https://HOST:PORT} for a TLS server. */
    URI endpoint(final String host) {
        return URI.create((tls ? "https://" : "http://") + host + ":" + server.getLocalPort());
    }

    URI endpoint() {
        return endpoint("127.0.0.1");
    }

    int connections() {
        return connections.get();
    }

    int requests() {
        return requests.get();
    }

    /** Connections whose client closed them (the script's read ended at end of stream). */
    int closedByClient() {
        return closedByClient.get();
    }

    private void accept() {
        for (;;) {
            final Socket s;
            try {
                s = server.accept();
            } catch (final IOException e) {
                return;
            }
            sockets.add(s);
            final int n = connections.getAndIncrement();
            Thread.ofPlatform().daemon().name("canned-http-" + n).start(() -> {
                try (s) {
                    script.serve(n, s, s.getInputStream(), s.getOutputStream());
                } catch (final Exception e) {
                    // the script's connection ends; the client sees whatever it got
                } finally {
                    sockets.remove(s);
                }
            });
        }
    }

    /**
     * The next request's head (through its blank line), or null at the end of the stream (counted in
     * {@link #closedByClient}). Request bodies are not read: the scripts answer GETs.
     */
    String readHead(final InputStream in) throws IOException {
        final ByteArrayOutputStream head = new ByteArrayOutputStream();
        int matched = 0;
        while (matched < 4) {
            final int b = in.read();
            if (b < 0) {
                closedByClient.incrementAndGet();
                return null;
            }
            head.write(b);
            matched = (b == '\r' && (matched == 0 || matched == 2)) || (b == '\n' && (matched == 1 || matched == 3)) ? matched + 1 : 0;
        }
        requests.incrementAndGet();
        return head.toString(StandardCharsets.ISO_8859_1);
    }

    /** A 206 head for {@code length} bytes at 0 of a larger object, with {@code contentLength} announced. */
    static byte[] partialHead(final int length, final long contentLength, final String extra) {
        return ("HTTP/1.1 206 Partial Content\r\nETag: \"e\"\r\nContent-Range: bytes 0-" + (length - 1) + "/1048576\r\n"
            + "Content-Length: " + contentLength + "\r\n" + extra + "\r\n").getBytes(StandardCharsets.ISO_8859_1);
    }

    @Override
    public void close() throws IOException {
        server.close();
        for (final Socket s : sockets) {
            s.close();
        }
        try {
            acceptor.join(5_000);
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
