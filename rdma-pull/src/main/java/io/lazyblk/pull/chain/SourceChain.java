package io.lazyblk.pull.chain;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
import org.agrona.concurrent.ManyToManyConcurrentArrayQueue;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.concurrent.atomic.AtomicLongArray;

/**
 * Several sources of one image, nearest first (host cache, peers, the seed provider): each fetch goes to the first
 * source that is up, not backing off, and accepts it; if that source fails the fetch, lacks the pages, or sends
 * bytes that do not match the manifest, the fetch moves on to the next source. A source that is down, corrupt or slow
 * is skipped for a backoff (100 ms doubling to 5 s) and tried again after it; one success resets its backoff.
 *
 * <p>Integrity: every source's pages are checked here against the manifest's SHA-256 page hashes, so a bad peer costs
 * a refetch from the next source and never reaches the engine, and the engine need not hash them again
 * ({@link #verifiesPages()}); bytes from the last source that fail complete {@link #CORRUPT}. Thread-safety: as
 * {@link PageSource}; completions run on the sources' transport threads.
 */
public final class SourceChain implements PageSource {
    private static final Logger LOG = LoggerFactory.getLogger(SourceChain.class);
    private static final long MIN_BACKOFF_NANOS = 100_000_000L;
    private static final long MAX_BACKOFF_NANOS = 5_000_000_000L;
    /** A fetch that takes longer than this marks its source slow: later fetches skip it for a backoff. */
    private static final long SLOW_NANOS = 500_000_000L;
    private static final int MAX_FETCHES = 2048;

    private final PageSource[] sources;
    private final String[] names;
    private final Manifest manifest;
    /** Per source: nanoTime before which it is skipped (0 = not backing off). */
    private final AtomicLongArray skipUntil;
    private final AtomicLongArray backoff;
    private final AtomicLongArray penalties;
    private final Hop[] hops;
    private final ManyToManyConcurrentArrayQueue<Hop> free;
    private final int maxPagesPerFetch;

    /**
     * @param sources nearest first; they must all serve the same image in the same pages
     * @param names how each source is named in log lines
     * @throws IllegalArgumentException naming the odd one out if their manifests differ
     */
    public SourceChain(final List<? extends PageSource> sources, final List<String> names) {
        if (sources.isEmpty() || sources.size() != names.size()) {
            throw new IllegalArgumentException(sources.size() + " sources, " + names.size() + " names");
        }
        this.sources = sources.toArray(PageSource[]::new);
        this.names = names.toArray(String[]::new);
        this.manifest = this.sources[0].manifest();
        int max = Integer.MAX_VALUE;
        for (int i = 0; i < this.sources.length; i++) {
            final Manifest m = this.sources[i].manifest();
            if (!m.sameImage(manifest)) {
                throw new IllegalArgumentException(this.names[i] + " serves another image than " + this.names[0] + " (size " + m.size()
                    + ", page size " + m.pageSize() + ", digest " + m.digestHex() + " against size " + manifest.size() + ", page size "
                    + manifest.pageSize() + ", digest " + manifest.digestHex() + "): every --source must serve the same image,"
                    + " exported with the same --page-size");
            }
            max = Math.min(max, this.sources[i].maxPagesPerFetch());
        }
        this.maxPagesPerFetch = max;
        this.skipUntil = new AtomicLongArray(this.sources.length);
        this.backoff = new AtomicLongArray(this.sources.length);
        this.penalties = new AtomicLongArray(this.sources.length);
        this.hops = new Hop[MAX_FETCHES];
        this.free = new ManyToManyConcurrentArrayQueue<>(MAX_FETCHES);
        for (int i = 0; i < MAX_FETCHES; i++) {
            hops[i] = new Hop();
            free.offer(hops[i]);
        }
    }

    @Override
    public Manifest manifest() {
        return manifest;
    }

    @Override
    public boolean fetch(final int firstPage, final int count, final MemorySegment dst, final int priority, final long tag,
                         final Listener listener) {
        final Hop h = free.poll();
        if (h == null) {
            return false;
        }
        h.firstPage = firstPage;
        h.count = count;
        h.dst = dst;
        h.priority = priority;
        h.tag = tag;
        h.listener = listener;
        h.source = -1;
        h.worst = OK;
        if (!h.next(System.nanoTime())) {
            h.release();
            return false;
        }
        return true;
    }

    @Override
    public int maxPagesPerFetch() {
        return maxPagesPerFetch;
    }

    /** The nearest source's: it takes the fill's runs while it is up. */
    @Override
    public int preferredRunBytes() {
        return sources[0].preferredRunBytes();
    }

    @Override
    public boolean verifiesPages() {
        return true;
    }

    @Override
    public int inFlight() {
        return hops.length - free.size();
    }

    @Override
    public int poll() {
        int n = 0;
        for (final PageSource s : sources) {
            n += s.poll();
        }
        return n;
    }

    /** Up while any source is. */
    @Override
    public boolean connected() {
        for (final PageSource s : sources) {
            if (s.connected()) {
                return true;
            }
        }
        return false;
    }

