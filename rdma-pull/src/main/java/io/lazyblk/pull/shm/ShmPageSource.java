package io.lazyblk.pull.shm;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pull.onesided.OneSidedPageSource;
import io.lazyblk.pull.provider.ProviderProtocol;
import io.lazyblk.sys.LibC;
import io.lazyblk.sys.UnixSocket;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.time.Duration;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;

/**
 * A same-host page source ({@code shm://SOCKPATH/NAME}): presents the token on the image server's UNIX socket,
 * receives a read-only fd of the image ({@code SCM_RIGHTS}), and from then on reads pages from it ({@code pread},
 * see {@link ShmReads} for why not a mapping) through the one-sided transport ({@link OneSidedPageSource}) with no
 * round trip and no server CPU. The page cache behind the fd is the host's image cache, shared by every engine on
 * the host. It hands out no boot profile: its reads never reach the provider (see {@link OneSidedPageSource}).
 */
public final class ShmPageSource {
    private static final Logger LOG = LoggerFactory.getLogger(ShmPageSource.class);

    private ShmPageSource() {
    }

    /**
     * Connects, presents {@code token} for {@code image}, maps the image. The handshake is bounded by {@code timeout}.
     *
     * @throws io.lazyblk.pull.provider.ProviderRefusedException if the server refused, with its explanation
     * @throws IOException if it cannot connect, the server breaks the protocol, or the fd does not hold the image
     */
    public static OneSidedPageSource connect(final Path socket, final String image, final String token, final Duration timeout)
        throws IOException {
        return connect(socket, image, token, timeout, OneSidedPageSource.Options.defaults());
    }

    /** As {@link #connect(Path, String, String, Duration)}, with the token {@code token} holds now. */
    public static OneSidedPageSource connect(final Path socket, final String image, final io.lazyblk.pull.token.TokenSource token,
                                             final Duration timeout) throws IOException {
        return connect(socket, image, token.token(), timeout, OneSidedPageSource.Options.defaults());
    }

    public static OneSidedPageSource connect(final Path socket, final String image, final String token, final Duration timeout,
                                             final OneSidedPageSource.Options options) throws IOException {
        final String provider = "unix:" + socket;
        final ByteBuffer hello = ProviderProtocol.encodeHello(image, token);
        final UnixSocket s;
        try {
            s = UnixSocket.connect(socket);
        } catch (final IOException e) {
            throw new IOException("cannot connect to " + socket + ": " + e.getMessage() + " (is 'image-server --unix " + socket
                + "' running?)", e);
        }
        // A silent or stuck server must not hang us: past the deadline the socket is shut down, which ends any read.
        final Thread watchdog = Thread.ofVirtual().start(() -> {
            try {
                Thread.sleep(timeout);
                s.shutdown();
            } catch (final InterruptedException e) {
                // the handshake finished in time
            }
        });
        int fd = -1;
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment out = a.allocate(hello.remaining());
            out.asByteBuffer().put(hello);
            final MemorySegment in = a.allocate(1);
            final Manifest manifest;
            try {
                s.send(out, out.byteSize(), new int[0], 0);
                manifest = ProviderProtocol.readAnswer(n -> read(s, n, provider), provider, image);
            } catch (final io.lazyblk.sys.NativeException e) {
                if (e.errno() != LibC.EPIPE && e.errno() != LibC.ECONNRESET) {
                    throw e;
                }
                // Our hello reached a socket the server had closed unread: as the end of stream in read(), seen from here.
                throw closedDuringHello(provider, e);
            }
            final int[] fds = new int[UnixSocket.MAX_FDS];
            final int[] count = new int[1];
            final long got = s.receive(in, 1, fds, count);
            for (int i = 1; i < count[0]; i++) {
                LibC.close(fds[i]);
            }
            if (got != 1 || count[0] < 1 || in.get(JAVA_BYTE, 0) != ProviderProtocol.SHM_FD_MESSAGE) {
                if (count[0] >= 1) {
                    LibC.close(fds[0]);
                }
                throw new IOException(provider + " accepted the token but sent no image fd: is it a lazyblk image-server --unix?");
            }
            fd = fds[0];
            final long size = LibC.fileSize(fd);
            if (size < manifest.size()) {
                throw new IOException(provider + " handed over a file of " + size + " bytes for image '" + image + "' of "
                    + manifest.size() + " bytes");
            }
            LOG.info("opened image '{}' ({} bytes) from {}: pages are read from the host's cache", image, manifest.size(), provider);
            final ShmReads reads = new ShmReads(fd, "read-only fd of '" + image + "' from " + provider, options.maxIssued());
            fd = -1; // the reads own it now
            try {
                return new OneSidedPageSource("shm-" + image, manifest, reads, options);
            } catch (final RuntimeException e) {
                reads.close();
                throw e;
            }
        } finally {
            watchdog.interrupt();
            if (fd >= 0) {
                LibC.close(fd);
            }
            s.close();
        }
    }

    /** A server at its connection limit for this uid closes before reading the hello. */
    private static IOException closedDuringHello(final String provider, final IOException cause) {
        return new java.io.EOFException(provider + " closed the connection during the hello (is it at its connection limit for"
            + " this uid? its log says so)" + (cause == null ? "" : ": " + cause.getMessage()));
    }

    private static ByteBuffer read(final UnixSocket s, final int n, final String provider) throws IOException {
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment buf = a.allocate(Math.max(1, n));
            if (n > 0 && !s.readFully(buf, n)) {
                throw closedDuringHello(provider, null);
            }
            final byte[] b = new byte[n];
            MemorySegment.copy(buf, JAVA_BYTE, 0, b, 0, n);
            return ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN);
        }
    }
}
