package io.lazyblk.blk;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pagemap.PageTable;
import org.agrona.collections.IntArrayList;
import org.agrona.concurrent.ManyToOneConcurrentArrayQueue;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.foreign.MemorySegment;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The background fill's fetches: runs of adjacent absent pages, each asked of the source as one request into one
 * contiguous run buffer ({@link PageBuffers#runs}), checked page by page against the manifest, and written to the
 * local file with one {@code pwrite} per stretch of pages the guest wrote no sector of (a page it did is merged around
 * its sectors alone; a page it overwrote whole meanwhile is skipped). Per page it follows the single-page protocol of
 * {@link PageFetches}: claimed ABSENT to FETCHING with its in-flight flag set, so a demand reader that parks on it waits
 * for the run and asks for no second fetch, and made readable (waking its readers) by the merge; local only through a
 * durability round. A run costs one request, one completion, one wake-up of the agent and one write for up to
 * {@link #RUN_BYTES}, where single pages cost one of each per 64 KiB.
 *
 * <p>Threads: everything runs on the fill agent except {@link #onFetched}, on whichever thread completes the fetch,
 * which hashes the run itself when the agent is behind, so both cores hash when the source outruns one. A run buffer
 * belongs to the agent from its submit on, to the completing thread until it is queued back, then to the agent again.
 */
final class BackgroundRuns implements PageSource.Listener {
    private static final Logger LOG = LoggerFactory.getLogger(BackgroundRuns.class);
    /**
     * Bytes of one run. The TCP source lets background requests take three quarters of its 1 MiB window: three 256 KiB
     * runs are on the wire at once, while a run larger than the window's share goes alone and leaves the link idle
     * while each answer turns round. Measured with {@code lazyblk bench-fill} (1 GiB over loopback, 2 cores, a second
     * fill in the same JVM, medians of 4 interleaved rounds): single pages 1.74 engine CPU-s/GB and 0.52 on the provider,
     * 256 KiB runs 1.59 and 0.35; 128 KiB runs filled at 650-680 MB/s against 860-960; 512 KiB no better beyond noise.
     * Most of what is left is the SHA-256 (0.65 s/GB at 1.65 GB/s, OpenSSL's speed here) and the kernel's copies.
     */
    static final int RUN_BYTES = 256 << 10;
    /** Run buffers at most: three on the wire, and as many landed, waiting for the agent or being hashed (2 MiB). */
    static final int MAX_RUNS = 8;
    /** Landed runs queued for the agent at which the completing thread hashes the next run itself. */
    private static final int AGENT_BACKLOG = 1;
    /** A run whose fetch failed is asked for again after this (a provider answering FAILED is not hammered). */
    private static final long RETRY_NANOS = 50_000_000L;

    private final LazyStore store;
    private final Manifest manifest;
    private final PageBuffers buffers;
    private final PageFetches fetches;
    private LazyFill fill;
    /** Pages a run holds at most. */
    final int runPages;
    private final int pageSize;
    private final boolean verifiedBySource;
    /** Per run: its first page, page count and completion status; written by its owner before it hands the run on. */
    private final int[] first;
    private final int[] count;
    private final int[] status;
    /** Per run: which of its pages failed their hash (a bit each), and whether they were hashed yet. */
    private final long[][] bad;
    private final boolean[] hashed;
    private final Integer[] boxes;
    /** Runs landed (any status), from completing threads to the agent. */
    private final ManyToOneConcurrentArrayQueue<Integer> landed;
    private final int[] free;
    private int freeTop;
    private int inFlight;
    /** Pages whose run failed or was refused, still FETCHING with no fetch carrying them: asked for again first. */
    private final IntArrayList pendingFirst = new IntArrayList();
    private final IntArrayList pendingCount = new IntArrayList();
    private long pendingNotBefore;
    private boolean refused;
    private long runsIssued;

    BackgroundRuns(final LazyStore store, final PageBuffers buffers, final PageFetches fetches, final int runPages) {
        this.store = store;
        this.manifest = store.manifest;
        this.buffers = buffers;
        this.fetches = fetches;
        this.runPages = runPages;
        this.pageSize = store.geo.pageSize();
        this.verifiedBySource = store.source.verifiesPages();
        final int n = buffers.runs.length;
        first = new int[n];
        count = new int[n];
        status = new int[n];
        bad = new long[n][(runPages + 63) / 64];
        hashed = new boolean[n];
        boxes = new Integer[n];
        free = new int[n];
        for (int i = 0; i < n; i++) {
            boxes[i] = i;
            free[freeTop++] = i;
        }
        landed = new ManyToOneConcurrentArrayQueue<>(Math.max(2, n));
    }

    void attach(final LazyFill f) {
        this.fill = f;
    }

    /** Run buffers, the most runs in flight at once. */
    int maxRuns() {
        return free.length;
    }

    /** Whether another run may start now: a run buffer is free. */
    boolean hasFree() {
        return freeTop > 0;
    }

    /** Runs submitted and not yet handled by the agent. */
    int inFlight() {
        return inFlight;
    }

    /** Nothing in flight, landed or pending: the fill may wrap around or switch to disk-only. */
    boolean idle() {
        return inFlight == 0 && pendingFirst.isEmpty();
    }

    /** Whether the last {@link #start} or {@link #retryPending} was refused by the source (its pages went pending). */
    boolean refused() {
        return refused;
    }

    long runsIssued() {
        return runsIssued;
    }

    /**
     * Claims up to {@code maxPages} adjacent ABSENT pages from {@code from} (no further than one request may carry) and
     * asks for them as one run. Returns how many were claimed (0 if page {@code from} was not ABSENT); if the source
     * refused, they wait as pending and {@link #refused()} says so. Agent thread; needs {@link #hasFree()}.
     */
    int start(final int from, final int maxPages) {
        refused = false;
        final int maxSource = store.source.maxPagesPerFetch();
        final int pages = store.geo.pageCount();
        final int most = Math.min(maxPages, runPages);
        int n = 0;
        int sourcePages = 0;
        while (n < most && from + n < pages) {
            final int q = from + n;
            final int sp = manifest.sourcePageCount(q);
            if (sourcePages + sp > maxSource || store.table.state(q) != PageTable.ABSENT
                || !store.table.transition(q, PageTable.ABSENT, PageTable.FETCHING)) {
                break;
            }
            if (!fetches.inFlight.compareAndSet(q, 0, 1)) {
                break; // another fetch carries it already (it completes the page); the run ends before it
            }
            n++;
            sourcePages += sp;
        }
        if (n > 0 && !submit(from, n, sourcePages)) {
            pend(from, n);
            refused = true;
        }
        return n;
    }

    /**
     * Asks again for the pages of failed or refused runs that are still FETCHING with no fetch carrying them; a demand
     * may have fetched some meanwhile, or failed them (then they went ABSENT, and the fill's next pass takes them).
     * False if the source refused (the rest stays pending). Agent thread.
     */
    boolean retryPending(final long now) {
        refused = false;
        if (pendingFirst.isEmpty() || now - pendingNotBefore < 0) {
            return true;
        }
        final int maxSource = store.source.maxPagesPerFetch();
        for (int i = pendingFirst.size() - 1; i >= 0 && hasFree(); i--) {
            int q = pendingFirst.getInt(i);
            final int end = q + pendingCount.getInt(i);
            while (q < end && hasFree()) {
                if (store.table.state(q) != PageTable.FETCHING || !fetches.inFlight.compareAndSet(q, 0, 1)) {
                    q++;
                    continue;
                }
                int k = 1;
                int sourcePages = manifest.sourcePageCount(q);
                while (q + k < end && k < runPages && store.table.state(q + k) == PageTable.FETCHING
                    && sourcePages + manifest.sourcePageCount(q + k) <= maxSource && fetches.inFlight.compareAndSet(q + k, 0, 1)) {
                    sourcePages += manifest.sourcePageCount(q + k);
                    k++;
                }
                if (!submit(q, k, sourcePages)) {
                    for (int j = 0; j < k; j++) {
                        fetches.inFlight.set(q + j, 0);
                    }
                    pendingFirst.setInt(i, q);
                    pendingCount.setInt(i, end - q);
                    refused = true;
                    return false;
                }
                q += k;
            }
            if (q >= end) {
                pendingFirst.fastUnorderedRemove(i);
                pendingCount.fastUnorderedRemove(i);
            } else {
                pendingFirst.setInt(i, q);
                pendingCount.setInt(i, end - q);
            }
        }
        return true;
    }

    /** Submits pages {@code [p, p + n)}, claimed, as one fetch into a free run buffer; false (buffer freed) if refused. */
    private boolean submit(final int p, final int n, final int sourcePages) {
        final int r = free[--freeTop];
        // Plain writes, published to the completing thread by the source's submit (a queue offer, a release).
        first[r] = p;
        count[r] = n;
        hashed[r] = verifiedBySource;
        java.util.Arrays.fill(bad[r], 0L);
        inFlight++;
        if (!store.source.fetch(manifest.firstSourcePage(p), sourcePages, buffers.runs[r], PageSource.BACKGROUND, r, this)) {
            inFlight--;
            free[freeTop++] = r;
            return false;
        }
        runsIssued++;
        return true;
    }

    /**
     * Pages {@code [p, p + n)} stay FETCHING with no fetch carrying them, to be asked for again as a run. A page a reader
     * waits on goes to the demand path at once instead (its demand timeout applies if the source stays down): a reader
     * that parked while the run was in flight saw the page's fetch in flight and asked for nothing.
     */
    private void pend(final int p, final int n) {
        for (int i = 0; i < n; i++) {
            // Volatile store, then the volatile read in hasWaiters: pairs with a reader's park (CAS) followed by its read
            // of inFlight in PageFetches.demandIfIdle. Either it sees 0 and asks the agent, or we see it and do.
            fetches.inFlight.set(p + i, 0);
            if (store.table.hasWaiters(p + i)) {
                fill.demand(p + i);
            }
        }
        pendingFirst.addInt(p);
        pendingCount.addInt(n);
    }

    /** The source's completion of a run, on whichever thread delivers it: hashes the run if the agent is behind. */
    @Override
    public void onFetched(final long tag, final int firstPage, final int sourceCount, final int st) {
        final int r = (int) tag;
        status[r] = st;
        if (st == PageSource.OK && !hashed[r] && landed.size() >= AGENT_BACKLOG) {
            hash(r);
        }
        landed.offer(boxes[r]); // ordered store: publishes the status, the hash results and the bytes to the agent's poll
        fill.wake();
    }

    /** Checks every page of run {@code r} against its hashes; whoever holds the run. */
    private void hash(final int r) {
        final MemorySegment seg = buffers.runs[r];
        for (int i = 0; i < count[r]; i++) {
            if (!manifest.verify(first[r] + i, seg, (long) i * pageSize)) {
                bad[r][i >>> 6] |= 1L << i;
            }
        }
        hashed[r] = true;
    }

    private boolean isBad(final int r, final int i) {
        return (bad[r][i >>> 6] & (1L << i)) != 0;
    }

    /** Agent: handles every landed run; returns how many. */
    int landAll() {
        int n = 0;
        Integer r;
        while ((r = landed.poll()) != null) { // acquires what the completing thread wrote
            land(r);
            n++;
        }
        return n;
    }

    private void land(final int r) {
        inFlight--;
        final int p0 = first[r];
        final int n = count[r];
        try {
            if (status[r] != PageSource.OK) {
                pend(p0, n); // UNAVAILABLE (down) or FAILED: asked for again after a pause; a parked reader's demand goes first
                pendingNotBefore = System.nanoTime() + RETRY_NANOS;
                return;
            }
            if (!hashed[r]) {
                hash(r);
            }
            write(r, p0, n);
        } finally {
            free[freeTop++] = r;
        }
    }

    /** Writes run {@code r}'s verified pages to the local file: a stretch of pages the guest left alone in one write. */
    private void write(final int r, final int p0, final int n) {
        final long base = buffers.runs[r].address();
        final MemorySegment iov = buffers.scratchIov.get();
        int i = 0;
        while (i < n) {
            final int p = p0 + i;
            if (isBad(r, i)) {
                fetches.inFlight.set(p, 0);
                fill.checksumFailed(p); // fetched again once, then its readers get IOERR
                i++;
                continue;
            }
            if (!fetches.claimMerge(p)) {
                fetches.inFlight.set(p, 0); // the guest overwrote it whole meanwhile
                i++;
                continue;
            }
            if (guestWrote(p)) {
                mergeAround(p, base + (long) i * pageSize, iov);
                i++;
                continue;
            }
            // p is MERGING and all the image's: so are the pages after it that we can claim without waiting.
            int j = i + 1;
            int around = -1;
            while (j < n && !isBad(r, j) && fetches.tryClaimMerge(p0 + j)) {
                if (guestWrote(p0 + j)) {
                    around = j; // claimed: merged around the guest's sectors right after the stretch
                    break;
                }
                j++;
            }
            writeStretch(p0 + i, j - i, base + (long) i * pageSize, iov);
            if (around >= 0) {
                mergeAround(p0 + around, base + (long) around * pageSize, iov);
                j = around + 1;
            }
            i = j;
        }
    }

    private boolean guestWrote(final int p) {
        return store.guest.anyClaimed(store.geo.pageStart(p) / GuestSectors.SECTOR, store.geo.pageLength(p) / GuestSectors.SECTOR);
    }

    /** Start writeback of each run's write at once; {@code -Dlazyblk.fill.writeback=false} turns it off (to measure it). */
    private static final boolean WRITEBACK = Boolean.parseBoolean(System.getProperty("lazyblk.fill.writeback", "true"));

    /** Pages {@code [p, p + n)}, MERGING and ours, written whole from {@code src} in one write, then made readable. */
    private void writeStretch(final int p, final int n, final long src, final MemorySegment iov) {
        final long offset = store.geo.pageStart(p);
        final long bytes = store.geo.pageStart(p + n - 1) + store.geo.pageLength(p + n - 1) - offset;
        iov.set(JAVA_LONG, 0, src);
        iov.set(JAVA_LONG, 8, bytes);
        final int rc = store.image.write(iov.address(), 1, offset, bytes);
        for (int k = 0; k < n; k++) {
            final int q = p + k;
            if (rc != 0) {
                store.table.transition(q, PageTable.MERGING, PageTable.FETCHING);
                fetches.inFlight.set(q, 0); // before the page goes back to ABSENT: the next fetch's issuer sets it again
                fetches.fail(q);
                continue;
            }
            fetches.backgroundFilled[q] = true;
            fetches.landed(q);
            fetches.inFlight.set(q, 0); // readable now: no fetch of it can start again
        }
        if (rc != 0) {
            LOG.error("pages {} to {}: writing them to the local file failed with errno {}; requests that need them get IOERR"
                + " (is the local file's disk full or failing?)", p, p + n - 1, -rc);
        } else {
            fetches.addBackgroundBytes(bytes);
            if (WRITEBACK) {
                store.image.startWriteback(offset, bytes); // drains while the fill goes on, not all in the next round's sync
            }
        }
    }

    /** Page {@code p}, MERGING and ours, with sectors the guest wrote: the rest written from {@code src}. */
    private void mergeAround(final int p, final long src, final MemorySegment iov) {
        fetches.backgroundFilled[p] = true;
        try {
            fetches.writeAround(p, src, iov);
            fetches.addBackgroundBytes(store.geo.pageLength(p));
        } catch (final java.io.IOException e) {
            fetches.backgroundFilled[p] = false;
            LOG.error("page {}: {}; requests that need it get IOERR (is the local file's disk full or failing?)", p, e.getMessage());
            fetches.inFlight.set(p, 0);
            fetches.fail(p);
            return;
        }
        fetches.inFlight.set(p, 0);
    }
}
