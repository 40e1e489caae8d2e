package io.lazyblk.tools;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;

/**
 * The raw cost a TCP page source is measured against: a bare server on loopback that answers each 16-byte request
 * with {@code pageBytes} from memory (no file, no protocol checks, one platform thread), and a bare client. What
 * lazyblk adds on top of this is its overhead.
 */
public final class BareTcp implements AutoCloseable {
    private final ServerSocketChannel listener;
    private final Thread server;
    private final SocketChannel client;
    private final ByteBuffer request = ByteBuffer.allocateDirect(16).order(ByteOrder.LITTLE_ENDIAN);
    private final ByteBuffer answer;

    public BareTcp(final int pageBytes) throws IOException {
        listener = ServerSocketChannel.open().bind(new InetSocketAddress("127.0.0.1", 0));
        server = Thread.ofPlatform().daemon().name("bare-tcp").start(() -> serve(pageBytes));
        client = SocketChannel.open(listener.getLocalAddress());
        client.setOption(StandardSocketOptions.TCP_NODELAY, true);
        answer = ByteBuffer.allocateDirect(pageBytes);
    }

    private void serve(final int pageBytes) {
        try (SocketChannel s = listener.accept()) {
            s.setOption(StandardSocketOptions.TCP_NODELAY, true);
            final ByteBuffer in = ByteBuffer.allocateDirect(16);
            final ByteBuffer page = ByteBuffer.allocateDirect(pageBytes);
            while (true) {
                in.clear();
                while (in.hasRemaining()) {
                    if (s.read(in) < 0) {
                        return;
                    }
                }
                final long bytes = in.getLong(8);
                for (long sent = 0; sent < bytes; ) {
                    page.clear().limit((int) Math.min(pageBytes, bytes - sent));
                    while (page.hasRemaining()) {
                        sent += s.write(page);
                    }
                }
            }
        } catch (final IOException e) {
            // the client went away: done
        }
    }

    /** One request, one page back: the bare round trip. */
    public void roundTrip() throws IOException {
        exchange(answer.capacity());
    }

    /** Asks for {@code bytes} and reads them all: a bulk copy over the same link. */
    public void exchange(final long bytes) throws IOException {
        request.clear();
        request.putLong(0, 0).putLong(8, bytes);
        while (request.hasRemaining()) {
            client.write(request);
        }
        for (long got = 0; got < bytes; ) {
            answer.clear().limit((int) Math.min(answer.capacity(), bytes - got));
            final int n = client.read(answer);
            if (n < 0) {
                throw new IOException("bare server closed");
            }
            got += n;
        }
    }

    @Override
    public void close() throws IOException {
        client.close();
        listener.close();
        try {
            server.join(5000);
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
