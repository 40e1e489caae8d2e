package io.lazyblk.pagemap;

import org.junit.jupiter.api.Test;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

class PageTableTest {
    private static final class Counting extends PageWaiter {
        final AtomicInteger calls = new AtomicInteger();
        volatile boolean lastOk;

        @Override
        public void pageReady(final int page, final boolean ok) {
            lastOk = ok;
            calls.incrementAndGet();
        }
    }

    @Test
    void shouldLetOnlyOneCallerStartAFetchAndWakeEveryWaiterOnce() {
        final PageTable t = new PageTable(4);
        assertTrue(t.transition(2, PageTable.ABSENT, PageTable.FETCHING));
        assertFalse(t.transition(2, PageTable.ABSENT, PageTable.FETCHING), "a second fetch of the same page must not start");
        final Counting a = new Counting();
        final Counting b = new Counting();
        assertEquals(PageTable.PARKED, t.park(2, a));
        assertEquals(PageTable.PARKED, t.park(2, b));
        assertTrue(t.transition(2, PageTable.FETCHING, PageTable.RESIDENT));
        assertEquals(2, t.complete(2, true));
        assertEquals(1, a.calls.get());
        assertEquals(1, b.calls.get());
        assertTrue(a.lastOk);
        assertEquals(PageTable.NOT_PENDING, t.park(2, new Counting()), "nobody may park on a readable page");
        assertTrue(t.readable(2));
    }

    @Test
    void shouldHandTheFetcherItsWaitersOnceAndKeepTheListOpenForLaterOnes() {
        final PageTable t = new PageTable(2);
        assertTrue(t.transition(1, PageTable.ABSENT, PageTable.FETCHING));
        final Counting a = new Counting();
        final Counting b = new Counting();
        assertEquals(PageTable.PARKED, t.park(1, a));
        assertEquals(PageTable.PARKED, t.park(1, b));
        // The fetcher takes both (newest first), answers b itself and parks a again, as LazyStore does.
        PageWaiter w = t.takeWaiters(1);
        final java.util.List<PageWaiter> taken = new java.util.ArrayList<>();
        while (w != null) {
            final PageWaiter next = PageTable.detachNext(w);
            taken.add(w);
            w = next;
        }
        assertEquals(java.util.List.of(b, a), taken);
        assertEquals(null, t.takeWaiters(1), "taken waiters are gone from the list");
        final Counting late = new Counting();
        assertEquals(PageTable.PARKED, t.park(1, late), "the list stays open while the page is being fetched");
        assertEquals(PageTable.PARKED, t.park(1, a));
        // The merge completes what is on the list now: the late parker and a, never b (answered, no longer listed).
        assertTrue(t.transition(1, PageTable.FETCHING, PageTable.RESIDENT));
        assertEquals(2, t.complete(1, true));
        assertEquals(1, a.calls.get());
        assertEquals(1, late.calls.get());
        assertEquals(0, b.calls.get());
        assertEquals(null, t.takeWaiters(1), "a completed page's list is closed: nothing to take");
        assertEquals(null, t.takeWaiters(0), "a page nobody waits for has no waiters");
    }

    @Test
    void shouldReopenAfterAFailedFetchAndAskALateParkerToStartTheNextOne() {
        final PageTable t = new PageTable(1);
        assertTrue(t.transition(0, PageTable.ABSENT, PageTable.FETCHING));
        final Counting a = new Counting();
        assertEquals(PageTable.PARKED, t.park(0, a));
        assertTrue(t.transition(0, PageTable.FETCHING, PageTable.ABSENT));
        assertEquals(1, t.complete(0, false));
        assertFalse(a.lastOk);
        final Counting late = new Counting();
        assertEquals(PageTable.PARKED_START_FETCH, t.park(0, late));
        assertTrue(t.transition(0, PageTable.ABSENT, PageTable.FETCHING));
        assertTrue(t.transition(0, PageTable.FETCHING, PageTable.RESIDENT));
        assertEquals(1, t.complete(0, true));
        assertEquals(1, late.calls.get());
    }

    @Test
    void shouldNeverStrandAWaiterWhenParkingRacesCompletion() throws Exception {
        final int pages = 20_000;
        final PageTable t = new PageTable(pages);
        final Counting[] w = new Counting[pages];
        final AtomicInteger notPending = new AtomicInteger();
        for (int i = 0; i < pages; i++) {
            w[i] = new Counting();
            t.transition(i, PageTable.ABSENT, PageTable.FETCHING);
        }
        final CountDownLatch start = new CountDownLatch(1);
        final Thread completer = new Thread(() -> {
            await(start);
            for (int i = 0; i < pages; i++) {
                t.transition(i, PageTable.FETCHING, PageTable.RESIDENT);
                t.complete(i, true);
            }
        });
        completer.start();
        start.countDown();
        for (int i = 0; i < pages; i++) {
            if (t.park(i, w[i]) == PageTable.NOT_PENDING) {
                assertTrue(t.readable(i));
                notPending.incrementAndGet();
            }
        }
        completer.join(TimeUnit.SECONDS.toMillis(30));
        for (int i = 0; i < pages; i++) {
            final int calls = w[i].calls.get();
            // Either it saw the page ready, or it was parked and woken: exactly one of the two, for every page.
            assertTrue(calls == 1 || calls == 0 && t.readable(i), "page " + i + " waiter called " + calls + " times");
        }
        assertEquals(pages, notPending.get() + countCalled(w));
    }

    private static int countCalled(final Counting[] w) {
        int n = 0;
        for (final Counting c : w) {
            n += c.calls.get();
        }
        return n;
    }

    private static void await(final CountDownLatch l) {
        try {
            l.await();
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
