package io.lazyblk.blk;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pagemap.PageTable;
import org.agrona.collections.IntArrayList;
import org.agrona.concurrent.Agent;
import org.agrona.concurrent.ManyToManyConcurrentArrayQueue;
import org.agrona.concurrent.ManyToOneConcurrentArrayQueue;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The lazy store's fetch agent: streams the pages nobody asked for in the background at a bounded rate, retries
 * failed fetches, makes pages durable in batches, and switches the store to disk-only when every page is local.
 * Runs on its own thread; other threads talk to it through queues.
 *
 * <p>The demand path bypasses this thread: the request thread that finds a page absent issues its fetch itself
 * ({@link #demandNow}), and the transport thread that receives it verifies and merges it and wakes the parked
 * requests ({@link #onFetched}). A thread hand-off costs a wake-up (tens of µs on a busy 2-core host) each way, so
 * a miss costs the provider's round trip plus a checksum and a local write, and nothing else. Only what goes wrong
 * (a refused fetch, a failed or corrupt one) comes to this thread.
 */
final class LazyFiller implements Agent, PageSource.Listener {
    private static final Logger LOG = LoggerFactory.getLogger(LazyFiller.class);
    /** Make resident pages durable at least this often: bounds what a crash makes us refetch. */
    private static final long PERSIST_NANOS = 200_000_000L;
    /** At most this many page buffers, and this many pages written but not yet durable, whatever the budget. */
    private static final int MAX_PAGES_IN_RAM = 1024;
    /** Demand fetches keep a quarter of the page buffers: a background flood never starves the guest. */
    private static final int DEMAND_RESERVE_DIVISOR = 4;
    private static final long RETRY_NANOS = 50_000_000L;
    private static final int SECTOR = LazyStore.SECTOR;

    private final LazyStore store;
    private final LazyStore.Options options;
    private final int pageSize;
    /** Make resident pages durable once this many are waiting: bounds the dirty page cache (a quarter of the budget). */
    private final int persistPages;
    /**
     * Background-filled pages that are durable and may still sit in the page cache, oldest first (a ring; guarded by
     * the persist monitor). Beyond half the budget the oldest are dropped from the cache: a fill that streams a whole
     * image through the host must not push the guest's pages, or other VMs', out of RAM. Pages a guest asked for or
     * wrote are never dropped by us.
     */
    private final int[] cachedFill;
    private int cachedFillHead;
    private int cachedFillCount;
    /** Pages fetched by the background fill (not on demand): written on the filler thread before the page is queued for persist. */
    private final boolean[] backgroundFilled;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment[] buffers;
    private final ByteBuffer[] views;
    /** Page and priority of the fetch using each buffer: written by its issuer before the fetch is submitted. */
    private final int[] bufferPage;
    private final boolean[] bufferDemand;
    /** Each buffer index boxed once: the queues below carry these objects, so no fetch allocates a box. */
    private final Integer[] boxes;
    /**
     * Demand pages whose waiters were answered from the fetched bytes, still to be written to the local file: merged
     * by a request thread when it has nothing else to do, or by this agent ({@link #runDeferredMerges}). A read of such
     * a page that comes meanwhile parks, and its thread merges the page at once ({@code LazyStore.waitFor}).
     */
    private final ManyToManyConcurrentArrayQueue<Integer> deferredMerges;
    /** Free buffer indices, boxed once here: any thread takes and returns them without allocating. */
    private final ManyToManyConcurrentArrayQueue<Integer> freeBuffers;
    /**
     * The buffer freed last, or -1: the next demand fetch takes it, as it is likely still in the CPU caches (the queue
     * above hands out the buffer freed longest ago, which a miss would first have to bring in from memory).
     */
    private final java.util.concurrent.atomic.AtomicInteger hotBuffer = new java.util.concurrent.atomic.AtomicInteger(-1);
    private final MemorySegment iov;
    /** Scratch iovec for merges on a transport thread (one per thread, allocated once in the filler's arena). */
    private final ThreadLocal<MemorySegment> transportIov;
    /** Pages the guest waits for, from request threads. */
    private final ManyToOneConcurrentArrayQueue<Integer> demands;
    /** Fetch completions from the transport thread: buffer index, status packed in a long. */
    private final ManyToOneConcurrentArrayQueue<Long> completions;
    private final ManyToOneConcurrentArrayQueue<Integer> wholePageWrites;
    /**
     * 1 from when a fetch of the page is accepted by the source until its bytes are merged (or it failed); set by its
     * issuer (any thread). While 1, a reader that parks on the page asks for no other fetch.
     */
    private final AtomicIntegerArray inFlight;
    private final long[] firstAttempt;
    private final byte[] badChecksums;
    private final IntArrayList residentPending = new IntArrayList();
    private final IntArrayList retryLater = new IntArrayList();
    /** Whether a page is in {@link #retryLater}: each page is in it at most once, however often its fetch is refused. */
    private final boolean[] retrying;
    private int cursor;
    private long lastPersist = System.nanoTime();
    private long lastRetry;
    private long lastTimeoutLog;
    private long fillTokens;
    private long lastTokenRefill = System.nanoTime();
    private final AtomicLong demandBytes = new AtomicLong();
    private final AtomicLong backgroundBytes = new AtomicLong();
    private boolean done;
    private volatile Thread thread;

    LazyFiller(final LazyStore store, final LazyStore.Options options) {
        this.store = store;
        this.options = options;
        this.pageSize = store.geo.pageSize();
        // The budget: a quarter for page buffers in flight, a quarter for pages written but not yet durable, half
        // for durable background-filled pages left in the page cache.
        final long budgetPages = options.memoryBudget() / pageSize;
        final int n = (int) Math.max(8, Math.min(MAX_PAGES_IN_RAM, budgetPages / 4));
        persistPages = (int) Math.max(8, Math.min(MAX_PAGES_IN_RAM, budgetPages / 4));
        cachedFill = new int[(int) Math.max(8, Math.min(store.geo.pageCount(), budgetPages / 2))];
        buffers = new MemorySegment[n];
        views = new ByteBuffer[n];
        bufferPage = new int[n];
        bufferDemand = new boolean[n];
        boxes = new Integer[n];
        freeBuffers = new ManyToManyConcurrentArrayQueue<>(n);
        deferredMerges = new ManyToManyConcurrentArrayQueue<>(n);
        for (int i = 0; i < n; i++) {
            buffers[i] = arena.allocate(pageSize, 4096);
            views[i] = buffers[i].asByteBuffer();
            boxes[i] = i;
            freeBuffers.offer(boxes[i]);
        }
        iov = arena.allocate(16, 8);
        transportIov = ThreadLocal.withInitial(() -> arena.allocate(16, 8)); // a shared arena allocates from any thread
        final int pages = store.geo.pageCount();
        demands = new ManyToOneConcurrentArrayQueue<>(Math.max(1024, Math.min(pages, 1 << 16)));
        completions = new ManyToOneConcurrentArrayQueue<>(n * 2);
        wholePageWrites = new ManyToOneConcurrentArrayQueue<>(1 << 14);
        inFlight = new AtomicIntegerArray(pages);
        firstAttempt = new long[pages];
        badChecksums = new byte[pages];
        retrying = new boolean[pages];
        backgroundFilled = new boolean[pages];
    }

    long demandBytes() {
        return demandBytes.get();
    }

    long backgroundBytes() {
        return backgroundBytes.get();
    }

    /**
     * A request thread just moved page {@code p} from ABSENT to FETCHING and waits for it: fetch it from this thread
     * at demand priority, or, if no buffer is free or the source refuses, queue it for the filler.
     */
    void demandNow(final int p) {
        final Integer b = takeForDemand();
        if (b != null) {
            if (start(p, b, true)) {
                return;
            }
            release(b);
        }
        demand(p);
    }

    /** A request thread waits for page {@code p} (FETCHING) that no fetch is carrying now; the filler fetches it first. */
    void demandIfIdle(final int p) {
        if (inFlight.get(p) == 0) { // volatile: a fetch accepted before we looked is seen, so no duplicate is queued for it
            demand(p);
        }
    }

    /** Queues page {@code p} for the filler's demand fetch. Boxes the page number: a rare path (refused or retried fetch). */
    private void demand(final int p) {
        if (!demands.offer(p)) {
            LOG.warn("demand queue full; page {} will be fetched by the background fill", p);
        }
        wake();
    }

    /** Ends the agent's idle park at once: a miss must not wait out the backoff (up to 1 ms) twice. */
    private void wake() {
        final Thread t = thread;
        if (t != null) {
            LockSupport.unpark(t);
        }
    }

    @Override
    public void onStart() {
        thread = Thread.currentThread();
    }

    void wholePageWritten(final int p) {
        wholePageWrites.offer(p);
    }

    @Override
    public void onFetched(final long tag, final int firstPage, final int count, final int status) {
        final int b = (int) tag;
        if (status == PageSource.OK && bufferDemand[b]) {
            // A guest waits: verify, answer and merge right here on the completing thread, no hand-off.
            final int p = bufferPage[b];
            final ByteBuffer view = views[b].clear().limit(store.geo.pageLength(p));
            if (store.manifest.verify(p, view)) {
                // inFlight stays 1 until the merge: a reader that parks meanwhile must not start a second fetch.
                demandBytes.addAndGet(store.geo.pageLength(p));
                // The guest's reads first, from the verified bytes; the local write follows, off their path.
                if (store.serveWaiters(p, buffers[b]) > 0 && deferredMerges.offer(boxes[b])) {
                    // Every waiter was answered: the local write waits for a request thread with nothing
                    // to do (or this agent). Done here, it would hold up the next request on a host with no idle core:
                    // measured on 2 cores, the queue agent then waits out the write (~12 us) before it sees the guest's
                    // next request. The offer (ordered store) publishes bufferPage[b] and the bytes to the merger.
                    return;
                }
                mergeOrFail(p, b, transportIov.get());
                release(b); // ordered store: the buffer's next user sees it free only after we are done with it
                return;
            }
        }
        // Hand over to the agent; the queue's CAS publishes the buffer's bytes with it.
        completions.offer((tag << 8) | status);
        wake();
    }

    /**
     * A request thread parked a read on a page whose merge may have been put off: for each page whose merge is put
     * off, answers the reads parked on it from its buffer, as {@link #onFetched} did, and leaves the merge put off
     * (a guest reading a page in small pieces gets each from the buffer, not from the local file after a write). A page
     * with a parked read that cannot be answered so (one across pages, or over sectors the guest wrote) is merged now.
     * Each buffer belongs to whichever thread took it off the queue, until that thread puts it back or frees it.
     */
    void serveDeferred() {
        for (int n = deferredMerges.size(); n > 0; n--) {
            final Integer b = deferredMerges.poll(); // acquires what the thread that put it there wrote
            if (b == null) {
                return;
            }
            final int p = bufferPage[b];
            if (store.serveWaiters(p, buffers[b]) < 0 || !deferredMerges.offer(b)) {
                mergeOrFail(p, b, transportIov.get());
                release(b);
            }
        }
    }

    /**
     * Merges the pages {@link #onFetched} answered from their buffers; any thread (a request thread with nothing else
     * to do, this agent as a backstop). Reads that parked on them since run after this.
     */
    void runDeferredMerges() {
        Integer b;
        while ((b = deferredMerges.poll()) != null) { // poll acquires what the offering thread wrote
            mergeOrFail(bufferPage[b], b, transportIov.get());
            release(b);
        }
    }

    @Override
    public int doWork() throws IOException {
        if (done) {
            return 0;
        }
        int work = 0;
        runDeferredMerges();
        Long c;
        while ((c = completions.poll()) != null) {
            onCompletion((int) (c >>> 8), (int) (c & 0xff));
            work++;
        }
        Integer w;
        while ((w = wholePageWrites.poll()) != null) {
            finishWholePageWrite(w);
            work++;
        }
        work += issueDemands();
        work += retry();
        work += issueBackground();
        final long now = System.nanoTime();
        final int pendingDurable;
        synchronized (residentPending) {
            pendingDurable = residentPending.size();
        }
        if (pendingDurable >= persistPages || (pendingDurable > 0 && now - lastPersist > PERSIST_NANOS)) {
            persist(true);
            work++;
        }
        if (store.state.allLocal() && freeCount() == buffers.length) {
            switchToDiskOnly();
            work++;
        }
        return work;
    }

    private int issueDemands() {
        int n = 0;
        Integer p;
        while ((p = demands.peek()) != null) {
            if (inFlight.get(p) != 0 || store.table.state(p) != PageTable.FETCHING) {
                demands.poll(); // a duplicate, or it arrived meanwhile
                continue;
            }
            if (!start(p, true)) {
                if (!store.source.connected()) {
                    // Down: every queued demand goes to the retry list now (start() put this one there), so each
                    // one's demand timeout starts now, not after the demands queued ahead of it have timed out.
                    demands.poll();
                    continue;
                }
                break; // connected but full: the head goes out as soon as a fetch completes
            }
            demands.poll();
            n++;
        }
        return n;
    }

    private int issueBackground() {
        final int reserve = buffers.length / DEMAND_RESERVE_DIVISOR;
        int n = 0;
        refillTokens();
        while (freeCount() > reserve && cursor < store.geo.pageCount() && (options.fillRateBytesPerSecond() <= 0 || fillTokens >= pageSize)) {
            final int p = cursor;
            if (store.table.state(p) != PageTable.ABSENT || !store.table.transition(p, PageTable.ABSENT, PageTable.FETCHING)) {
                cursor++;
                continue;
            }
            if (!start(p, false)) {
                firstAttempt[p] = 0; // back to ABSENT with nobody waiting: a later demand's timeout starts afresh
                store.table.transition(p, PageTable.FETCHING, PageTable.ABSENT);
                break;
            }
            cursor++;
            fillTokens -= pageSize;
            n++;
        }
        if (cursor >= store.geo.pageCount() && n == 0 && freeCount() == buffers.length) {
            cursor = 0; // wrap: pick up pages whose fetch failed and went back to ABSENT
        }
        return n;
    }

    private void refillTokens() {
        final long rate = options.fillRateBytesPerSecond();
        if (rate <= 0) {
            return;
        }
        final long now = System.nanoTime();
        final long earned = (now - lastTokenRefill) * rate / 1_000_000_000L;
        if (earned == 0) {
            return; // keep the clock where it was: at a slow rate, frequent calls would otherwise round every gain away
        }
        fillTokens = Math.min(rate / 10 + pageSize, fillTokens + earned);
        lastTokenRefill = now;
    }

    /** Returns buffer {@code b} to the free ones, as the hot one if that place is empty; any thread. */
    private void release(final int b) {
        // CAS and queue offer both release: the buffer's contents are done with before anyone takes it.
        if (!hotBuffer.compareAndSet(-1, b)) {
            freeBuffers.offer(boxes[b]);
        }
    }

    /** A free buffer for a demand fetch, the hot one if there is one; null if none is free. Any thread. */
    private Integer takeForDemand() {
        final int hot = hotBuffer.getAndSet(-1); // acquires what its releaser did with it
        return hot >= 0 ? boxes[hot] : freeBuffers.poll();
    }

    /** Free buffers, the hot one included. */
    private int freeCount() {
        return freeBuffers.size() + (hotBuffer.get() >= 0 ? 1 : 0);
    }

    /** Filler thread: fetches {@code p} in a free buffer; if none is free or the source refuses, a demand is retried later. */
    private boolean start(final int p, final boolean isDemand) {
        final Integer b = isDemand ? takeForDemand() : freeBuffers.poll();
        if (b != null && start(p, b, isDemand)) {
            return true;
        }
        if (b != null) {
            release(b);
        }
        if (isDemand && (b != null || !store.source.connected())) {
            scheduleRetry(p);
        }
        return false;
    }

    /**
     * Any thread: submits the fetch of {@code p} into buffer {@code b}, which the caller owns; false if refused. True,
     * with {@code b} freed here, if another thread's fetch of {@code p} is in flight already.
     */
    private boolean start(final int p, final int b, final boolean isDemand) {
        // The claim on fetching p. A request thread that finds p FETCHING may ask this agent for it (demandIfIdle)
        // in the moment between another request thread moving it there and that thread's claim: whichever claims
        // first fetches, and the other, seeing the claim, leaves it. CAS: one fetch of a page in flight at a time.
        if (!inFlight.compareAndSet(p, 0, 1)) {
            release(b);
            return true;
        }
        if (firstAttempt[p] == 0) {
            firstAttempt[p] = System.nanoTime();
        }
        // Plain writes, published to the completing thread by the source's submit (a queue offer, a release).
        bufferPage[b] = p;
        bufferDemand[b] = isDemand;
        if (!store.source.fetch(store.manifest.firstSourcePage(p), store.manifest.sourcePageCount(p), buffers[b], isDemand ? PageSource.DEMAND : PageSource.BACKGROUND, b, this)) {
            inFlight.set(p, 0);
            return false;
        }
        return true;
    }

    /** Retries {@code p} every {@link #RETRY_NANOS} until it lands or its demand timeout passes. */
    private void scheduleRetry(final int p) {
        if (!retrying[p]) {
            retrying[p] = true;
            retryLater.addInt(p);
        }
    }

    private void removeRetry(final int i) {
        retrying[retryLater.getInt(i)] = false;
        retryLater.fastUnorderedRemove(i);
    }

    private int retry() {
        final long now = System.nanoTime();
        if (retryLater.isEmpty() || now - lastRetry < RETRY_NANOS) {
            return 0;
        }
        lastRetry = now;
        int n = 0;
        for (int i = retryLater.size() - 1; i >= 0; i--) {
            final int p = retryLater.getInt(i);
            if (store.table.state(p) != PageTable.FETCHING || inFlight.get(p) != 0) {
                removeRetry(i);
                continue;
            }
            if (options.demandTimeoutNanos() > 0 && now - firstAttempt[p] > options.demandTimeoutNanos()) {
                removeRetry(i);
                if (now - lastTimeoutLog > 1_000_000_000L) {
                    lastTimeoutLog = now;
                    LOG.warn("page {} could not be fetched for {} ms (provider unavailable?); requests waiting for it get IOERR "
                        + "(at most one such line per second)", p, options.demandTimeoutNanos() / 1_000_000);
                }
                fail(p);
                continue;
            }
            if (start(p, true)) {
                removeRetry(i);
                n++;
            }
        }
        return n;
    }

    private void onCompletion(final int b, final int status) throws IOException {
        final int p = bufferPage[b];
        final boolean isDemand = bufferDemand[b];
        inFlight.set(p, 0);
        try {
            if (status != PageSource.OK) {
                scheduleRetry(p); // stays FETCHING: waiters keep waiting until it lands or times out
                return;
            }
            final ByteBuffer view = views[b].clear().limit(store.geo.pageLength(p));
            if (!store.manifest.verify(p, view)) {
                if (++badChecksums[p] <= 1) {
                    LOG.warn("page {} failed its checksum; fetching it again", p);
                    scheduleRetry(p);
                } else {
                    LOG.warn("page {} failed its checksum twice; requests that need it get IOERR", p);
                    badChecksums[p] = 0;
                    fail(p);
                }
                return;
            }
            (isDemand ? demandBytes : backgroundBytes).addAndGet(store.geo.pageLength(p));
            backgroundFilled[p] = !isDemand;
            mergeOrFail(p, b, iov);
        } finally {
            release(b);
        }
    }

    /** Merges page {@code p}; if the local file refuses the write, the page's waiters get IOERR (never a wrong byte). */
    private void mergeOrFail(final int p, final int b, final MemorySegment scratchIov) {
        try {
            merge(p, b, scratchIov);
        } catch (final IOException e) {
            LOG.error("page {}: {}; requests that need it get IOERR (is the local file's disk full or failing?)", p, e.getMessage());
            inFlight.set(p, 0); // before the page goes back to ABSENT: the next fetch's issuer sets it again
            fail(p);
            return;
        }
        inFlight.set(p, 0); // the page left FETCHING (readable now): no fetch of it can start again
    }

    /** Back to ABSENT, and every waiter learns the fetch failed. */
    private void fail(final int p) {
        firstAttempt[p] = 0;
        if (store.table.transition(p, PageTable.FETCHING, PageTable.ABSENT)) {
            store.table.complete(p, false);
        }
    }

    /** Writes the fetched page's bytes into the local file except where the guest wrote, then makes it readable. */
    private void merge(final int p, final int b, final MemorySegment iov) throws IOException {
        while (true) {
            if (store.table.state(p) != PageTable.FETCHING) {
                return; // the guest overwrote the whole page meanwhile: nothing of ours is needed
            }
            if (!store.table.transition(p, PageTable.FETCHING, PageTable.MERGING)) {
                continue;
            }
            // Volatile CAS above, volatile read here: pairs with LazyStore.enter (increment, then read state).
            if (store.writers.get(p) == 0) {
                break;
            }
            store.table.transition(p, PageTable.MERGING, PageTable.FETCHING);
            Thread.onSpinWait();
        }
        final long pageStart = store.geo.pageStart(p);
        final int sectors = store.geo.pageLength(p) / SECTOR;
        final long firstSector = pageStart / SECTOR;
        int s = 0;
        while (s < sectors) {
            if (store.guestWrote(firstSector + s)) {
                s++;
                continue;
            }
            int e = s;
            while (e < sectors && !store.guestWrote(firstSector + e)) {
                e++;
            }
            iov.set(JAVA_LONG, 0, buffers[b].address() + (long) s * SECTOR);
            iov.set(JAVA_LONG, 8, (long) (e - s) * SECTOR);
            final int rc = store.image.write(iov.address(), 1, pageStart + (long) s * SECTOR, (long) (e - s) * SECTOR);
            if (rc != 0) {
                store.table.transition(p, PageTable.MERGING, PageTable.FETCHING);
                throw new IOException("writing page " + p + " to the local file failed with errno " + -rc);
            }
            s = e;
        }
        firstAttempt[p] = 0;
        store.table.transition(p, PageTable.MERGING, PageTable.RESIDENT);
        synchronized (residentPending) {
            residentPending.addInt(p);
        }
        store.table.complete(p, true);
    }

    private void finishWholePageWrite(final int p) {
        for (byte s = store.table.state(p); s == PageTable.ABSENT || s == PageTable.FETCHING; s = store.table.state(p)) {
            if (store.table.transition(p, s, PageTable.RESIDENT)) {
                synchronized (residentPending) {
                    residentPending.addInt(p);
                }
                store.table.complete(p, true);
                return;
            }
        }
    }

    /**
     * Makes resident pages durable: {@code fdatasync} the image, then record them and the guest-written sectors in
     * the state file ({@code fdatasync} again). Also called by a guest FLUSH (any I/O thread), hence synchronized.
     */
    synchronized void persist(final boolean fromAgent) throws IOException {
        if (store.image.datasync() != 0) {
            throw new IOException("fdatasync of the local image failed");
        }
        final int[] pages;
        synchronized (residentPending) {
            pages = residentPending.toIntArray();
            residentPending.clear();
        }
        for (final int p : pages) {
            store.state.markLocal(p);
        }
        for (int w = 0; w < store.guestDone.length(); w++) {
            final long bits = store.guestDone.get(w);
            if (bits != 0) {
                store.state.orGuestWord(w, bits);
            }
        }
        store.state.commit();
        for (final int p : pages) {
            store.table.transition(p, PageTable.RESIDENT, PageTable.LOCAL);
            if (backgroundFilled[p]) {
                backgroundFilled[p] = false;
                keepCached(p);
            }
        }
        if (fromAgent) {
            lastPersist = System.nanoTime();
        }
    }

    /** Records durable background page {@code p} as cached; drops the oldest such pages beyond the ring's capacity. */
    private void keepCached(final int p) {
        if (cachedFillCount == cachedFill.length) {
            int first = cachedFill[cachedFillHead];
            int last = first;
            int dropped = 0;
            // Drop an eighth of the ring at once, merging consecutive pages into one call (the fill runs in order).
            while (cachedFillCount > 0 && dropped < Math.max(1, cachedFill.length / 8)) {
                final int q = cachedFill[cachedFillHead];
                if (q != last + 1 && dropped > 0) {
                    dropCache(first, last);
                    first = q;
                }
                last = q;
                cachedFillHead = (cachedFillHead + 1) % cachedFill.length;
                cachedFillCount--;
                dropped++;
            }
            dropCache(first, last);
        }
        cachedFill[(cachedFillHead + cachedFillCount) % cachedFill.length] = p;
        cachedFillCount++;
    }

    private void dropCache(final int first, final int last) {
        final long start = store.geo.pageStart(first);
        store.image.dropCache(start, store.geo.pageStart(last) + store.geo.pageLength(last) - start); // advisory: failure is harmless
    }

    private void switchToDiskOnly() throws IOException {
        persist(true);
        store.state.markDiskOnly(options.imageName());
        store.switchedToDiskOnly();
        store.source.close();
        done = true;
        LOG.info("every page is local: switched to disk-only {} s after start ({} MiB on demand, {} MiB in the background); "
                + "its connections to the sources are closed", String.format("%.1f", (System.nanoTime() - store.startNanos) / 1e9),
            demandBytes.get() >> 20, backgroundBytes.get() >> 20);
    }

    @Override
    public void onClose() {
        runDeferredMerges(); // the request threads are gone: what they left goes to the local file before the buffers do
        arena.close();
    }

    @Override
    public String roleName() {
        return "lazy-filler";
    }
}
