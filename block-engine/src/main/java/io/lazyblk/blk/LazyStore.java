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
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.locks.LockSupport;

/**
 * A block backend that fills a local image lazily from a {@link PageSource}: reads of absent pages park their
 * request until the page arrives (demand fetch at top priority), a {@link LazyFiller} streams the rest in the
 * background, every fetched page is verified and merged into the local file around the sectors the guest wrote,
 * and when every page is durable locally the store switches to disk-only.
 *
 * <p>Guest writes never wait for a fetch: a write to a page that is not readable yet "enters" the page (a writer
 * count the merge waits on), marks its sectors guest-owned, and writes through; the merge writes only sectors the
 * guest did not. Thread-safety: request methods run on I/O agent threads, the filler on its own thread; page
 * states change by CAS only ({@link PageTable}).
 */
public final class LazyStore implements BlockBackend {
    private static final Logger LOG = LoggerFactory.getLogger(LazyStore.class);
    /** Returned by {@link #read}/{@link #write} when the request was parked; it is resumed through its waiter. */
    public static final int PENDING = Integer.MAX_VALUE;
    static final int SECTOR = 512;

    final Manifest manifest;
    final PageGeometry geo;
    final PageTable table;
    final LocalImage image;
    final PageStateFile state;
    final PageSource source;
    /**
     * Sectors the guest is writing or wrote in pages that were not readable then (1 bit per sector), set before the
     * write so a merge skips them.
     */
    final AtomicLongArray guestSectors;
    /**
     * The same, set only once the write completed: what {@link LazyFiller#persist} records durably, so a crash never
     * leaves a sector marked guest-owned that holds neither the image's bytes nor the guest's.
     */
    final AtomicLongArray guestDone;
    /** Guest writes in progress per not-yet-readable page; a merge waits for zero. */
    final AtomicIntegerArray writers;
    private final Options options;
    private final LazyFiller filler;
    private final AgentRunner fillerRunner;
    private volatile boolean diskOnly;
    final long startNanos = System.nanoTime();

    /** Settings of the lazy fill. */
    /** @param imageName the provider's name of the image, recorded with the switch to disk-only */
    public record Options(String imageName, long memoryBudget, long fillRateBytesPerSecond, long demandTimeoutNanos) {
    }

    public LazyStore(final Manifest manifest, final LocalImage image, final PageStateFile state, final PageSource source,
                     final Options options) {
        this.manifest = manifest;
        this.geo = manifest.geometry();
        this.image = image;
        this.state = state;
        this.source = source;
        this.table = new PageTable(geo.pageCount());
        this.guestSectors = new AtomicLongArray(state.guestWordCount());
        this.guestDone = new AtomicLongArray(state.guestWordCount());
        this.writers = new AtomicIntegerArray(geo.pageCount());
        for (int p = 0; p < geo.pageCount(); p++) {
            if (state.isLocal(p)) {
                table.initialize(p, PageTable.LOCAL);
            }
        }
        for (int w = 0; w < guestSectors.length(); w++) {
            guestSectors.set(w, state.guestWord(w));
            guestDone.set(w, state.guestWord(w));
        }
        this.options = options;
        this.filler = new LazyFiller(this, options);
        this.fillerRunner = new AgentRunner(new BackoffIdleStrategy(100, 100, 10_000, 1_000_000),
            t -> LOG.error("lazy filler failed", t), null, filler);
        AgentRunner.startOnThread(fillerRunner);
    }

    /** Where absent pages come from (for status). */
    public PageSource source() {
        return source;
    }

        public boolean diskOnly() {
        return diskOnly;
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
        return filler.demandBytes();
    }

    public long bytesFetchedInBackground() {
        return filler.backgroundBytes();
    }

    @Override
    public long sizeBytes() {
        return geo.imageSize();
    }

    @Override
    public boolean readOnly() {
        return image.readOnly();
    }

