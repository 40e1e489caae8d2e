package io.lazyblk.blk;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageGeometry;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pagemap.PageTable;
import io.lazyblk.pagemap.PageWaiter;
import io.lazyblk.persistence.LocalImage;
import io.lazyblk.persistence.PageStateFile;
import org.agrona.concurrent.AgentRunner;
import org.agrona.concurrent.BackoffIdleStrategy;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.locks.LockSupport;

/**
 * A block backend that fills a local image lazily from a {@link PageSource}: reads of absent pages park their request
 * until the page arrives (demand fetch at top priority), {@link LazyFill} streams the rest in the background, every
 * fetched page is verified and merged into the local file around the sectors the guest wrote ({@link PageFetches}),
 * {@link Durability} records what is durable, and when every page is local the store switches to disk-only.
 *
 * <p>Guest writes never wait for a fetch: a write to a page that is not readable yet "enters" the page (a writer count
 * the merge waits on), claims its sectors ({@link GuestSectors}), and writes through; the merge writes only sectors the
 * guest did not. A parked read ends one way only, {@link #finish(IoRequest, MemorySegment, long, boolean)}: answered
 * from the fetched bytes, read again from the local file once its page is readable, or failed.
 *
 * <p>Thread-safety: request methods run on I/O threads, the fill on its own thread, completions on the source's
 * threads; page states change by CAS only ({@link PageTable}).
 */
public final class LazyStore implements BlockBackend, IoRequest.ParkedReads {
    private static final Logger LOG = LoggerFactory.getLogger(LazyStore.class);
    /** At most this many page buffers, and this many pages written but not yet durable, whatever the budget. */
    private static final int MAX_PAGES_IN_RAM = 1024;
    static final int SECTOR = GuestSectors.SECTOR;

    final Manifest manifest;
    final PageGeometry geo;
    final PageTable table;
    final LocalImage image;
    final PageStateFile state;
    final PageSource source;
    final GuestSectors guest;
    /** Guest writes in progress per page; a merge waits for zero ({@link LazyWrites}). */
    final AtomicIntegerArray writers;
    final Durability durability;
    /** Pages that read as zeros without I/O (never fetched); guest writes clear them ({@link LazyWrites}). */
    final ZeroPages zeros;
    /** The learned boot set, fetched ahead of the guest before any background page ({@link LazyFill}). */
    final BootProfile profile;
    private final Options options;
    final PageBuffers buffers; // package-private: tests derive how many fetches fit above the demand reserve
    private final PageFetches fetches;
    private final BackgroundRuns runs;
    private final FillGovernor governor;
    private final GuestActivity activity = new GuestActivity();
    private final FillStats stats;
    private final PageCacheLimit cacheLimit;
    private final LazyFill fill;
    private final LazyWrites writes;
    private final AgentRunner fillRunner;
    private final Durability.Committed onCommitted;
    private volatile boolean diskOnly;
    /** See {@link Options#holdDiskOnly()}; read by the fill before it switches. */
    private volatile boolean diskOnlyHeld;
    final long startNanos = System.nanoTime();

    /**
     * Settings of the lazy fill.
     *
     * @param imageName the provider's name of the image, recorded with the switch to disk-only
     * @param holdDiskOnly stay in lazy mode, every page local or not, until {@link #releaseDiskOnly()}: a live migration's
     *     destination whose source may still hand it pages to fetch again (its final set, at the switchover)
     */
    public record Options(String imageName, long memoryBudget, long fillRateBytesPerSecond, long demandTimeoutNanos,
                          boolean holdDiskOnly) {
        public Options(final String imageName, final long memoryBudget, final long fillRateBytesPerSecond, final long demandTimeoutNanos) {
            this(imageName, memoryBudget, fillRateBytesPerSecond, demandTimeoutNanos, false);
        }
    }

    public LazyStore(final Manifest manifest, final LocalImage image, final PageStateFile state, final PageSource source,
                     final Options options) {
        this(manifest, image, state, source, options, new int[0]);
    }

