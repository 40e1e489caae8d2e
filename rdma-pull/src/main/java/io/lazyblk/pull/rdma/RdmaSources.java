package io.lazyblk.pull.rdma;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.onesided.OneSidedPageSource;
import io.lazyblk.pull.provider.ProviderProtocol;
import io.lazyblk.pull.provider.RdmaOffer;
import io.lazyblk.pull.tcp.ProviderHandshake;
import io.lazyblk.pull.tcp.TcpPageSource;
import io.lazyblk.pull.token.TokenSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.channels.SocketChannel;
import java.time.Duration;

/**
 * The engine's entry to {@code rdma://}: a {@link PageSource} that reads by RDMA when this host can
 * ({@link RdmaProbe}) and the provider offers it for this image, and otherwise the ordinary {@link TcpPageSource}
 * to the same provider, with exactly one log line saying why. The token is checked by the provider's TCP hello
 * either way; a refused token is an error, not a fallback. Never lets a missing native library escape.
 */
public final class RdmaSources {
    private static final Logger LOG = LoggerFactory.getLogger(RdmaSources.class);
    /** Reads in flight on the queue pair: 32, as the shared-memory source; enough to cover a round trip of 4 KiB reads. */
    static final int WINDOW = 32;
    /** Bytes in flight: 4 MiB, the one-sided default (a 25 Gb/s link moves that in ~1.3 ms, longer than a round trip). */
    static final int WINDOW_BYTES = 4 << 20;
    /** At most this much per read: as a TCP request ({@link ProviderProtocol#MAX_BYTES_PER_REQUEST}). */
    static final long MAX_READ_BYTES = ProviderProtocol.MAX_BYTES_PER_REQUEST;
    /** Destination regions registered at once: the engine's page buffers are a fixed pool, far fewer than this. */
    static final int MAX_REGISTERED = 1 << 16;

    /** Sets up the queue pair for an offer, claiming its CM source over {@code control}; owns {@code control} on success. */
    @FunctionalInterface
    interface Connector {
        ReadVerbs connect(RdmaOffer offer, RdmaControl control, SocketChannel channel, int window, Duration timeout) throws IOException;
    }

    /** What {@link #open} made, and why: for tests and status. */
    record Opened(PageSource source, boolean rdma, String why) {
    }

    private RdmaSources() {
    }

    /**
     * A source of {@code image} from {@code provider}: RDMA if possible, else TCP. Each step of the set-up is bounded
     * by {@code timeout}.
     *
     * @throws io.lazyblk.pull.provider.ProviderRefusedException if the provider refused the token or the image
     * @throws IOException if the provider cannot be reached even over TCP
     */
    public static PageSource connect(final InetSocketAddress provider, final String image, final String token, final Duration timeout)
        throws IOException {
        return connect(provider, image, TokenSource.fixed(token), timeout);
    }

    /** As {@link #connect(InetSocketAddress, String, String, Duration)}, with the token read from {@code token} at each connect. */
    public static PageSource connect(final InetSocketAddress provider, final String image, final TokenSource token, final Duration timeout)
        throws IOException {
        // A lambda, not a method reference: DisniConnector (and DiSNI behind it) is resolved only when RDMA is really set up.
        return open(provider, image, token, timeout, RdmaProbe.probe(),
            (offer, control, channel, window, t) -> DisniConnector.connect(offer, control, channel, window, t)).source();
    }

    static Opened open(final InetSocketAddress provider, final String image, final String token, final Duration timeout,
                       final RdmaProbe.Availability probe, final Connector connector) throws IOException {
        return open(provider, image, TokenSource.fixed(token), timeout, probe, connector);
    }

    static Opened open(final InetSocketAddress provider, final String image, final TokenSource token, final Duration timeout,
                       final RdmaProbe.Availability probe, final Connector connector) throws IOException {
        if (!probe.usable()) {
            final String why = "RDMA is not usable on this host: " + probe.reason();
            LOG.info("image '{}' from {}: using tcp:// because {}", image, provider, why);
            return new Opened(tcp(provider, image, token, timeout), false, why);
        }
        final ProviderHandshake.Connected c = ProviderHandshake.connect(provider, image, token, timeout, ch -> { });
        String why;
        try {
            final RdmaControl control = new RdmaControl(c.channel(), String.valueOf(provider));
            final RdmaControl.Answer answer = control.requestOffer(c.manifest().size());
            if (answer instanceof RdmaControl.Offered offered) {
                final OneSidedPageSource source = rdma(c, control, offered.offer(), image, provider, timeout, connector);
                if (source != null) {
                    return new Opened(source, true, "RDMA offered: " + offered.offer());
                }
                why = "the provider's RDMA regions overlap by less than one " + c.manifest().pageSize() + "-byte page";
            } else {
                why = "the provider did not offer RDMA: " + ((RdmaControl.Refused) answer).reason();
            }
        } catch (final IOException | RuntimeException | LinkageError e) {
            // LinkageError: a libdisni that loaded in the probe but misses a symbol DiSNI needs now
            why = "RDMA set-up failed: " + e.getMessage();
        }
        closeQuietly(c.channel());
        LOG.warn("image '{}' from {}: using tcp:// because {}", image, provider, why);
        return new Opened(tcp(provider, image, token, timeout), false, why);
    }

    /** The RDMA source for {@code offer}, or null if its regions are unusable at this page size. */
    private static OneSidedPageSource rdma(final ProviderHandshake.Connected c, final RdmaControl control, final RdmaOffer offer,
                                           final String image, final InetSocketAddress provider, final Duration timeout,
                                           final Connector connector) throws IOException {
        final Manifest manifest = c.manifest();
        final long perRead = Math.min(offer.maxReadBytes(), MAX_READ_BYTES);
        final int maxPages = (int) Math.min(256, perRead / manifest.pageSize());
        if (maxPages < 1) {
            return null;
        }
        final OneSidedPageSource.Options options = new OneSidedPageSource.Options(1024, WINDOW, WINDOW_BYTES, maxPages);
        final ReadVerbs verbs = connector.connect(offer, control, c.channel(), WINDOW, timeout);
        try {
            final RdmaReads reads = new RdmaReads(verbs, new MemoryRegistry(verbs.registrar(), MAX_REGISTERED), offer, WINDOW);
            final OneSidedPageSource source = new OneSidedPageSource("rdma-" + image, manifest, reads, options);
            LOG.info("image '{}' from {}: reading by RDMA READ ({})", image, provider, reads.describe());
            return source;
        } catch (final RuntimeException | Error e) {
            verbs.stop(); // the queue pair first, as always
            verbs.close();
            throw e;
        }
    }

    private static PageSource tcp(final InetSocketAddress provider, final String image, final TokenSource token, final Duration timeout)
        throws IOException {
        final TcpPageSource.Options d = TcpPageSource.Options.defaults();
        return io.lazyblk.pull.tcp.TwoLaneTcpSource.connect(provider, image, token, new TcpPageSource.Options(d.maxFetches(),
            d.maxIssuedRequests(), d.maxIssuedBytes(), timeout, d.initialBackoff(), d.maxBackoff()));
    }

    private static void closeQuietly(final SocketChannel ch) {
        try {
            ch.close();
        } catch (final IOException e) {
            // closing: nothing more to do
        }
    }
}
