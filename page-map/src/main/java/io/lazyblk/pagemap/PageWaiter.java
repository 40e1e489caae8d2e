package io.lazyblk.pagemap;

/**
 * Something parked until a page arrives: a guest request, usually. Intrusive list node, so parking allocates
 * nothing; a waiter is on at most one page's list at a time, and the list owner (the {@link PageTable}) writes
 * {@link #nextWaiter} only while the waiter is being pushed.
 */
public abstract class PageWaiter {
    PageWaiter nextWaiter;

    /** The page this waiter waited for became readable, or its fetch failed ({@code ok == false}). Any thread. */
    public abstract void pageReady(int page, boolean ok);
}