    /**
     * A store that fetches a learned boot set first.
     *
     * @param bootProfile provider pages (of {@link Manifest#sourcePageSize()}) in the order to fetch them ahead of the
     *     guest, as {@link PageSource#bootProfile()} returned them (get it once, before: it may block a round trip); the
     *     store keeps the engine pages they fall in, each once, less zero pages and pages already local. Empty: none.
     */
    public LazyStore(final Manifest manifest, final LocalImage image, final PageStateFile state, final PageSource source,
                     final Options options, final int[] bootProfile) {
        this.manifest = manifest;
        this.geo = manifest.geometry();
        this.image = image;
        this.state = state;
        this.source = source;
        this.options = options;
        this.diskOnlyHeld = options.holdDiskOnly(); // before the fill starts (below): it may find every page local at once
        this.table = new PageTable(geo.pageCount());
        this.guest = new GuestSectors(state);
        this.writers = new AtomicIntegerArray(geo.pageCount());
        this.durability = new Durability(image, state, guest);
        this.zeros = new ZeroPages(manifest, guest, image);
        for (int p = 0; p < geo.pageCount(); p++) {
            if (state.isLocal(p)) {
                table.initialize(p, PageTable.LOCAL);
            } else if (manifest.isZeroPage(p)) {
                // Never fetched: the local file's hole reads as zeros (and sectors the guest wrote there hold its bytes).
                // Readable now; the first durability round records it local, with nothing of ours to sync.
                table.initialize(p, PageTable.RESIDENT);
                durability.addResident(p);
            }
        }
        this.profile = new BootProfile(bootProfile, manifest, state, table);
        if (bootProfile.length > 0) {
            LOG.info("boot profile: {} provider pages, {} pages of {} KiB to fetch ahead of the guest", bootProfile.length,
                profile.pageCount(), geo.pageSize() >> 10);
        }
        // The budget: a quarter for page buffers in flight (the background's run buffers from up to half of it, the rest
        // page buffers for the guest's misses), a quarter for pages written but not yet durable, half for durable
        // background-filled pages left in the page cache.
        final long budgetPages = options.memoryBudget() / geo.pageSize();
        final long inFlightPages = Math.max(8, budgetPages / 4);
        final int runBytes = Math.max(BackgroundRuns.RUN_BYTES, source.preferredRunBytes());
        final int maxRunPages = Math.max(1, Math.min(runBytes / geo.pageSize(),
            source.maxPagesPerFetch() / manifest.sourcePagesPerPage()));
        // At least two runs fit the half, each as long as it allows (so a small budget gets shorter runs, not none).
        final int runPages = (int) Math.max(1, Math.min(maxRunPages, inFlightPages / 4));
        final int runCount = (int) Math.max(1, Math.min(BackgroundRuns.MAX_RUNS, inFlightPages / 2 / runPages));
        final int n = (int) Math.max(8, Math.min(MAX_PAGES_IN_RAM, inFlightPages - (long) runCount * runPages));
        final int persistPages = (int) Math.max(8, Math.min(MAX_PAGES_IN_RAM, budgetPages / 4));
        this.buffers = new PageBuffers(n, geo.pageSize(), runCount, (long) runPages * geo.pageSize());
        this.cacheLimit = new PageCacheLimit(image, geo, (int) Math.max(8, Math.min(geo.pageCount(), budgetPages / 2)));
        this.fetches = new PageFetches(this, buffers);
        this.runs = new BackgroundRuns(this, buffers, fetches, runPages);
        this.governor = new FillGovernor(runCount, FillGovernor::processCpuNanos);
        this.fill = new LazyFill(this, options, buffers, fetches, runs, governor, persistPages, cacheLimit);
        this.stats = new FillStats(zeros, profile, governor, runs, activity, fetches);
        fetches.attach(fill);
        runs.attach(fill);
        this.writes = new LazyWrites(this, fill);
        this.onCommitted = p -> {
            table.transition(p, PageTable.RESIDENT, PageTable.LOCAL);
            if (fetches.backgroundFilled[p]) {
                fetches.backgroundFilled[p] = false;
                if (!profile.listed(p)) {
                    cacheLimit.durable(p); // a page of the boot set stays in the page cache: the guest is about to read it
                }
            }
        };
        // The agent parks at once when it has nothing to do (10 µs growing to 1 ms), with no spinning or yielding first:
        // everything that gives it work wakes it (a landed run or page, a demand), and on a host whose cores a guest's
        // vCPU and the queues' polling threads already take, a spinning fill starves them. Spinning and yielding 100
        // times each (as before) cost up to ~100 µs of CPU per idle spell, i.e. per landed run.
        this.fillRunner = new AgentRunner(new BackoffIdleStrategy(0, 0, 10_000, 1_000_000),
            t -> LOG.error("lazy fill failed", t), null, fill);
        AgentRunner.startOnThread(fillRunner);
    }

