package io.lazyblk.pull.tcp;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.net.InetSocketAddress;

/**
 * tcp:// as the engine uses it: two connections to the provider, a demand lane and a background lane. Over one
 * connection, a demand fetch waits behind every background response already requested on it. With the background
 * window full (16 requests, up to 1 MiB), as it is while a fill runs at full speed, a demand fetch then took 1.17 ms
 * p50 on loopback here, against 81 µs with the connection idle. On its own lane it waits only behind other demand
 * fetches, and the two streams share the link.
 *
 * <p>Each lane is a whole {@link TcpPageSource}: its own transport thread, window and reconnection with backoff.
 * While one lane is down, fetches of both priorities go to the other, so the source is {@link #connected()} while
 * either lane is. Both lanes are checked to serve the same image.
 *
 * <p>Thread-safety: as {@link TcpPageSource}. Completions run on the transport thread of the lane that carried them.
 */
public final class TwoLaneTcpSource implements PageSource {
    private final PageSource demand;
    private final PageSource background;

    /** Over two open sources of one image (lanes, or fakes in a test); closes them when it closes. */
    TwoLaneTcpSource(final PageSource demand, final PageSource background) {
        this.demand = demand;
        this.background = background;
    }

    /**
     * Nice value of the background lane's transport thread: CFS then gives it about a tenth of a contended core's time
     * against a nice-0 thread (weights 110 against 1024), and all of an idle one. {@code -Dlazyblk.fill.nice=0} turns
     * it off (for measuring what it buys).
     */
    static final int BACKGROUND_NICE = Integer.getInteger("lazyblk.fill.nice", 10);

    /** As {@link #connect(InetSocketAddress, String, TokenSource, TcpPageSource.Options)}, with one token for good. */
    public static TwoLaneTcpSource connect(final InetSocketAddress provider, final String image, final String token,
                                           final TcpPageSource.Options options) throws IOException {
        return connect(provider, image, io.lazyblk.pull.token.TokenSource.fixed(token), options);
    }

    /**
     * Opens both lanes to {@code provider}, each presenting the token {@code token} holds for {@code image} when it
     * connects, and again at each reconnect.
     *
     * @throws io.lazyblk.pull.provider.ProviderRefusedException if the provider refused, with its explanation
     * @throws IOException if either connection fails, or the two were answered with different images
     */
    public static TwoLaneTcpSource connect(final InetSocketAddress provider, final String image,
                                           final io.lazyblk.pull.token.TokenSource token, final TcpPageSource.Options options)
        throws IOException {
        // Both handshakes at once: each carries the manifest (4 bytes a page), so one after the other would double
        // the time to the first fetch for a large image.
        final java.util.concurrent.FutureTask<TcpPageSource> demandLane =
            new java.util.concurrent.FutureTask<>(() -> TcpPageSource.connect(provider, image, token, options));
        Thread.ofVirtual().name("lazyblk-tcp-connect-" + image).start(demandLane);
        final TcpPageSource background;
        try {
            background = TcpPageSource.connect(provider, image, token, options);
        } catch (final IOException | RuntimeException e) {
            closeWhenDone(demandLane);
            throw e;
        }
        try {
            final TcpPageSource demand = join(demandLane);
            if (!demand.manifest().sameImage(background.manifest())) {
                demand.close();
                throw new IOException("provider " + provider + " answered two connections for image '" + image
                    + "' with different images (was it replaced just now?); try again");
            }
            // The background lane's thread receives, and when the fill is behind hashes, what nobody waits for: it gives
            // way to the guest's vCPU and the demand lane when cores are short (a miss that finds the demand lane down
            // rides it at that weight until the lane is back).
            background.niceTransport(BACKGROUND_NICE);
            return new TwoLaneTcpSource(demand, background);
        } catch (final IOException | RuntimeException e) {
            background.close();
            throw e;
        }
    }

    /** The demand lane's connection, or what failed it, as if it had been made on this thread. */
    private static TcpPageSource join(final java.util.concurrent.FutureTask<TcpPageSource> lane) throws IOException {
        try {
            return lane.get();
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
            closeWhenDone(lane);
            throw new java.io.InterruptedIOException("interrupted while connecting");
        } catch (final java.util.concurrent.ExecutionException e) {
            if (e.getCause() instanceof IOException io) {
                throw io;
            }
            if (e.getCause() instanceof RuntimeException r) {
                throw r;
            }
            throw new IOException(e.getCause());
        }
    }

    /** Closes the demand lane once its connection attempt ends, if it succeeded; for when the other lane failed. */
    private static void closeWhenDone(final java.util.concurrent.FutureTask<TcpPageSource> lane) {
        Thread.ofVirtual().start(() -> {
            try {
                lane.get().close();
            } catch (final Exception ignored) {
                // it failed too: nothing to close
            }
        });
    }

    @Override
    public Manifest manifest() {
        return background.manifest();
    }

    /** A demand fetch goes on the demand lane and a background one on the background lane, unless that lane is down. */
    @Override
    public boolean fetch(final int firstPage, final int count, final MemorySegment dst, final int priority, final long tag,
                         final Listener listener) {
        final PageSource lane = priority == DEMAND ? demand : background;
        final PageSource other = lane == demand ? background : demand;
        return (lane.connected() || !other.connected() ? lane : other).fetch(firstPage, count, dst, priority, tag, listener);
    }

    @Override
    public int maxPagesPerFetch() {
        return Math.min(demand.maxPagesPerFetch(), background.maxPagesPerFetch());
    }

    /**
     * The demand lane only: a guest waits on its fetches. Background completions stay on their lane's thread, which
     * verifies and writes them: work the polling thread (a virtqueue's) must not take on.
     */
    @Override
    public int poll() {
        return demand.poll();
    }

    @Override
    public int inFlight() {
        return demand.inFlight() + background.inFlight();
    }

    @Override
    public boolean connected() {
        return demand.connected() || background.connected();
    }


    /**
     * The provider's boot profile, asked on the demand lane (idle at start, so the answer is not queued behind the
     * fill), or on the background lane if the demand lane is down.
     */
    @Override
    public int[] bootProfile() {
        return (demand.connected() || !background.connected() ? demand : background).bootProfile();
    }

    /** Closes both lanes; every fetch accepted and not yet completed completes {@link #UNAVAILABLE}. */
    @Override
    public void close() {
        try {
            demand.close();
        } finally {
            background.close();
        }
    }
}
