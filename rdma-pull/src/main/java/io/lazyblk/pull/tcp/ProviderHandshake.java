package io.lazyblk.pull.tcp;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pull.provider.ProviderProtocol;
import io.lazyblk.pull.provider.ProviderProtocol.HelloStatus;
import io.lazyblk.pull.provider.ProviderRefusedException;

import java.io.DataInputStream;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.function.Consumer;

/**
 * The client side of the provider's hello ({@link ProviderProtocol}): connect, send the hello, read the answer and
 * the manifest, each step bounded by a timeout. Blocking; used by the transport thread when it (re)connects.
 */
public final class ProviderHandshake {
    private ProviderHandshake() {
    }

    /** A connected, greeted channel (still in blocking mode) and the manifest the provider sent. */
    public record Connected(SocketChannel channel, Manifest manifest) {
    }

    /**
     * As {@link #connect(InetSocketAddress, String, String, Duration, Consumer)}, with the token read from {@code token}
     * now: a source that reconnects presents the token its source holds at that moment (a rotated file's new one).
     *
     * @throws IOException also if the token cannot be read, with the token source's message
     */
    public static Connected connect(final InetSocketAddress provider, final String image, final io.lazyblk.pull.token.TokenSource token,
                                    final Duration timeout, final Consumer<SocketChannel> pending) throws IOException {
        return connect(provider, image, token.token(), timeout, pending);
    }

    /**
     * @param pending receives the channel before it connects, so another thread can close it to abort the attempt
     * @throws ProviderRefusedException if the provider refused, with its message
     * @throws IOException if it could not connect, timed out or broke the protocol
     */
    public static Connected connect(final InetSocketAddress provider, final String image, final String token, final Duration timeout,
                             final Consumer<SocketChannel> pending) throws IOException {
        final ByteBuffer hello = ProviderProtocol.encodeHello(image, token);
        final int millis = (int) Math.max(1, Math.min(Integer.MAX_VALUE, timeout.toMillis()));
        final SocketChannel ch = SocketChannel.open();
        pending.accept(ch);
        try {
            ch.setOption(StandardSocketOptions.TCP_NODELAY, true);
            ch.socket().connect(provider, millis);
            ch.socket().setSoTimeout(millis); // the adaptor's input stream honours it; a silent provider cannot hang us
            while (hello.hasRemaining()) {
                ch.write(hello);
            }
            final DataInputStream in = new DataInputStream(ch.socket().getInputStream());
            final Manifest manifest = ProviderProtocol.readAnswer(n -> read(in, n), String.valueOf(provider), image);
            return new Connected(ch, manifest);
        } catch (final java.io.EOFException e) {
            ch.close();
            throw closedDuringHello(provider, e);
        } catch (final java.net.SocketException e) {
            // Refused or unreachable: not connected at all. Reset or broken pipe once connected: our hello reached a socket
            // the provider had closed without reading it, which is the EOF above, seen from the other side.
            final boolean connected = ch.isConnected();
            ch.close();
            throw connected ? closedDuringHello(provider, e) : e;
        } catch (final java.net.SocketTimeoutException e) {
            ch.close();
            throw new IOException("provider " + provider + " did not complete the hello within " + millis + " ms", e);
        } catch (final IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    /** A provider at its connection limit closes before reading the hello, as does one that is no lazyblk provider. */
    private static IOException closedDuringHello(final InetSocketAddress provider, final IOException e) {
        return new IOException("provider " + provider + " closed the connection during the hello (is it at its connection limit"
            + " for this host? its log says so; or is it not a lazyblk image-server?)", e);
    }

    private static ByteBuffer read(final DataInputStream in, final int length) throws IOException {
        final byte[] b = new byte[length];
        in.readFully(b);
        return ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN);
    }
}