    /** Where absent pages come from (for status). */
    public PageSource source() {
        return source;
    }

    public boolean diskOnly() {
        return diskOnly;
    }

    /** Whether the switch to disk-only is held back ({@link Options#holdDiskOnly()}). */
    boolean diskOnlyHeld() {
        return diskOnlyHeld;
    }

    /** Lets the fill switch to disk-only once every page is local (see {@link Options#holdDiskOnly()}). */
    public void releaseDiskOnly() {
        diskOnlyHeld = false; // volatile: the fill's next round sees it
    }

    void switchedToDiskOnly() {
        diskOnly = true; // volatile: request threads stop consulting the page table from their next request on
    }

    public int localPages() {
        return state.localCount();
    }

    public int pageCount() {
        return geo.pageCount();
    }

    public int pageSize() {
        return geo.pageSize();
    }

    /** Bytes of the local image in the host's page cache (see {@link LocalImage#cachedBytes()}); -1 if unknown. */
    public long cachedBytes() {
        return image.cachedBytes();
    }

    public long memoryBudget() {
        return options.memoryBudget();
    }

    public long bytesFetchedOnDemand() {
        return fetches.demandBytes();
    }

    /** Demand misses by duration into {@code into} ({@link QueueStats#newLatency()} long): buckets, then the sum of ns. */
    public void demandMissLatency(final long[] into) {
        for (int i = 0; i < into.length; i++) {
            into[i] = fetches.missLatency.get(i);
        }
    }

    /** Bytes fetched by the fill (the boot profile's pages included). */
    public long bytesFetchedInBackground() {
        return fetches.backgroundBytes();
    }

    /** What the fill did and does, for status: zero pages, the boot profile, the governor. Made once; thread-safe. */
    public FillStats fillStats() {
        return stats;
    }

    @Override
    public long sizeBytes() {
        return geo.imageSize();
    }

    @Override
    public boolean readOnly() {
        return image.readOnly();
    }

    @Override
    public String failure() {
        return durability.failure();
    }

    // ------------------------------------------------------------------------------------------------ reads

    /**
     * Reads once every page in range is readable; otherwise demands the missing ones, parks {@code r} on one and returns
     * {@link #PENDING}; it then ends in {@link #finish}.
     */
    @Override
    public int read(final IoRequest r) {
        final int first = geo.pageOf(r.offset);
        final int last = geo.lastPageOf(r.offset, r.dataBytes);
        profile.read(first, last);
        if (!diskOnly) {
            activity.count(); // the governor's sign of a busy guest, zero reads included
        }
        if (zeros.allKnown(first, last)) {
            r.zeroFill(); // pages of zeros the guest has not written: no I/O (the file holds holes there)
            return 0;
        }
        if (!diskOnly) {
            for (int p = first; p <= last; p++) {
                if (!table.readable(p)) {
                    // Ask for every missing page of the request now, so their fetches overlap; then wait for this one.
                    for (int q = p + 1; q <= last; q++) {
                        if (!table.readable(q)) {
                            demand(q);
                        }
                    }
                    if (waitFor(p, r)) {
                        return PENDING;
                    }
                }
            }
        }
        return image.read(r.iov.address(), r.iovCount, r.offset, r.dataBytes);
    }

    /**
     * Parks {@code r} on page {@code p}, then demands the page; false if the page turned readable meanwhile. Parked
     * first, so the fetch, even one a same-host source completes on this thread before {@code demand} returns, finds
     * {@code r} and answers it from the fetched bytes ({@link #serveWaiters}). From the demand on, {@code r} may be
     * completed by another thread: it is not touched again here.
     */
    private boolean waitFor(final int p, final IoRequest r) {
        r.parkedIn = this; // plain write, published with r by the park's CAS
        while (true) {
            final int code = table.park(p, r);
            if (code == PageTable.PARKED || code == PageTable.PARKED_START_FETCH) {
                demand(p); // ABSENT: we may win the fetch; FETCHING: make sure one is coming
                if (code == PageTable.PARKED) {
                    // The page's fetch may have landed already, its merge put off until a request thread idles (a read
                    // of the same page just before was answered from it): answer r from its bytes now, or merge it now
                    // if r cannot be answered so, rather than have r wait out the idling.
                    fetches.serveDeferred();
                }
                return true;
            }
            if (table.readable(p)) {
                return false;
            }
            Thread.onSpinWait(); // the list is closed while a failed fetch's waiters are told: look again
        }
    }