    /**
     * Reads once every page in range is readable; otherwise demands the missing ones, parks {@code r} on one and
     * returns {@link #PENDING}. Called again when that page arrives.
     */
    int read(final BlkRequest r) {
        if (!diskOnly) {
            final int first = geo.pageOf(r.offset);
            final int last = geo.lastPageOf(r.offset, r.dataBytes);
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
    private boolean waitFor(final int p, final BlkRequest r) {
        while (true) {
            final int code = table.park(p, r);
            if (code == PageTable.PARKED || code == PageTable.PARKED_START_FETCH) {
                demand(p); // ABSENT: we may win the fetch; FETCHING: make sure one is coming
                if (code == PageTable.PARKED) {
                    // The page's fetch may have landed already, its merge put off until this thread idles (a read
                    // of the same page just before was answered from it): answer r from its bytes now, or merge it
                    // now if r cannot be answered so, rather than have r wait out the idling.
                    filler.serveDeferred();
                }
                return true;
            }
            if (table.readable(p)) {
                return false;
            }
            Thread.onSpinWait(); // the list is closed while a failed fetch's waiters are told: look again
        }
    }

    /**
     * The fetch of page {@code p} was verified in {@code bytes} and is not merged yet: answers its parked reads that lie
     * wholly in the page and cover no sector the guest wrote straight from those bytes, so the guest does not wait for
     * the local write; the rest are parked again and run once the page is merged. On the fetch's completing thread.
     * Returns how many were answered if that was all of them (0 if none waited), else -1 (someone waits for the merge).
     */
    int serveWaiters(final int p, final MemorySegment bytes) {
        int answered = 0;
        boolean reparked = false;
        PageWaiter w = table.takeWaiters(p);
        while (w != null) {
            final PageWaiter next = PageTable.detachNext(w);
            if (!(w instanceof BlkRequest r && answerable(p, r))) {
                repark(p, w);
                reparked = true;
            } else {
                r.answerFrom(bytes, r.offset - geo.pageStart(p));
                answered++;
            }
            w = next;
        }
        return reparked ? -1 : answered;
    }

    /** Whether the fetched bytes of page {@code p} are the right answer to {@code r}: a read inside it, no guest sector. */
    private boolean answerable(final int p, final BlkRequest r) {
        final long start = geo.pageStart(p);
        if (r.type != VirtioBlk.T_IN || r.offset < start || r.offset + r.dataBytes > start + geo.pageLength(p)) {
            return false;
        }
        // A write that completed before this read was submitted marked its sectors before it was written: seen here.
        for (long s = r.offset / SECTOR, end = (r.offset + r.dataBytes + SECTOR - 1) / SECTOR; s < end; s++) {
            if (guestWrote(s)) {
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

    /** Lets the calling thread (a queue's, with reads parked) take the source's demand completions that are ready. */
    @Override
    public int poll() {
        // After the switch to disk-only the source is closed; a poll racing the switch finds its connection gone.
        return diskOnly ? 0 : source.poll();
    }

    /** Writes the pages whose reads were answered from their fetched bytes to the local file; a request thread with nothing to do calls this. */
    void runDeferredMerges() {
        filler.runDeferredMerges();
    }

    private void demand(final int p) {
        final byte s = table.state(p);
        if (s == PageTable.ABSENT) {
            if (table.transition(p, PageTable.ABSENT, PageTable.FETCHING)) {
                filler.demandNow(p); // we own the fetch: issue it from this thread
            }
        } else if (s == PageTable.FETCHING) {
            filler.demandIfIdle(p); // waiting for a retry: ask the filler to fetch it first
        }
    }

    /** Writes guest data; never waits for a fetch (see the class comment). */
    int write(final BlkRequest r) {
        if (diskOnly) {
            return image.write(r.iov.address(), r.iovCount, r.offset, r.dataBytes);
        }
        return guestWrite(r.offset, r.dataBytes, r, false, 0, 0);
    }

    int writeZeroes(final BlkRequest r, final long scratchIov, final long scratchLen) {
        if (diskOnly) {
            return image.writeZeroes(r.dwzOffset, r.dwzLength, r.dwzUnmap, scratchIov, scratchLen);
        }
        return guestWrite(r.dwzOffset, r.dwzLength, r, true, scratchIov, scratchLen);
    }

    private int guestWrite(final long offset, final long length, final BlkRequest r, final boolean zeroes,
                           final long scratchIov, final long scratchLen) {
        final int first = geo.pageOf(offset);
        final int last = geo.lastPageOf(offset, length);
        for (int p = first; p <= last; p++) {
            enter(p);
        }
        try {
            // Mark before writing: a merge that starts after we leave sees the marks and skips these sectors.
            markSectors(guestSectors, offset / SECTOR, length / SECTOR);
            final int rc = zeroes
                ? image.writeZeroes(offset, length, false, scratchIov, scratchLen) // never unmap: the page map owns holes
                : image.write(r.iov.address(), r.iovCount, r.offset, r.dataBytes);
            if (rc == 0) {
                markSectors(guestDone, offset / SECTOR, length / SECTOR);
                for (int p = first; p <= last; p++) {
                    if (!table.readable(p) && wholePageGuestWritten(p)) {
                        filler.wholePageWritten(p);
                    }
                }
            } else {
                unmarkFailedWrite(first, last, offset / SECTOR, length / SECTOR);
            }
            return rc;
        } finally {
            for (int p = first; p <= last; p++) {
                leave(p);
            }
        }
    }

    /** Registers a writer on a page that is not readable yet; waits out a merge in progress (a few µs). */
    private void enter(final int p) {
        while (true) {
            if (table.readable(p)) {
                writers.incrementAndGet(p); // harmless on a readable page; keeps leave() symmetric
                return;
            }
            writers.incrementAndGet(p);
            // Volatile increment, then volatile read of the state: pairs with the filler's CAS to MERGING followed
            // by its read of writers; at least one of us sees the other, so no merge runs while we write.
            if (table.state(p) != PageTable.MERGING) {
                return;
            }
            writers.decrementAndGet(p);
            while (table.state(p) == PageTable.MERGING) {
                Thread.onSpinWait();
            }
        }
    }

    private void leave(final int p) {
        writers.decrementAndGet(p);
    }

    private static void markSectors(final AtomicLongArray bits, final long firstSector, final long count) {
        long s = firstSector;
        final long end = firstSector + count;
        while (s < end) {
            final int word = (int) (s >>> 6);
            final int bit = (int) (s & 63);
            final int n = (int) Math.min(64 - bit, end - s);
            final long mask = n == 64 ? -1L : ((1L << n) - 1) << bit;
            bits.getAndAccumulate(word, mask, (a, b) -> a | b);
            s += n;
        }
    }

    /**
     * A guest write failed: its sectors hold neither its bytes nor (maybe) the image's, so they must not stay marked
     * guest-owned, or the merge would skip them and a read would return whatever is there. Unmarks the sectors no
     * completed write owns, in pages we are the only writer of (the merge waits for us, so none runs meanwhile); with
     * a concurrent writer on the same page the marks stay, as its write may need them.
     */
    private void unmarkFailedWrite(final int first, final int last, final long firstSector, final long count) {
        for (int p = first; p <= last; p++) {
            if (table.readable(p) || writers.get(p) != 1) {
                continue;
            }
            final long from = Math.max(firstSector, geo.pageStart(p) / SECTOR);
            final long to = Math.min(firstSector + count, (geo.pageStart(p) + geo.pageLength(p)) / SECTOR);
            for (long s = from; s < to; s++) {
                final int word = (int) (s >>> 6);
                final long bit = 1L << s;
                if ((guestDone.get(word) & bit) == 0) {
                    guestSectors.getAndAccumulate(word, ~bit, (a, b) -> a & b);
                }
            }
        }
    }

        boolean guestWrote(final long sector) {
        return (guestSectors.get((int) (sector >>> 6)) & (1L << sector)) != 0;
    }

    private boolean wholePageGuestWritten(final int p) {
        final long start = geo.pageStart(p) / SECTOR;
        final long n = geo.pageLength(p) / SECTOR;
        for (long s = start; s < start + n; s++) {
            if (!guestWrote(s)) {
                return false;
            }
        }
        return true;
    }

    /** Makes every acknowledged write durable, and the record of which sectors the guest wrote with it. */
    @Override
    public int flush() {
        if (diskOnly) {
            return image.datasync();
        }
        try {
            filler.persist(false); // fdatasync of the image, then the state file: one sync covers both
            return 0;
        } catch (final IOException e) {
            LOG.warn("could not record the page state durably: {}", e.getMessage());
            return -5;
        }
    }

    @Override
    public int read(final long iov, final int cnt, final long offset, final long total) {
        throw new UnsupportedOperationException("lazy reads go through read(BlkRequest)");
    }

    @Override
    public int write(final long iov, final int cnt, final long offset, final long total) {
        throw new UnsupportedOperationException("lazy writes go through write(BlkRequest)");
    }

    @Override
    public int discard(final long offset, final long length) {
        return 0; // a hint: on a lazily filled image, keeping the bytes is always correct
    }

    @Override
    public int writeZeroes(final long offset, final long length, final boolean mayUnmap, final long scratchIov, final long scratchLen) {
        throw new UnsupportedOperationException("lazy write-zeroes go through writeZeroes(BlkRequest, ...)");
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
        source.close(); // first: in-flight fetches complete UNAVAILABLE and stop writing into the filler's buffers
        fillerRunner.close();
        try {
            state.close();
        } catch (final IOException e) {
            LOG.warn("closing the page state file: {}", e.getMessage());
        }
        image.close();
    }
}
