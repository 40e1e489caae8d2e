package io.lazyblk.tools;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.time.Duration;

/**
 * A source of a chain that could not be reached when the engine started: down until a background thread manages to
 * connect (retrying after 1 s, doubling to 30 s) to a provider serving the same image, then it is that source. So a
 * host cache or a peer that comes up after the engine is used from then on, without a restart.
 *
 * <p>Thread-safety: as {@link PageSource}; the connected source is published through a volatile field.
 */
final class LateSource implements PageSource {
    private static final Logger LOG = LoggerFactory.getLogger(LateSource.class);
    private static final long FIRST_RETRY_MILLIS = 1_000;
    private static final long MAX_RETRY_MILLIS = 30_000;

    private final SourceUri uri;
    /** Read at each attempt: a token file rotated meanwhile is used by the next one. */
    private final io.lazyblk.pull.token.TokenSource token;
    private final Manifest expected;
    private final int maxPagesPerFetch;
    private final Thread retrier;
    private volatile PageSource source;
    private volatile boolean closed;

    /**
     * @param expected the image the chain's other sources serve; a provider serving anything else is not used
     * @param maxPagesPerFetch what the chain promised its users (the others' limit)
     */
    LateSource(final SourceUri uri, final io.lazyblk.pull.token.TokenSource token, final Manifest expected, final int maxPagesPerFetch, final Duration timeout) {
        this.uri = uri;
        this.token = token;
        this.expected = expected;
        this.maxPagesPerFetch = maxPagesPerFetch;
        this.retrier = Thread.ofVirtual().name("lazyblk-late-" + uri.image()).start(() -> retry(timeout));
    }

    private void retry(final Duration timeout) {
        long wait = FIRST_RETRY_MILLIS;
        while (!closed) {
            try {
                Thread.sleep(wait);
            } catch (final InterruptedException e) {
                return; // closed
            }
            wait = Math.min(MAX_RETRY_MILLIS, wait * 2);
            final PageSource s;
            try {
                s = uri.open(token, timeout);
            } catch (final IOException e) {
                continue; // still unreachable: the start-up line said so once; no line per attempt
            }
            if (!s.manifest().sameImage(expected) || s.maxPagesPerFetch() < maxPagesPerFetch) {
                LOG.warn("source {} is reachable now but serves another image (or smaller requests) than the other sources; it stays unused",
                    uri);
                s.close();
                return;
            }
            synchronized (this) {
                if (closed) {
                    s.close();
                    return;
                }
                source = s; // volatile: fetch() on any thread sees a fully built source
            }
            LOG.info("source {} is reachable now: the chain uses it from here on", uri);
            return;
        }
    }

    @Override
    public Manifest manifest() {
        return expected;
    }

    @Override
    public boolean fetch(final int firstPage, final int count, final MemorySegment dst, final int priority, final long tag,
                         final Listener listener) {
        final PageSource s = source;
        return s != null && s.fetch(firstPage, count, dst, priority, tag, listener);
    }

    @Override
    public int maxPagesPerFetch() {
        return maxPagesPerFetch;
    }

    @Override
    public int inFlight() {
        final PageSource s = source;
        return s == null ? 0 : s.inFlight();
    }

    @Override
    public int poll() {
        final PageSource s = source;
        return s == null ? 0 : s.poll();
    }

    /** The connected source's boot profile; empty while it is still unreachable. */
    @Override
    public int[] bootProfile() {
        final PageSource s = source;
        return s == null ? new int[0] : s.bootProfile();
    }

    @Override
    public boolean connected() {
        final PageSource s = source;
        return s != null && s.connected();
    }

    @Override
    public void close() {
        synchronized (this) {
            closed = true;
        }
        retrier.interrupt();
        final PageSource s = source;
        if (s != null) {
            s.close();
        }
    }
}