    private void demand(final int p) {
        final byte s = table.state(p);
        if (s == PageTable.ABSENT) {
            if (table.transition(p, PageTable.ABSENT, PageTable.FETCHING)) {
                fetches.demandNow(p); // we own the fetch: issue it from this thread
            }
        } else if (s == PageTable.FETCHING) {
            fetches.demandIfIdle(p); // waiting for a retry: ask the agent to fetch it first
        }
    }

    /** Checks the fetched bytes a read needs, before it is answered from them ({@link PageFetches}: by provider page). */
    interface Checked {
        /** Whether bytes {@code [offset, offset + length)} of the image, in the fetched page, are the image's. */
        boolean verify(long offset, long length);
    }

    /** {@link #serveWaiters}: the fetched bytes a waiter needed failed their hash; nobody was answered from the rest since. */
    static final int CORRUPT = -2;

    /**
     * The fetch of page {@code p} is in {@code bytes} and is not merged yet: answers its parked reads that lie wholly in
     * the page and cover no sector the guest wrote straight from those bytes, once {@code checked} vouches for the bytes
     * each one needs, so the guest waits neither for the local write nor for the hashing of the rest of the page; the
     * rest are parked again and run once the page is merged. On the fetch's completing thread. Returns how many were
     * answered if that was all of them (0 if none waited), -1 if someone waits for the merge, or {@link #CORRUPT}.
     */
    int serveWaiters(final int p, final MemorySegment bytes, final Checked checked) {
        int answered = 0;
        boolean reparked = false;
        boolean corrupt = false;
        PageWaiter w = table.takeWaiters(p);
        while (w != null) {
            final PageWaiter next = PageTable.detachNext(w);
            if (!corrupt && w instanceof IoRequest r && answerable(p, r) && !(corrupt = !checked.verify(r.offset, r.dataBytes))) {
                finish(r, bytes, r.offset - geo.pageStart(p), true);
                answered++;
            } else {
                repark(p, w);
                reparked = true;
            }
            w = next;
        }
        return corrupt ? CORRUPT : reparked ? -1 : answered;
    }

    /** Whether the fetched bytes of page {@code p} are the right answer to {@code r}: a read inside it, no guest sector. */
    private boolean answerable(final int p, final IoRequest r) {
        final long start = geo.pageStart(p);
        if (r.type != IoRequest.READ || r.offset < start || r.offset + r.dataBytes > start + geo.pageLength(p)) {
            return false;
        }
        // A write that completed before this read was submitted claimed its sectors before it was written: seen here.
        for (long s = r.offset / SECTOR, end = (r.offset + r.dataBytes + SECTOR - 1) / SECTOR; s < end; s++) {
            if (guest.wrote(s)) {
                return false;
            }
        }
        return true;
    }

    /** Puts a waiter taken off page {@code p}'s list back, as a fresh parker would be. */
    private void repark(final int p, final PageWaiter w) {
        while (true) {
            final int code = table.park(p, w);
            if (code == PageTable.PARKED) {
                return;
            }
            if (code == PageTable.PARKED_START_FETCH) {
                demand(p); // the fetch failed meanwhile: start another, as waitFor would
                return;
            }
            if (table.readable(p)) {
                w.pageReady(p, true);
                return;
            }
            Thread.onSpinWait();
        }
    }

    /** A parked read's page became readable ({@code ok}) or could not be fetched; from the thread that finished it. */
    @Override
    public void finish(final IoRequest r, final int page, final boolean ok) {
        finish(r, null, 0, ok);
    }

    /**
     * The one way a parked read ends: failed ({@code !ok}), answered from {@code bytes} at {@code at}, or read again now
     * that its page is readable (it may park again, on another page of a read that spans pages). Any thread; the owner
     * of {@code r} may have given up on it ({@link IoRequest#enter()}), then nothing of it is touched.
     */
    private void finish(final IoRequest r, final MemorySegment bytes, final long at, final boolean ok) {
        if (!r.enter()) {
            return;
        }
        try {
            final byte status;
            if (!ok) {
                status = VirtioBlk.S_IOERR;
            } else if (bytes != null) {
                r.copyIn(bytes, at);
                status = VirtioBlk.S_OK;
            } else {
                final int rc = read(r);
                if (rc == PENDING) {
                    return; // parked again: it ends on that page
                }
                status = rc == 0 ? VirtioBlk.S_OK : VirtioBlk.S_IOERR;
            }
            r.completeParked(status);
        } catch (final InternalError e) {
            // The front end shrank the guest memory it shared (a memfd without seals, truncated): the copy into it
            // faulted. This thread is a source's or the fill's: it must live on. The request's queue faults on its next
            // access too and stops as broken (QueueAgent); this request is dropped with it.
            guestMemoryFaulted();
        } finally {
            r.exit();
        }
    }

