package io.lazyblk.pull.provider;

import io.lazyblk.pagemap.Manifest;

import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;

/** A hand-written provider client that can say anything, malformed included; blocking, with a 10 s read timeout. */
final class RawClient implements AutoCloseable {
    record Answer(int status, String message, Manifest manifest) {
    }

    record Response(long id, int status, byte[] data) {
    }

    private final SocketChannel channel;
    private final DataInputStream in;

    RawClient(final InetSocketAddress server) throws IOException {
        this(server, null);
    }

    /** Connects from {@code from} (a loopback address other than 127.0.0.1 makes another peer), or any if null. */
    RawClient(final InetSocketAddress server, final java.net.InetAddress from) throws IOException {
        channel = SocketChannel.open();
        try {
            if (from != null) {
                channel.bind(new InetSocketAddress(from, 0));
            }
            channel.connect(server);
        } catch (final IOException e) {
            channel.close();
            throw e;
        }
        channel.socket().setSoTimeout(10_000);
        in = new DataInputStream(channel.socket().getInputStream());
    }

    void send(final ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            channel.write(b);
        }
    }

    Answer hello(final String image, final String token) throws IOException {
        send(ProviderProtocol.encodeHello(image, token));
        return answer();
    }

    Answer answer() throws IOException {
        final ByteBuffer head = read(6);
        final int status = head.getInt(0);
        final String message = new String(read(Short.toUnsignedInt(head.getShort(4))).array(), StandardCharsets.UTF_8);
        Manifest manifest = null;
        if (status == ProviderProtocol.HelloStatus.OK.code) {
            manifest = Manifest.decode(read(read(4).getInt(0)));
        }
        return new Answer(status, message, manifest);
    }

    void request(final long id, final int first, final int count) throws IOException {
        send(ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(id).putInt(first).putInt(count).flip());
    }

    Response response() throws IOException {
        final ByteBuffer h = read(16);
        return new Response(h.getLong(0), h.getInt(8), read(h.getInt(12)).array());
    }

    /** True if the server closed the connection (EOF or reset) before sending anything more. */
    boolean closedByServer() throws IOException {
        try {
            return in.read() < 0;
        } catch (final SocketTimeoutException e) {
            return false;
        } catch (final IOException e) {
            return true; // connection reset
        }
    }

    InputStream input() {
        return in;
    }

    private ByteBuffer read(final int n) throws IOException {
        final byte[] b = new byte[n];
        try {
            in.readFully(b);
        } catch (final EOFException e) {
            throw new EOFException("server closed the connection");
        }
        return ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN);
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }
}