    @Override
    public void close() {
        for (final PageSource s : sources) {
            s.close();
        }
    }

    /**
     * The first non-empty boot profile of the chain's sources, asked nearest first (each checks its own answer). A
     * source refused at start ({@link RefusedSource}: it serves another image) is not asked; it has nothing to say
     * about this one. One round trip per source asked: call it once, at start.
     */
    @Override
    public int[] bootProfile() {
        for (final PageSource s : sources) {
            if (s instanceof RefusedSource) {
                continue;
            }
            final int[] profile = s.bootProfile();
            if (profile.length > 0) {
                return profile;
            }
        }
        return new int[0];
    }

    /** How many sources the chain holds. */
    public int size() {
        return sources.length;
    }

    /**
     * Source {@code i}'s state for a person: {@code up}, {@code down} (reconnecting), {@code backing-off}, or
     * {@code refused} (it serves another image: never used).
     */
    public String state(final int i) {
        if (sources[i] instanceof RefusedSource) {
            return "refused";
        }
        return backingOff(i) ? "backing-off" : sources[i].connected() ? "up" : "down";
    }

        /** Whether source {@code i} is backing off now (for status and tests). */
    public boolean backingOff(final int i) {
        return System.nanoTime() - skipUntil.get(i) < 0;
    }

    /** How often source {@code i} was put into a backoff (down, corrupt or slow). */
    public long penalties(final int i) {
        return penalties.get(i);
    }

    private void penalize(final int i, final String why) {
        penalties.incrementAndGet(i);
        final long b = Math.min(MAX_BACKOFF_NANOS, Math.max(MIN_BACKOFF_NANOS, backoff.get(i) * 2));
        backoff.set(i, b);
        final long until = System.nanoTime() + b;
        final long before = skipUntil.getAndSet(i, until);
        if (before == 0 || System.nanoTime() - before > 0) { // one line each time it enters a backoff, not per fetch
            LOG.warn("source {} {}: skipped for {} ms, then tried again", names[i], why, b / 1_000_000);
        }
    }

    /** A success ends the backoff once it has run out (fetches that were in flight when it began do not end it). */
    private void reward(final int i) {
        if (backoff.get(i) != 0 && System.nanoTime() - skipUntil.get(i) > 0) {
            backoff.set(i, 0);
            skipUntil.set(i, 0);
        }
    }

    /** One fetch's way along the chain: it is the listener of whichever source carries it now. */
    private final class Hop implements Listener {
        int firstPage;
        int count;
        MemorySegment dst;
        int priority;
        long tag;
        Listener listener;
        int source;
        int worst;
        long startedNanos;

        /** Hands the fetch to the next usable source after {@link #source}; false if none took it. */
        boolean next(final long now) {
            for (int i = source + 1; i < sources.length; i++) {
                if (now - skipUntil.get(i) < 0 && i < sources.length - 1) {
                    continue; // backing off; the last source is always tried: there is nowhere else to go
                }
                if (!sources[i].connected()) {
                    worst = UNAVAILABLE;
                    continue;
                }
                // Fields written above and here are published to the completing thread by the source's submit (a release).
                source = i;
                startedNanos = now;
                if (sources[i].fetch(firstPage, count, dst, priority, 0, this)) {
                    return true;
                }
            }
            return false;
        }

        @Override
        public void onFetched(final long ignored, final int first, final int n, final int status) {
            final int i = source;
            final long now = System.nanoTime();
            int st = status;
            if (st == OK && !verified()) {
                penalize(i, "sent pages " + firstPage + ".." + (firstPage + count - 1) + " that fail their hashes");
                st = CORRUPT;
            }
            if (st == OK) {
                if (now - startedNanos > SLOW_NANOS) {
                    penalize(i, "took " + (now - startedNanos) / 1_000_000 + " ms for one fetch");
                } else {
                    reward(i);
                }
                finish(OK);
                return;
            }
            if (st == UNAVAILABLE) {
                penalize(i, "is unreachable");
                worst = UNAVAILABLE;
            } else if (st == CORRUPT) {
                worst = CORRUPT; // if no source has the right bytes, the engine hears so (and fails after a second try)
            } else if (worst == OK) {
                worst = FAILED; // it lacks these pages (a peer still filling) or refused: the next source may have them
            }
            if (!next(now)) {
                finish(worst == OK ? FAILED : worst);
            }
        }

        /** Checks each page against the manifest's hashes (the manifest's provider pages: what fetches count in). */
        private boolean verified() {
            long at = 0;
            for (int p = firstPage; p < firstPage + count; p++) {
                final int len = manifest.geometry().pageLength(p);
                if (!manifest.verify(p, dst, at)) {
                    return false;
                }
                at += len;
            }
            return true;
        }

        private void finish(final int status) {
            final Listener l = listener;
            final long t = tag;
            final int f = firstPage;
            final int n = count;
            release();
            l.onFetched(t, f, n, status);
        }

        void release() {
            dst = null;
            listener = null;
            free.offer(this); // ordered store: our writes happen before the next fetch's poll takes this hop
        }
    }
}