    private volatile long lastFaultLog;

    private void guestMemoryFaulted() {
        final long now = System.nanoTime();
        if (now - lastFaultLog > 1_000_000_000L) {
            lastFaultLog = now;
            LOG.warn("a parked read could not be answered: the front end's guest memory faulted (shrunk under the engine);"
                + " its queue stops as broken (at most one such line per second)");
        }
    }

    /** Lets the calling thread (a queue's, with reads parked) take the source's demand completions that are ready. */
    @Override
    public int poll() {
        // After the switch to disk-only the source is closed; a poll racing the switch finds its connection gone.
        return diskOnly ? 0 : source.poll();
    }

    /** Writes the pages whose reads were answered from their fetched bytes to the local file. */
    @Override
    public void idle() {
        if (!diskOnly) {
            fetches.runDeferredMerges();
        }
    }

    // ----------------------------------------------------------------------------------------------- writes

    /** Writes guest data; never waits for a fetch (see the class comment). */
    @Override
    public int write(final IoRequest r) {
        if (!diskOnly) {
            activity.count();
        }
        return writes.write(r.offset, r.dataBytes, r, false, 0, 0, diskOnly);
    }

    @Override
    public int writeZeroes(final IoRequest r, final long scratchIov, final long scratchLen) {
        if (!diskOnly) {
            activity.count();
        }
        return writes.write(r.dwzOffset, r.dwzLength, r, true, scratchIov, scratchLen, diskOnly);
    }

    @Override
    public int discard(final IoRequest r) {
        return 0; // a hint: on a lazily filled image, keeping the bytes is always correct
    }

    // ------------------------------------------------------------------------------------------- durability

    /** Makes every acknowledged write durable, and the record of which sectors the guest wrote with it. */
    @Override
    public int flush() {
        try {
            persist();
            return 0;
        } catch (final IOException e) {
            return -5; // EIO; Durability logged the failure once, and keeps failing every FLUSH after it
        }
    }

    /** One durability round (image sync, then the state it covers); any thread. */
    void persist() throws IOException {
        durability.persist(onCommitted);
    }

    /** The manifest of the image being filled (in the page map's pages). */
    public Manifest manifest() {
        return manifest;
    }

    /**
     * For a live migration's export of this store's image: makes page {@code p} readable from the local file, demanding
     * it at top priority if it is absent, and waits for it up to {@code timeoutNanos}. Runs the merges request threads
     * would run when idle (the source's VM may be stopped: none runs then). False if it is still absent by then (the
     * provider is down). Not for the data path: it polls every 100 µs.
     */
    public boolean awaitReadable(final int p, final long timeoutNanos) {
        final long deadline = System.nanoTime() + timeoutNanos;
        long nextDemand = 0;
        while (!diskOnly && !table.readable(p)) {
            final long now = System.nanoTime();
            if (now - deadline > 0) {
                return false;
            }
            if (now - nextDemand >= 0) {
                demand(p); // again every 10 ms: a failed fetch leaves the page absent, and nobody else may ask for it
                nextDemand = now + 10_000_000L;
            }
            fetches.runDeferredMerges();
            LockSupport.parkNanos(100_000);
        }
        return true;
    }

    /** Whether page {@code p} can be read from the local file now (it is there, or the store is disk-only); any thread. */
    public boolean readable(final int p) {
        return diskOnly || table.readable(p);
    }

    /** Blocks until the store is disk-only or {@code timeoutNanos} pass; for tests and the demo. */
    public boolean awaitDiskOnly(final long timeoutNanos) {
        final long deadline = System.nanoTime() + timeoutNanos;
        while (!diskOnly && System.nanoTime() < deadline) {
            LockSupport.parkNanos(1_000_000);
        }
        return diskOnly;
    }

    @Override
    public void close() {
        source.close(); // first: in-flight fetches complete UNAVAILABLE and stop writing into the page buffers
        fillRunner.close(); // its onClose merges what is left and records it durably
        try {
            state.close();
        } catch (final IOException e) {
            LOG.warn("closing the page state file: {}", e.getMessage());
        }
        buffers.close();
        image.close();
    }
}
