package io.lazyblk.blk;

import io.lazyblk.pagemap.PageTable;
import org.agrona.collections.IntArrayList;
import org.agrona.concurrent.Agent;
import org.agrona.concurrent.ManyToOneConcurrentArrayQueue;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.util.concurrent.locks.LockSupport;

/**
 * The lazy store's agent: streams the pages nobody asked for at a bounded rate, fetches demanded pages the request
 * threads could not (no free buffer, source refused), retries failed fetches until a demand times out, makes pages and
 * guest writes durable in rounds ({@link Durability}), and switches the store to disk-only once every page is local.
 * Runs on its own thread; other threads talk to it through queues ({@link #demand}, {@link PageFetches#toAgent}).
 */
final class LazyFill implements Agent {
    private static final Logger LOG = LoggerFactory.getLogger(LazyFill.class);
    /** Make resident pages durable at least this often: bounds what a crash makes us refetch. */
    private static final long PERSIST_NANOS = 200_000_000L;
    /**
     * Record completed guest writes at least this often even when no page lands (the provider is down): bounds how long
     * a crash can forget that a sector is the guest's. Longer than for pages: each round costs an fdatasync of the image,
     * and a guest that writes also flushes on its own (a journaling file system every few seconds).
     */
    static final long GUEST_PERSIST_NANOS = 1_000_000_000L;
    /** Demand fetches keep a quarter of the page buffers: a background flood never starves the guest. */
    private static final int DEMAND_RESERVE_DIVISOR = 4;
    private static final long RETRY_NANOS = 50_000_000L;

    private final LazyStore store;
    private final LazyStore.Options options;
    private final PageBuffers buffers;
    private final PageFetches fetches;
    private final BackgroundRuns runs;
    private final FillGovernor governor;
    private final int pageSize;
    /** Make resident pages durable once this many are waiting: bounds the dirty page cache (a quarter of the budget). */
    private final int persistPages;
    private final PageCacheLimit cache;
    /** Pages the guest waits for, from request threads. */
    private final ManyToOneConcurrentArrayQueue<Integer> demands;
    private final ManyToOneConcurrentArrayQueue<Integer> wholePageWrites;
    private final byte[] badChecksums;
    private final IntArrayList retryLater = new IntArrayList();
    /** Whether a page is in {@link #retryLater}: each page is in it at most once, however often its fetch is refused. */
    private final boolean[] retrying;
    private int cursor;
    /** The next page of the boot profile to issue ({@link #issueProfile}); background pages wait until all are issued. */
    private int profileNext;
    private long lastRetry;
    private long lastTimeoutLog;
    private long fillTokens;
    private long lastTokenRefill = System.nanoTime();
    private boolean done;
    private volatile Thread thread;

    LazyFill(final LazyStore store, final LazyStore.Options options, final PageBuffers buffers, final PageFetches fetches,
             final BackgroundRuns runs, final FillGovernor governor, final int persistPages, final PageCacheLimit cache) {
        this.store = store;
        this.options = options;
        this.buffers = buffers;
        this.fetches = fetches;
        this.runs = runs;
        this.governor = governor;
        this.pageSize = store.geo.pageSize();
        this.persistPages = persistPages;
        this.cache = cache;
        final int pages = store.geo.pageCount();
        demands = new ManyToOneConcurrentArrayQueue<>(Math.max(1024, Math.min(pages, 1 << 16)));
        wholePageWrites = new ManyToOneConcurrentArrayQueue<>(1 << 14);
        badChecksums = new byte[pages];
        retrying = new boolean[pages];
    }

    /** Queues page {@code p} for a demand fetch by this agent. Boxes the page number: a rare path (refused or retried fetch). */
    void demand(final int p) {
        if (!demands.offer(p)) {
            LOG.warn("demand queue full; page {} will be fetched by the background fill", p);
        }
        wake();
    }

