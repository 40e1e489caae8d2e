package io.lazyblk.pagemap;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;

/**
 * Per-page state of a lazily filled image, changed only by compare-and-set:
 * {@code ABSENT -> FETCHING -> MERGING -> RESIDENT -> LOCAL}, with {@code FETCHING -> ABSENT} when a fetch fails
 * and {@code ABSENT|FETCHING -> RESIDENT} when the guest overwrites a whole page. Each page also has a lock-free list of
 * {@link PageWaiter}s; {@link #complete} hands them the outcome exactly once. Thread-safe; no allocation.
 *
 * <p>Waiter protocol: a waiter parks with {@link #park}. A page's list closes for good once the page is readable,
 * so nobody can park on a page whose completion has passed; after a failed fetch the list reopens, and a waiter
 * that parks on an ABSENT page is told to start the fetch itself ({@link #PARKED_START_FETCH}).
 */
public final class PageTable {
    public static final byte ABSENT = 0;
    public static final byte FETCHING = 1;
    /** Fetched bytes are being merged into the local file around the sectors the guest wrote; writers wait. */
    public static final byte MERGING = 2;
    /** Verified data is readable (in the local file's page cache or RAM) but not yet durable. */
    public static final byte RESIDENT = 3;
    /** Data durable in the local file. */
    public static final byte LOCAL = 4;

    private static final VarHandle BYTE = MethodHandles.arrayElementVarHandle(byte[].class);
    private static final VarHandle WAITERS = MethodHandles.arrayElementVarHandle(PageWaiter[].class);
    /** Marks a waiter list as closed to new waiters while its page's fetch completes. */
    private static final PageWaiter CLOSED = new PageWaiter() {
        @Override
        public void pageReady(final int page, final boolean ok) {
        }
    };

    private final byte[] states;
    private final PageWaiter[] waiters;

    public PageTable(final int pages) {
        this.states = new byte[pages];
        this.waiters = new PageWaiter[pages];
    }

    public int pageCount() {
        return states.length;
    }

    /** The page's state; an acquire read, pairing with the release in the transition that set it. */
    public byte state(final int page) {
        return (byte) BYTE.getAcquire(states, page);
    }

    /** True if the page's bytes may be read from local storage (RESIDENT or LOCAL). */
    public boolean readable(final int page) {
        return state(page) >= RESIDENT;
    }

    /** CAS: moves {@code page} from {@code from} to {@code to}; returns whether this caller made the move. */
    public boolean transition(final int page, final byte from, final byte to) {
        // Volatile CAS: everything the caller wrote before (page data, file writes) is visible to whoever reads
        // the new state with state()'s acquire.
        return BYTE.compareAndSet(states, page, from, to);
    }

    /** Sets the state without a CAS; only for loading durable state before any other thread runs. */
    public void initialize(final int page, final byte state) {
        BYTE.setRelease(states, page, state);
    }

    /** {@link #park}: not parked; the page is readable or its completion is being delivered; look again. */
    public static final int NOT_PENDING = 0;
    /** {@link #park}: parked; a fetch is in flight and its completion will call the waiter. */
    public static final int PARKED = 1;
    /**
     * {@link #park}: parked, but the page is ABSENT (a fetch failed meanwhile): the caller must try
     * {@code transition(page, ABSENT, FETCHING)} and fetch if it wins; whoever wins completes the waiters.
     */
    public static final int PARKED_START_FETCH = 2;

    /** Parks {@code w} on {@code page} until a fetch of it completes; see the result codes. */
    public int park(final int page, final PageWaiter w) {
        while (true) {
            final PageWaiter head = (PageWaiter) WAITERS.getAcquire(waiters, page);
            if (head == CLOSED || readable(page)) {
                return NOT_PENDING;
            }
            w.nextWaiter = head;
            // CAS publishes w.nextWaiter together with w (release semantics of a volatile CAS).
            if (WAITERS.compareAndSet(waiters, page, head, w)) {
                // Re-read after the CAS (volatile, so ordered after it): a failure may have returned the page to
                // ABSENT and drained the list just before we got on it; then no fetch is coming unless we start one.
                return state(page) == ABSENT ? PARKED_START_FETCH : PARKED;
            }
        }
    }

    /**
     * Detaches the waiters of {@code page} while its fetch is still in progress, so its fetcher can answer some of them
     * from the fetched bytes before they reach the local file. The list stays open: later waiters park as usual. The
     * caller owns the detached waiters: it walks them with {@link #detachNext} and must answer each one or park it
     * again (a waiter it drops is never completed). Returns the first, or null if none (or the list is closed).
     */
    public PageWaiter takeWaiters(final int page) {
        while (true) {
            final PageWaiter head = (PageWaiter) WAITERS.getAcquire(waiters, page);
            if (head == null || head == CLOSED) {
                return null;
            }
            // CAS to empty: acquires the pushes of every waiter on the list (each pushed with a release CAS).
            if (WAITERS.compareAndSet(waiters, page, head, null)) {
                return head;
            }
        }
    }

    /**
     * Whether a waiter is parked on {@code page}: a volatile read of its list, so a caller that gives up a page's
     * fetch with a volatile store first, then asks, and a waiter that parks (a volatile CAS) and then looks at that
     * flag, cannot both miss each other.
     */
    public boolean hasWaiters(final int page) {
        final PageWaiter head = (PageWaiter) WAITERS.getVolatile(waiters, page);
        return head != null && head != CLOSED;
    }

    /** For a waiter taken with {@link #takeWaiters}: unlinks it and returns the next one taken with it, or null. */
    public static PageWaiter detachNext(final PageWaiter w) {
        final PageWaiter next = w.nextWaiter;
        w.nextWaiter = null;
        return next;
    }

    /**
     * Delivers a fetch outcome to every waiter of {@code page}, exactly once each. Call after the state
     * transition that made the page readable ({@code ok}) or returned it to ABSENT ({@code !ok}).
     */
    public int complete(final int page, final boolean ok) {
        // Close the list: late parkers see CLOSED and re-check the state the caller already changed. A readable
        // page stays closed for good; after a failure the list reopens for the next fetch.
        PageWaiter w = (PageWaiter) WAITERS.getAndSet(waiters, page, CLOSED);
        if (!ok) {
            WAITERS.setRelease(waiters, page, null);
        }
        int n = 0;
        while (w != null && w != CLOSED) {
            final PageWaiter next = w.nextWaiter;
            w.nextWaiter = null;
            w.pageReady(page, ok);
            w = next;
            n++;
        }
        return n;
    }

}
