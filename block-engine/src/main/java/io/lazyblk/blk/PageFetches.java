package io.lazyblk.blk;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pagemap.PageTable;
import org.agrona.concurrent.ManyToManyConcurrentArrayQueue;
import org.agrona.concurrent.ManyToOneConcurrentArrayQueue;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicLong;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * Fetches of pages, from the issue to the page becoming readable: claims a page's fetch, submits it into a page
 * buffer, and receives its completion ({@link #onFetched}, the source's listener), where a demand fetch is verified,
 * answers the reads parked on it straight from the buffer, and is merged into the local file around the sectors the
 * guest wrote. Everything that goes wrong (refused, failed, corrupt) goes to the fill agent ({@link LazyFill}), which
 * retries or fails the page.
 *
 * <p>The demand path needs no thread hand-off: the request thread that finds a page absent issues its fetch, and the
 * thread that completes it (the source's, or a queue's that polls it) verifies, answers and merges. A hand-off costs a
 * wake-up (tens of µs on a busy 2-core host) each way. Thread-safe: any thread issues and completes; the state of
 * one fetch is owned by whoever holds its buffer.
 */
final class PageFetches implements PageSource.Listener {
    private static final Logger LOG = LoggerFactory.getLogger(PageFetches.class);
    private static final int SECTOR = GuestSectors.SECTOR;
    /** A completion's status for the agent: OK, and hashed already by the thread that completed it. */
    private static final int VERIFIED = 0x7f;
    /** Completions queued for the agent beyond which the completing thread hashes a background page itself. */
    private static final int AGENT_BACKLOG = 2;

    private final LazyStore store;
    private final PageBuffers buffers;
    private LazyFill fill;
    /**
     * 1 from when a fetch of the page is accepted by the source until its bytes are merged (or it failed); set by its
     * issuer (any thread) by CAS, so one fetch of a page is in flight at a time. While 1, a reader that parks on the
     * page asks for no other fetch.
     */
    final AtomicIntegerArray inFlight;
    /** When the page's first fetch attempt started (0 = none pending): its demand timeout runs from there. Owner: the page's fetcher. */
    final long[] firstAttempt;
    /** Pages fetched by the background fill: written before the page is recorded resident, read when it becomes local. */
    final boolean[] backgroundFilled;
    /**
     * Demand pages whose waiters were answered from the fetched bytes, still to be written to the local file: merged by a
     * request thread when it has nothing else to do, or by the fill agent. A read of such a page that comes meanwhile
     * parks, and its thread serves it from the buffer or merges the page at once ({@link #serveDeferred}).
     */
    private final ManyToManyConcurrentArrayQueue<Integer> deferred;
    /** Completions the fill agent handles (refused, failed, corrupt, background): buffer index and status in a long. */
    final ManyToOneConcurrentArrayQueue<Long> toAgent;
    private final AtomicLong demandBytes = new AtomicLong();
    /** Demand fetches accepted by the source, and those completed (any status): misses, and how many are outstanding. */
    private final AtomicLong demandIssued = new AtomicLong();
    private final AtomicLong demandCompleted = new AtomicLong();
    private final AtomicLong backgroundBytes = new AtomicLong();
    /** The source checks every page against the manifest's hashes itself (a chain): not hashed twice. */
    private final boolean verifiedBySource;
    /**
     * Per buffer, which of its provider pages were checked against their hashes (a bit each): a demand read is answered
     * once the provider pages it covers are checked, the rest are checked before the page is merged. Owned by whoever
     * holds the buffer; cleared when a fetch into it starts.
     */
    private final long[][] checkedParts;
    /** The {@link LazyStore.Checked} of each buffer, made once (serveWaiters takes one per call: no allocation). */
    private final LazyStore.Checked[] checkers;

    PageFetches(final LazyStore store, final PageBuffers buffers) {
        this.store = store;
        this.buffers = buffers;
        final int pages = store.geo.pageCount();
        inFlight = new AtomicIntegerArray(pages);
        firstAttempt = new long[pages];
        backgroundFilled = new boolean[pages];
        deferred = new ManyToManyConcurrentArrayQueue<>(buffers.count());
        toAgent = new ManyToOneConcurrentArrayQueue<>(buffers.count() * 2);
        verifiedBySource = store.source.verifiesPages();
        final int parts = store.manifest.sourcePagesPerPage();
        checkedParts = new long[buffers.count()][(parts + 63) / 64];
        checkers = new LazyStore.Checked[buffers.count()];
        for (int i = 0; i < checkers.length; i++) {
            final int b = i;
            checkers[i] = (offset, length) -> checkRange(b, offset, length);
        }
    }

    void attach(final LazyFill f) {
        this.fill = f;
    }

    long demandBytes() {
        return demandBytes.get();
    }

    long backgroundBytes() {
        return backgroundBytes.get();
    }

    /** Background bytes landed by a fetch other than a run's (a retried page). */
    void addBackgroundBytes(final long n) {
        backgroundBytes.addAndGet(n);
    }

    /** Demand fetches the source accepted so far: the guest's misses (and their retries). */
    long demandIssued() {
        return demandIssued.get();
    }

    /** Demand fetches accepted and not completed yet. */
    int demandOutstanding() {
        // Completed read first: it never runs ahead of issued (counted before the submit), so this is never negative.
        final long completed = demandCompleted.get();
        return (int) Math.max(0, demandIssued.get() - completed);
    }

    /**
     * A request thread just moved page {@code p} from ABSENT to FETCHING and waits for it: fetch it from this thread at
     * demand priority, or, if no buffer is free or the source refuses, queue it for the fill agent.
     */
    /** Demand misses by duration (from the first attempt to fetch the page to its bytes here), then their sum in ns. */
    final java.util.concurrent.atomic.AtomicLongArray missLatency = new java.util.concurrent.atomic.AtomicLongArray(LatencyBuckets.COUNT + 2);

    /** Any completing thread: atomic adds (several sources' threads complete demand fetches at once). */
    private void missed(final long nanos) {
        final long d = Math.max(0, nanos);
        missLatency.getAndIncrement(LatencyBuckets.of(d));
        missLatency.getAndAdd(LatencyBuckets.COUNT + 1, d);
    }

    void demandNow(final int p) {
        final Integer b = buffers.takeForDemand();
        if (b != null) {
            if (start(p, b, true)) {
                return;
            }
            buffers.release(b);
        }
        fill.demand(p);
    }

    /** A request thread waits for page {@code p} (FETCHING) that no fetch is carrying now; the agent fetches it first. */
    void demandIfIdle(final int p) {
        if (inFlight.get(p) == 0) { // volatile: a fetch accepted before we looked is seen, so no duplicate is queued for it
            fill.demand(p);
        }
    }

    /**
     * Any thread: submits the fetch of {@code p} into buffer {@code b}, which the caller owns; false if refused. True,
     * with {@code b} released here, if another thread's fetch of {@code p} is in flight already.
     */
    boolean start(final int p, final int b, final boolean isDemand) {
        // The claim on fetching p. A request thread that finds p FETCHING may ask the agent for it (demandIfIdle) in the
        // moment between another request thread moving it there and that thread's claim: whichever claims first
        // fetches, and the other, seeing the claim, leaves it.
        if (!inFlight.compareAndSet(p, 0, 1)) {
            buffers.release(b);
            return true;
        }
        if (firstAttempt[p] == 0) {
            firstAttempt[p] = System.nanoTime();
        }
        // Plain writes, published to the completing thread by the source's submit (a queue offer, a release).
        buffers.page[b] = p;
        buffers.demand[b] = isDemand;
        java.util.Arrays.fill(checkedParts[b], verifiedBySource ? -1L : 0L);
        if (isDemand) {
            demandIssued.incrementAndGet(); // before the submit: a same-thread completion counts itself after it
        }
        if (!store.source.fetch(store.manifest.firstSourcePage(p), store.manifest.sourcePageCount(p), buffers.buffers[b],
            isDemand ? PageSource.DEMAND : PageSource.BACKGROUND, b, this)) {
            if (isDemand) {
                demandIssued.decrementAndGet();
            }
            inFlight.set(p, 0);
            return false;
        }
        return true;
    }

    /** The source's completion, on whichever thread delivers it. A verified demand page is finished here; the rest go to the agent. */
    @Override
    public void onFetched(final long tag, final int firstPage, final int count, final int status) {
        final int b = (int) tag;
        if (buffers.demand[b]) {
            demandCompleted.incrementAndGet();
        }
        if (status == PageSource.OK && buffers.demand[b]) {
            final int p = buffers.page[b];
            if (firstAttempt[p] != 0) {
                missed(System.nanoTime() - firstAttempt[p]);
            }
            // inFlight stays 1 until the merge: a reader that parks meanwhile must not start a second fetch.
            // The guest's reads first, from the bytes each one needs, checked; the rest of the page is checked before
            // the local write, which follows off their path.
            // Counted before any answer goes out: whoever has its answer sees the fetch counted (taken back if corrupt).
            demandBytes.addAndGet(store.geo.pageLength(p));
            final int served = store.serveWaiters(p, buffers.buffers[b], checkers[b]);
            if (served == LazyStore.CORRUPT) {
                demandBytes.addAndGet(-store.geo.pageLength(p));
                toAgent.offer(((long) b << 8) | PageSource.CORRUPT); // the agent fetches it again, or fails it
                fill.wake();
                return;
            }
            if (served > 0 && deferred.offer(buffers.boxes[b])) {
                // Every waiter was answered: the local write waits for a request thread with nothing to do (or the
                // agent). Done here, it would hold up the next request on a host with no idle core: measured on 2
                // cores, the queue agent then waits out the write (~12 µs) before it sees the guest's next request.
                // The offer (ordered store) publishes page[b], its checked parts and the bytes to the merger.
                if (deferred.size() > buffers.count() / 4) {
                    fill.wake(); // a guest that keeps its queue busy leaves them to the agent: before buffers run short
                }
                return;
            }
            checkAndMerge(p, b);
            return;
        }
        int st = status;
        if (st == PageSource.OK && !verifiedBySource && toAgent.size() >= AGENT_BACKLOG) {
            // The agent is behind (it hashes and writes every background page): hash this one here, on the completing
            // thread, so both cores hash when the source outruns one (a same-host source reads at several GB/s, a
            // SHA-256 core does ~1.8). A source slower than the agent (TCP, here) never builds the backlog.
            st = verified(buffers.page[b], b) ? VERIFIED : PageSource.CORRUPT;
        }
        // Hand over to the agent; the queue's CAS publishes the buffer's bytes with it.
        toAgent.offer((tag << 8) | st);
        fill.wake();
    }

    /** Page {@code p}'s bytes in buffer {@code b} are the image's: every provider page not checked yet is checked now. */
    private boolean verified(final int p, final int b) {
        return checkRange(b, store.geo.pageStart(p), store.geo.pageLength(p));
    }

    /**
     * Checks the provider pages of buffer {@code b}'s page that hold image bytes {@code [offset, offset + length)} and
     * were not checked yet; false if one fails its hash. Whoever holds the buffer.
     */
    private boolean checkRange(final int b, final long offset, final long length) {
        final int p = buffers.page[b];
        final long pageStart = store.geo.pageStart(p);
        final int part = store.manifest.sourcePageSize();
        final int first = (int) ((offset - pageStart) / part);
        final int last = (int) ((offset + length - 1 - pageStart) / part);
        final long[] checked = checkedParts[b];
        for (int i = first; i <= last; i++) {
            if ((checked[i >>> 6] & (1L << i)) != 0) {
                continue;
            }
            if (!store.manifest.verifyPart(p, i, buffers.buffers[b], (long) i * part)) {
                return false;
            }
            checked[i >>> 6] |= 1L << i;
        }
        return true;
    }

    /** Checks the rest of page {@code p} in buffer {@code b} and merges it; if it fails, the agent takes the buffer. */
    private void checkAndMerge(final int p, final int b) {
        if (!verified(p, b)) {
            toAgent.offer(((long) b << 8) | PageSource.CORRUPT); // the agent fetches it again, or fails it; it releases b
            fill.wake();
            return;
        }
        mergeOrFail(p, b);
        buffers.release(b); // ordered store: the buffer's next user sees it free only after we are done with it
    }

    /**
     * The agent's half of a completion (refused, failed, corrupt, or a background page). Releases the buffer.
     */
    void onAgentCompletion(final int b, final int status) {
        final int p = buffers.page[b];
        final boolean isDemand = buffers.demand[b];
        inFlight.set(p, 0);
        try {
            if (status == PageSource.CORRUPT || status == PageSource.OK && !verified(p, b)) {
                fill.checksumFailed(p);
                return;
            }
            if (status != PageSource.OK && status != VERIFIED) {
                fill.scheduleRetry(p); // stays FETCHING: waiters keep waiting until it lands or times out
                return;
            }
            (isDemand ? demandBytes : backgroundBytes).addAndGet(store.geo.pageLength(p));
            backgroundFilled[p] = !isDemand;
            mergeOrFail(p, b);
        } finally {
            buffers.release(b);
        }
    }

    /**
     * A request thread parked a read on a page whose merge may have been put off: for each page whose merge is put off,
     * answers the reads parked on it from its buffer and leaves the merge put off (a guest reading a page in small pieces
     * gets each from the buffer, not from the local file after a write). A page with a parked read that cannot be
     * answered so (one across pages, or over sectors the guest wrote) is merged now.
     */
    void serveDeferred() {
        for (int n = deferred.size(); n > 0; n--) {
            final Integer b = deferred.poll(); // acquires what the thread that put it there wrote
            if (b == null) {
                return;
            }
            final int p = buffers.page[b];
            final int served = store.serveWaiters(p, buffers.buffers[b], checkers[b]);
            if (served == LazyStore.CORRUPT) {
                toAgent.offer(((long) b << 8) | PageSource.CORRUPT);
                fill.wake();
            } else if (served < 0 || !deferred.offer(b)) {
                checkAndMerge(p, b);
            }
        }
    }

    /** Merges the pages whose waiters were answered from their buffers; any thread (idle request threads, the agent). */
    void runDeferredMerges() {
        Integer b;
        while ((b = deferred.poll()) != null) { // poll acquires what the offering thread wrote
            checkAndMerge(buffers.page[b], b);
        }
    }

    /** Merges page {@code p} from buffer {@code b}; if the local file refuses the write, the page's waiters get IOERR. */
    private void mergeOrFail(final int p, final int b) {
        try {
            merge(p, b, buffers.scratchIov.get());
        } catch (final IOException e) {
            LOG.error("page {}: {}; requests that need it get IOERR (is the local file's disk full or failing?)", p, e.getMessage());
            inFlight.set(p, 0); // before the page goes back to ABSENT: the next fetch's issuer sets it again
            fail(p);
            return;
        }
        inFlight.set(p, 0); // the page left FETCHING (readable now): no fetch of it can start again
    }

    /** Back to ABSENT, and every waiter learns the fetch failed. */
    void fail(final int p) {
        firstAttempt[p] = 0;
        if (store.table.transition(p, PageTable.FETCHING, PageTable.ABSENT)) {
            store.table.complete(p, false);
        }
    }

    /** Writes the fetched page's bytes into the local file except where the guest wrote, then makes it readable. */
    private void merge(final int p, final int b, final MemorySegment iov) throws IOException {
        if (claimMerge(p)) {
            writeAround(p, buffers.buffers[b].address(), iov);
        }
    }

    /**
     * Moves page {@code p} from FETCHING to MERGING once no guest write is in progress on it (a write that enters later
     * waits for the merge); false if the page left FETCHING (the guest overwrote it whole: nothing of ours is needed).
     */
    boolean claimMerge(final int p) {
        while (true) {
            if (store.table.state(p) != PageTable.FETCHING) {
                return false;
            }
            if (tryClaimMerge(p)) {
                return true;
            }
            Thread.onSpinWait();
        }
    }

    /** One try of {@link #claimMerge}: false if {@code p} is not FETCHING or a guest write is in progress on it. */
    boolean tryClaimMerge(final int p) {
        if (!store.table.transition(p, PageTable.FETCHING, PageTable.MERGING)) {
            return false;
        }
        // Volatile CAS above, volatile read here: pairs with LazyWrites.enter (increment, then read state).
        if (store.writers.get(p) == 0) {
            return true;
        }
        store.table.transition(p, PageTable.MERGING, PageTable.FETCHING);
        return false;
    }

    /**
     * Page {@code p} is MERGING (ours): writes its fetched bytes, at native address {@code src}, into the local file
     * except over the sectors the guest wrote, then makes it readable. If the write fails the page goes back to FETCHING.
     */
    void writeAround(final int p, final long src, final MemorySegment iov) throws IOException {
        final long pageStart = store.geo.pageStart(p);
        final int sectors = store.geo.pageLength(p) / SECTOR;
        final long firstSector = pageStart / SECTOR;
        int s = 0;
        while (s < sectors) {
            if (store.guest.wrote(firstSector + s)) {
                s++;
                continue;
            }
            int e = s;
            while (e < sectors && !store.guest.wrote(firstSector + e)) {
                e++;
            }
            iov.set(JAVA_LONG, 0, src + (long) s * SECTOR);
            iov.set(JAVA_LONG, 8, (long) (e - s) * SECTOR);
            final int rc = store.image.write(iov.address(), 1, pageStart + (long) s * SECTOR, (long) (e - s) * SECTOR);
            if (rc != 0) {
                store.table.transition(p, PageTable.MERGING, PageTable.FETCHING);
                throw new IOException("writing page " + p + " to the local file failed with errno " + -rc);
            }
            s = e;
        }
        landed(p);
    }

    /** Page {@code p} is MERGING and its bytes are in the local file: readable now, local after the next round. */
    void landed(final int p) {
        firstAttempt[p] = 0;
        store.table.transition(p, PageTable.MERGING, PageTable.RESIDENT);
        store.durability.addResident(p); // the lock publishes backgroundFilled[p] to the persister
        store.table.complete(p, true);
    }

    /** The guest wrote every sector of page {@code p} before it arrived: it is readable without a fetch. Agent thread. */
    void wholePageWritten(final int p) {
        for (byte s = store.table.state(p); s == PageTable.ABSENT || s == PageTable.FETCHING; s = store.table.state(p)) {
            if (store.table.transition(p, s, PageTable.RESIDENT)) {
                store.durability.addResident(p);
                store.table.complete(p, true);
                return;
            }
        }
    }
}