    /** The guest overwrote every sector of page {@code p}, which is not readable yet; any thread. */
    void wholePageWritten(final int p) {
        if (!wholePageWrites.offer(p)) {
            LOG.warn("whole-page write queue full; page {} is fetched and merged around the guest's sectors instead", p);
        }
    }

    /** Ends the agent's idle park at once: a miss must not wait out the backoff (up to 1 ms) twice. */
    void wake() {
        final Thread t = thread;
        if (t != null) {
            LockSupport.unpark(t);
        }
    }

    @Override
    public void onStart() {
        thread = Thread.currentThread();
        // The fill's hashing and writing is work nobody waits for: at nice 10 it gets about a tenth of a contended core
        // against the guest's vCPU and the request threads (CFS weights 110 against 1024), and all of an idle one. The
        // demand work this agent also does (retries, merges it is handed) is rare and short.
        if (FILL_NICE != 0 && io.lazyblk.sys.Threads.niceCurrentThread(FILL_NICE) != 0) {
            LOG.debug("could not set the fill agent's nice value to {}", FILL_NICE);
        }
    }

    /** Nice value of the fill agent's thread; {@code -Dlazyblk.fill.nice=0} turns it off (for measuring what it buys). */
    static final int FILL_NICE = Integer.getInteger("lazyblk.fill.nice", 10);

    @Override
    public int doWork() {
        if (done) {
            return persistGuestWrites();
        }
        int work = 0;
        fetches.runDeferredMerges();
        Long c;
        while ((c = fetches.toAgent.poll()) != null) {
            fetches.onAgentCompletion((int) (c >>> 8), (int) (c & 0xff));
            work++;
        }
        work += runs.landAll();
        Integer w;
        while ((w = wholePageWrites.poll()) != null) {
            fetches.wholePageWritten(w);
            work++;
        }
        work += issueDemands();
        work += issueProfile();
        work += retry();
        if (store.durability.failure() == null && profileIssued()) {
            // After a storage failure nothing more is recorded durable: a background page could never become local.
            work += issueBackground();
        }
        final long now = System.nanoTime();
        final int pending = store.durability.residentPending();
        final long since = now - store.durability.lastPersistNanos();
        // The last pages of the fill are made durable at once: nothing else is coming to batch them with, and the switch
        // to disk-only waits for them.
        final boolean lastOnes = pending > 0 && store.state.localCount() + pending >= store.geo.pageCount();
        if (pending >= persistPages || (pending > 0 && since > PERSIST_NANOS) || lastOnes
            || (store.durability.guestChanged() && since > GUEST_PERSIST_NANOS)) {
            work += persist();
        }
        if (store.state.allLocal() && buffers.freeCount() == buffers.count() && runs.idle() && store.durability.failure() == null
            && !store.diskOnlyHeld()) {
            switchToDiskOnly();
            work++;
        }
        return work;
    }

    /** One durability round, unless the storage failed (then the failure was logged once, and FLUSHes report it). */
    private int persist() {
        if (store.durability.failure() != null) {
            return 0;
        }
        try {
            store.persist();
        } catch (final IOException e) {
            return 0; // sticky: Durability logged it once
        }
        return 1;
    }

    /** After the switch: the guest's writes are still recorded (a peer export must never serve them), within the bound. */
    private int persistGuestWrites() {
        if (store.durability.guestChanged() && System.nanoTime() - store.durability.lastPersistNanos() > GUEST_PERSIST_NANOS) {
            return persist();
        }
        return 0;
    }

