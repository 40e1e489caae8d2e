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
 * (offset, length) with that many bytes, and a bare client; no protocol checks, one platform thread each. What
 * lazyblk adds on top of this is its overhead. Without an image the server sends the same buffer from memory every
 * time (hot in the CPU caches at both ends); with one it sends the requested range of the file with sendfile(2), as
 * any provider must, so a round trip for a page nobody asked for before pays what a demand miss pays to move it.
 */
public final class BareTcp implements AutoCloseable {
    private final ServerSocketChannel listener;
    private final Thread server;
    private final SocketChannel client;
    private final ByteBuffer request = ByteBuffer.allocateDirect(16).order(ByteOrder.LITTLE_ENDIAN);
    private final ByteBuffer answer;

    public BareTcp(final int pageBytes) throws IOException {
        this(pageBytes, null);
    }

    /** @param image the file the server sends ranges of, or null to send from memory */
    public BareTcp(final int pageBytes, final java.nio.file.Path image) throws IOException {
        listener = ServerSocketChannel.open().bind(new InetSocketAddress("127.0.0.1", 0));
        final java.nio.channels.FileChannel file = image == null ? null : java.nio.channels.FileChannel.open(image);
        server = Thread.ofPlatform().daemon().name("bare-tcp").start(() -> serve(pageBytes, file));
        client = SocketChannel.open(listener.getLocalAddress());
        client.setOption(StandardSocketOptions.TCP_NODELAY, true);
        answer = ByteBuffer.allocateDirect(pageBytes);
    }

    private void serve(final int pageBytes, final java.nio.channels.FileChannel file) {
        try (SocketChannel s = listener.accept(); file) {
            s.setOption(StandardSocketOptions.TCP_NODELAY, true);
            final ByteBuffer in = ByteBuffer.allocateDirect(16).order(ByteOrder.LITTLE_ENDIAN); // as the client writes it
            final ByteBuffer page = ByteBuffer.allocateDirect(pageBytes);
            while (true) {
                in.clear();
                while (in.hasRemaining()) {
                    if (s.read(in) < 0) {
                        return;
                    }
                }
                final long offset = in.getLong(0);
                final long bytes = in.getLong(8);
                if (file != null) {
                    for (long sent = 0; sent < bytes; ) {
                        sent += file.transferTo(offset + sent, bytes - sent, s);
                    }
                    continue;
                }
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

    /** One request for the page at {@code offset} of the image (sendfile), one page back. */
    public void roundTrip(final long offset) throws IOException {
        exchange(offset, answer.capacity());
    }

    /** The last page-sized chunk of the last answer (all of it for a one-page round trip), as received: for tests. */
    byte[] lastAnswer() {
        final byte[] b = new byte[answer.position()];
        answer.duplicate().flip().get(b);
        return b;
    }

    /** Asks for {@code bytes} and reads them all: a bulk copy over the same link. */
    public void exchange(final long bytes) throws IOException {
        exchange(0, bytes);
    }

    private void exchange(final long offset, final long bytes) throws IOException {
        request.clear();
        request.putLong(0, offset).putLong(8, bytes);
        while (request.hasRemaining()) {
            client.write(request);
        }
        answer.clear();
        for (long got = 0; got < bytes; ) {
            if (!answer.hasRemaining()) {
                answer.clear();
            }
            answer.limit((int) Math.min(answer.capacity(), answer.position() + bytes - got));
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
