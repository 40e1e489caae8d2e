package io.lazyblk.pull.tcp;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.provider.ProviderProtocol;
import io.lazyblk.pull.sched.FetchScheduler;
import io.lazyblk.pull.token.TokenSource;
import org.agrona.concurrent.AgentRunner;
import org.agrona.concurrent.AgentTerminationException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.net.InetSocketAddress;
import java.time.Duration;

/**
 * A {@link PageSource} over one TCP connection to an image provider ({@link ProviderProtocol}): pipelined requests,
 * demand before background, data read straight into the destination segments. When the connection drops, every
 * fetch in flight completes {@link #UNAVAILABLE}, {@link #connected()} turns false, and the source reconnects in the
 * background with exponential backoff; it resumes only if the provider still serves the same image.
 *
 * <p>Thread-safety: {@link #fetch} and the queries from any thread; completions run on the source's one transport
 * thread ({@code lazyblk-tcp-IMAGE}), so listeners must be quick. Destinations must be accessible from that thread
 * (global, auto or shared arenas). Owns its connection and thread until {@link #close()}.
 */
public final class TcpPageSource implements PageSource {
    private static final Logger LOG = LoggerFactory.getLogger(TcpPageSource.class);

    /**
     * @param maxFetches fetches accepted and not yet completed (power of two); {@link #fetch} returns false beyond
     * @param maxIssuedRequests requests on the wire at once
     * @param maxIssuedBytes bytes requested on the wire at once
     * @param connectTimeout bound on connecting and on the hello
     * @param initialBackoff first wait before reconnecting, doubled per failed attempt...
     * @param maxBackoff ...up to this
     */
    public record Options(int maxFetches, int maxIssuedRequests, int maxIssuedBytes, Duration connectTimeout,
                          Duration initialBackoff, Duration maxBackoff) {
        public Options {
            if (Integer.bitCount(maxFetches) != 1 || maxFetches < 2 || maxIssuedRequests < 1 || maxIssuedBytes < 1) {
                throw new IllegalArgumentException("maxFetches " + maxFetches + " (a power of two), window " + maxIssuedRequests
                    + " requests and " + maxIssuedBytes + " bytes (positive)");
            }
            if (initialBackoff.isNegative() || initialBackoff.isZero() || maxBackoff.compareTo(initialBackoff) < 0) {
                throw new IllegalArgumentException("backoff from " + initialBackoff + " to " + maxBackoff);
            }
        }

        /**
         * 1024 fetches: a background filler's read-ahead plus a guest's queue depth, with room to spare.
         * A window of 16 requests / 1 MiB: enough to keep loopback and a 10 GbE link busy (1 MiB at 10 Gb/s is
         * 0.8 ms, longer than a round trip), yet a demand fetch waits behind at most 3/4 MiB of background data.
         * Reconnect after 50 ms, doubling to 2 s: a restarting provider is back quickly, a dead one costs little.
         */
        public static Options defaults() {
            return new Options(1024, 16, 1 << 20, Duration.ofSeconds(5), Duration.ofMillis(50), Duration.ofSeconds(2));
        }

        public Options withWindow(final int requests, final int bytes) {
            return new Options(maxFetches, requests, bytes, connectTimeout, initialBackoff, maxBackoff);
        }

        public Options withConnectTimeout(final Duration timeout) {
            return new Options(maxFetches, maxIssuedRequests, maxIssuedBytes, timeout, initialBackoff, maxBackoff);
        }

        public Options withBackoff(final Duration initial, final Duration max) {
            return new Options(maxFetches, maxIssuedRequests, maxIssuedBytes, connectTimeout, initial, max);
        }
    }

    private final String image;
    private final Manifest manifest;
    /** Bounds {@link #bootProfile()}'s wait, as it bounds a connect and a hello. */
    private final Duration connectTimeout;
    private final FetchScheduler scheduler;
    private final TcpTransportAgent agent;
    private final AgentRunner runner;
    private final Thread thread;

    private TcpPageSource(final InetSocketAddress provider, final String image, final TokenSource token, final Options options,
                          final ProviderHandshake.Connected first) throws IOException {
        this.image = image;
        this.manifest = first.manifest();
        this.connectTimeout = options.connectTimeout();
        final TcpTransportAgent[] wakeTarget = new TcpTransportAgent[1];
        this.scheduler = new FetchScheduler(manifest.geometry(), ProviderProtocol.maxPagesPerRequest(manifest.pageSize()),
            options.maxFetches(), options.maxIssuedRequests(), options.maxIssuedBytes(), priority -> wakeTarget[0].afterSubmit(priority));
        this.agent = new TcpTransportAgent(provider, image, token, manifest, options, scheduler);
        wakeTarget[0] = agent;
        this.runner = new AgentRunner(agent.idleStrategy(), this::onAgentError, null, agent);
        this.thread = Thread.ofPlatform().daemon().name("lazyblk-tcp-" + image).unstarted(runner);
        scheduler.transportThread(thread);
        agent.attach(first.channel()); // before the thread starts: Thread.start publishes the agent's state to it
        thread.start();
    }