    private int issueDemands() {
        int n = 0;
        Integer p;
        while ((p = demands.peek()) != null) {
            if (fetches.inFlight.get(p) != 0 || store.table.state(p) != PageTable.FETCHING) {
                demands.poll(); // a duplicate, or it arrived meanwhile
                continue;
            }
            if (!start(p, true)) {
                if (!store.source.connected()) {
                    // Down: every queued demand goes to the retry list now (start() put this one there), so each one's
                    // demand timeout starts now, not after the demands queued ahead of it have timed out.
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

    /**
     * Issues the boot profile's pages, in its order, ahead of every background page and without the fill rate's tokens
     * (the profile is small and bounded: {@link io.lazyblk.pagemap.PageSource#MAX_PROFILE_PAGES}). On the wire they are
     * background fetches: the provider does not learn them as the guest's demand, and a two-lane source carries them on
     * its background connection, so a guest's miss never queues behind them. At most the buffers above the demand
     * reserve are in flight, so a miss always finds a buffer and goes out first.
     */
    private int issueProfile() {
        final int[] pages = store.profile.pages;
        if (profileNext >= pages.length || store.durability.failure() != null) {
            return 0;
        }
        final int reserve = buffers.count() / DEMAND_RESERVE_DIVISOR;
        int n = 0;
        while (profileNext < pages.length && buffers.freeCount() > reserve) {
            final int p = pages[profileNext];
            if (store.table.state(p) != PageTable.ABSENT || !store.table.transition(p, PageTable.ABSENT, PageTable.FETCHING)) {
                profileNext++; // the guest asked first, or it is here
                continue;
            }
            if (!start(p, false)) {
                if (store.table.hasWaiters(p)) {
                    // A reader parked while we tried: it saw a fetch claimed and asked for nothing. The demand path
                    // takes the page (retried, with the demand timeout if the source stays down).
                    scheduleRetry(p);
                    profileNext++;
                    continue;
                }
                fetches.firstAttempt[p] = 0; // back to ABSENT with nobody waiting, as a refused background page
                store.table.transition(p, PageTable.FETCHING, PageTable.ABSENT);
                break; // the source is full or down: again on the next turn
            }
            profileNext++;
            n++;
        }
        return n;
    }

    /** Whether every page of the boot profile was issued (or there is none): background pages may start. */
    private boolean profileIssued() {
        return profileNext >= store.profile.pages.length;
    }

    /**
     * Starts background runs ({@link BackgroundRuns}) from the cursor on, as many as the governor's window, the rate
     * (the governor's, capped by {@code --fill-rate}) and the free run buffers allow; pages of failed runs first.
     */
    private int issueBackground() {
        final long now = System.nanoTime();
        governor.observe(now, store.fillStats().guestRequests(), fetches.demandIssued(), fetches.demandOutstanding());
        final long rate = rate();
        refillTokens(now, rate);
        if (!runs.retryPending(now)) {
            return 0; // refused: the source is down or full; nothing new goes out either
        }
        final int pages = store.geo.pageCount();
        final int window = governor.window();
        int n = 0;
        while (runs.hasFree() && runs.inFlight() < window && cursor < pages) {
            final int maxPages = rate <= 0 ? runs.runPages : (int) Math.min(runs.runPages, fillTokens / pageSize);
            if (maxPages <= 0) {
                break; // out of tokens: the agent parks (its idle strategy) until the next look
            }
            if (store.table.state(cursor) != PageTable.ABSENT) {
                cursor++;
                continue;
            }
            final int got = runs.start(cursor, maxPages);
            cursor += Math.max(1, got);
            if (rate > 0) {
                fillTokens -= (long) got * pageSize;
            }
            if (runs.refused()) {
                break;
            }
            n += got > 0 ? 1 : 0;
        }
        if (cursor >= pages && n == 0 && runs.idle() && buffers.freeCount() == buffers.count()) {
            cursor = 0; // wrap: pick up pages whose fetch failed and went back to ABSENT
        }
        return n;
    }

    /** The background rate now: the governor's, capped by {@code --fill-rate}; 0 = uncapped. */
    private long rate() {
        final long cap = options.fillRateBytesPerSecond();
        final long g = governor.rate();
        return cap <= 0 ? g : g <= 0 ? cap : Math.min(cap, g);
    }

    private void refillTokens(final long now, final long rate) {
        if (rate <= 0) {
            fillTokens = 0; // uncapped: a cap that comes later starts from an empty bucket, not a stale burst
            lastTokenRefill = now;
            return;
        }
        // A burst of at most one run and a hundredth of a second: a back-off bites at once.
        final long cap = (long) runs.runPages * pageSize + rate / 100;
        // In double: elapsed nanos times a rate of GB/s overflows a long.
        final long earned = (long) Math.min(Long.MAX_VALUE / 2, (double) (now - lastTokenRefill) * rate / 1e9);
        if (earned == 0) {
            fillTokens = Math.min(cap, fillTokens);
            return; // keep the clock where it was: at a slow rate, frequent calls would otherwise round every gain away
        }
        fillTokens = Math.min(cap, Math.min(Long.MAX_VALUE / 2, fillTokens + earned));
        lastTokenRefill = now;
    }

    /** Fetches {@code p} in a free buffer; if none is free or the source refuses, a demand is retried later. */
    private boolean start(final int p, final boolean isDemand) {
        final Integer b = isDemand ? buffers.takeForDemand() : buffers.takeForBackground();
        if (b != null && fetches.start(p, b, isDemand)) {
            return true;
        }
        if (b != null) {
            buffers.release(b);
        }
        if (isDemand && (b != null || !store.source.connected())) {
            scheduleRetry(p);
        }
        return false;
    }

    /** Retries {@code p} every {@link #RETRY_NANOS} until it lands or its demand timeout passes. Agent thread. */
    void scheduleRetry(final int p) {
        if (!retrying[p]) {
            retrying[p] = true;
            retryLater.addInt(p);
        }
    }

    /** A fetch of {@code p} failed its checksum: fetched once more, then the requests that need it get IOERR. Agent thread. */
    void checksumFailed(final int p) {
        if (++badChecksums[p] <= 1) {
            LOG.warn("page {} failed its checksum; fetching it again", p);
            scheduleRetry(p);
        } else {
            LOG.warn("page {} failed its checksum twice; requests that need it get IOERR", p);
            badChecksums[p] = 0;
            fetches.fail(p);
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
            if (store.table.state(p) != PageTable.FETCHING || fetches.inFlight.get(p) != 0) {
                removeRetry(i);
                continue;
            }
            if (options.demandTimeoutNanos() > 0 && now - fetches.firstAttempt[p] > options.demandTimeoutNanos()) {
                removeRetry(i);
                if (now - lastTimeoutLog > 1_000_000_000L) {
                    lastTimeoutLog = now;
                    LOG.warn("page {} could not be fetched for {} ms (provider unavailable?); requests waiting for it get IOERR "
                        + "(at most one such line per second)", p, options.demandTimeoutNanos() / 1_000_000);
                }
                fetches.fail(p);
                continue;
            }
            if (start(p, true)) {
                removeRetry(i);
                n++;
            }
        }
        return n;
    }

    private void switchToDiskOnly() {
        try {
            store.persist();
            store.state.markDiskOnly(options.imageName());
        } catch (final IOException e) {
            LOG.error("could not record the switch to disk-only: {}; staying in lazy mode", e.getMessage());
            return;
        }
        store.switchedToDiskOnly();
        store.source.close();
        done = true;
        LOG.info("every page is local: switched to disk-only {} s after start ({} MiB on demand, {} MiB in the background); "
                + "its connections to the sources are closed", String.format("%.1f", (System.nanoTime() - store.startNanos) / 1e9),
            fetches.demandBytes() >> 20, fetches.backgroundBytes() >> 20);
    }

    @Override
    public void onClose() {
        // The request threads are gone: what they left goes to the local file, and the record of it, before the
        // buffers go. A clean stop never loses the record of a guest write.
        fetches.runDeferredMerges();
        if (store.durability.failure() == null) {
            try {
                store.persist();
            } catch (final IOException e) {
                // logged once by Durability
            }
        }
    }

    @Override
    public String roleName() {
        return "lazy-fill";
    }
}