    /** Connects with {@link Options#defaults()}. */
    public static TcpPageSource connect(final InetSocketAddress provider, final String image, final String token) throws IOException {
        return connect(provider, image, token, Options.defaults());
    }

    /** Connects presenting {@code token}, the same one at every reconnect. */
    public static TcpPageSource connect(final InetSocketAddress provider, final String image, final String token,
                                        final Options options) throws IOException {
        return connect(provider, image, TokenSource.fixed(token), options);
    }

    /**
     * Connects to {@code provider}, presents the token {@code token} holds now for {@code image} and learns its
     * manifest. Each reconnect reads {@code token} again, so a rotated token file is used from the next one on.
     *
     * @throws io.lazyblk.pull.provider.ProviderRefusedException if the provider refused, with its explanation
     * @throws IOException if it cannot connect or the provider breaks the protocol
     */
    public static TcpPageSource connect(final InetSocketAddress provider, final String image, final TokenSource token,
                                        final Options options) throws IOException {
        final ProviderHandshake.Connected c = ProviderHandshake.connect(provider, image, token, options.connectTimeout(), ch -> { });
        try {
            return new TcpPageSource(provider, image, token, options, c);
        } catch (final IOException | RuntimeException e) {
            c.channel().close();
            throw e;
        }
    }

    @Override
    public Manifest manifest() {
        return manifest;
    }

    /**
     * Runs this source's transport thread at Linux nice value {@code nice} from its next turn on (0 is the default): for
     * a connection that carries only work nobody waits for, such as the background lane of a {@link TwoLaneTcpSource}.
     */
    public void niceTransport(final int nice) {
        agent.niceTransport(nice);
    }

    @Override
    public boolean fetch(final int firstPage, final int count, final MemorySegment dst, final int priority, final long tag,
                         final Listener listener) {
        return scheduler.submit(firstPage, count, dst, priority, tag, listener);
    }

    /** Most pages one fetch may ask for (the protocol's per-request limit at this page size); longer fetches FAIL. */
    @Override
    public int maxPagesPerFetch() {
        return scheduler.maxPagesPerFetch();
    }

    @Override
    public int inFlight() {
        return scheduler.inFlight();
    }

    /** Reads the responses that have arrived, on the calling thread, if the transport thread is not at it already. */
    @Override
    public int poll() {
        return agent.pollFromCaller();
    }

    @Override
    public boolean connected() {
        return scheduler.isUp();
    }

    /**
     * Asks the provider for the boot profile it learned for this image ({@link ProviderProtocol#OP_PROFILE}), on this
     * source's connection, in order with the fetches; waits up to the connect timeout. Checked before it is returned
     * (hostile input): whole u32 pages, each in the image, none twice, at most {@link #MAX_PROFILE_PAGES}; a bad answer
     * is refused with one log line. Empty if the provider has none, declines, closes the connection (one that does not
     * know the request: the source reconnects as after any drop), or does not answer in time, and at once if the
     * source is not connected.
     */
    @Override
    public int[] bootProfile() {
        if (!connected()) {
            // Not now: a chain asks its sources in turn at start, and one that is down must not hold the others up.
            LOG.info("no boot profile for '{}': not connected to the provider", image);
            return new int[0];
        }
        final java.util.concurrent.CompletableFuture<java.nio.ByteBuffer> answer = agent.askProfile();
        final java.nio.ByteBuffer payload;
        try {
            payload = answer.get(connectTimeout.toNanos(), java.util.concurrent.TimeUnit.NANOSECONDS);
        } catch (final java.util.concurrent.TimeoutException e) {
            LOG.info("no boot profile for '{}': the provider did not answer within {} ms", image, connectTimeout.toMillis());
            return new int[0];
        } catch (final java.util.concurrent.ExecutionException e) {
            LOG.info("no boot profile for '{}': {}", image, e.getCause().getMessage());
            return new int[0];
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
            return new int[0];
        }
        if (payload == null) {
            LOG.info("no boot profile for '{}': the provider has none to give", image);
            return new int[0];
        }
        try {
            return ProviderProtocol.decodeProfileAnswer(payload,
                (int) ((manifest.size() + manifest.sourcePageSize() - 1) / manifest.sourcePageSize()));
        } catch (final IllegalArgumentException e) {
            LOG.warn("refused the boot profile the provider sent for '{}': {}", image, e.getMessage());
            return new int[0];
        }
    }

    /** Why the source is (or last was) disconnected, or null while connected after a clean start. */
    public String lastFailure() {
        return agent.lastFailure();
    }

    /**
     * Closes the connection; every fetch accepted and not yet completed completes {@link #UNAVAILABLE} before this
     * returns (when called from a listener, on the transport thread, they complete right after it returns).
     */
    @Override
    public void close() {
        scheduler.close(); // no fetch is accepted from here on
        agent.requestClose();
        if (Thread.currentThread() != thread) {
            runner.close();
        }
    }

    private void onAgentError(final Throwable t) {
        if (!(t instanceof AgentTerminationException)) {
            LOG.error("transport thread of '{}' failed; it carries on", image, t);
        }
    }
}
