package io.lazyblk.pull.sched;

import io.lazyblk.pagemap.PageGeometry;
import io.lazyblk.pagemap.PageSource;
import org.agrona.concurrent.ManyToManyConcurrentArrayQueue;
import org.agrona.concurrent.ManyToOneConcurrentArrayQueue;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.foreign.MemorySegment;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The transport-independent half of a {@link PageSource}: admission of fetches from any thread without blocking or
 * allocating (preallocated slots, lock-free queues), demand-before-background ordering, the window of requests in
 * flight on the wire, request ids, and exactly-once completion. A transport (TCP, RDMA) owns one and drives it from
 * its single transport thread: {@link #next()} to issue, {@link #issued(long)} and {@link #complete} when answers
 * come, {@link #failAll} when the link drops.
 *
 * <p>Thread-safety: {@link #submit}, {@link #inFlight}, {@link #isUp} from any thread; {@link #close()} and
 * {@link #down()} from any thread; everything else only on the transport thread, or on a thread the transport lets
 * act in its stead while it excludes itself (a submitter issuing, {@link #nextFromSubmitter}; a poller completing,
 * {@code PageSource.poll()}).
 */
public final class FetchScheduler {
    private static final Logger LOG = LoggerFactory.getLogger(FetchScheduler.class);
    private static final long LOG_INTERVAL_NANOS = 1_000_000_000L;

    private static final int DOWN = 0;
    private static final int UP = 1;
    private static final int CLOSED = 2;

    private final PageGeometry geometry;
    private final int maxPagesPerFetch;
    private final Fetch[] slots;
    private final int slotMask;
    private final int slotBits;
    private final ManyToManyConcurrentArrayQueue<Fetch> free;
    private final ManyToOneConcurrentArrayQueue<Fetch> demand;
    private final ManyToOneConcurrentArrayQueue<Fetch> background;
    private final int maxIssued;
    private final int maxIssuedBytes;
    private final int backgroundIssued;
    private final int backgroundIssuedBytes;
    private final java.util.function.IntConsumer wake;
    private final AtomicInteger state = new AtomicInteger(DOWN);
    /** Threads inside {@link #submit} past its state check; {@link #down()} waits for them to leave. */
    private final AtomicInteger submitters = new AtomicInteger();
    private volatile Thread transportThread;

    private int issued;
    private long issuedBytes;
    private long sequence;
    private long listenerErrors;
    private long lastErrorLog;

    /**
     * @param maxFetches fetches accepted and not yet completed (a power of two); {@link #submit} refuses beyond
     * @param maxIssued requests on the wire at once: a demand fetch waits behind at most this many
     * @param maxIssuedBytes bytes on the wire at once (a single larger fetch may still go alone)
     * @param wake called with the fetch's priority after a submit published it, to wake the transport thread if it
     *             sleeps (or, for a demand fetch, to put it on the wire from the submitting thread)
     */
    public FetchScheduler(final PageGeometry geometry, final int maxPagesPerFetch, final int maxFetches, final int maxIssued,
                          final int maxIssuedBytes, final java.util.function.IntConsumer wake) {
        if (Integer.bitCount(maxFetches) != 1 || maxFetches < 2) {
            throw new IllegalArgumentException("maxFetches " + maxFetches + " must be a power of two, at least 2");
        }
        if (maxIssued < 1 || maxIssuedBytes < 1) {
            throw new IllegalArgumentException("window of " + maxIssued + " requests and " + maxIssuedBytes + " bytes");
        }
        this.geometry = geometry;
        this.maxPagesPerFetch = maxPagesPerFetch;
        this.slots = new Fetch[maxFetches];
        this.slotMask = maxFetches - 1;
        this.slotBits = Integer.numberOfTrailingZeros(maxFetches);
        this.free = new ManyToManyConcurrentArrayQueue<>(maxFetches);
        this.demand = new ManyToOneConcurrentArrayQueue<>(maxFetches);
        this.background = new ManyToOneConcurrentArrayQueue<>(maxFetches);
        for (int i = 0; i < maxFetches; i++) {
            slots[i] = new Fetch(i);
            free.offer(slots[i]);
        }
        this.maxIssued = maxIssued;
        this.maxIssuedBytes = maxIssuedBytes;
        // Background fetches leave a quarter of the window free, so a demand fetch goes on the wire at once and
        // waits behind at most three quarters of a window of background bytes.
        this.backgroundIssued = Math.max(1, maxIssued - Math.max(1, maxIssued / 4));
        this.backgroundIssuedBytes = Math.max(1, maxIssuedBytes - maxIssuedBytes / 4);
        this.wake = wake;
    }

    public PageGeometry geometry() {
        return geometry;
    }

    public int maxPagesPerFetch() {
        return maxPagesPerFetch;
    }

    /** Names the transport thread: a destination must be accessible from it. Call before the first {@link #up()}. */
    public void transportThread(final Thread t) {
        transportThread = t;
    }

    /**
     * {@link PageSource#fetch}: any thread, never blocks. Returns false if the source is down or closed or every slot
     * is taken. A range outside the image (or longer than {@link #maxPagesPerFetch}) is accepted and completes
     * {@link PageSource#FAILED}; a destination too small, read-only or confined to another thread is a caller bug
     * and throws.
     */
    public boolean submit(final int firstPage, final int count, final MemorySegment dst, final int priority, final long tag,
                          final PageSource.Listener listener) {
        if (priority != PageSource.DEMAND && priority != PageSource.BACKGROUND) {
            throw new IllegalArgumentException("priority " + priority + " is neither DEMAND nor BACKGROUND");
        }
        if (listener == null) {
            throw new NullPointerException("listener");
        }
        final boolean valid = firstPage >= 0 && count >= 1 && count <= maxPagesPerFetch
            && (long) firstPage + count <= geometry.pageCount();
        final int bytes = valid ? rangeBytes(firstPage, count) : 0;
        if (valid) {
            if (dst.byteSize() < bytes || dst.isReadOnly()) {
                throw new IllegalArgumentException("destination of " + dst.byteSize() + " bytes" + (dst.isReadOnly() ? " (read-only)" : "")
                    + " for pages [" + firstPage + ", " + (firstPage + count) + "), " + bytes + " bytes");
            }
            final Thread t = transportThread;
            if (t != null && !dst.isAccessibleBy(t)) {
                throw new IllegalArgumentException("destination confined to another thread: use a shared, global or auto arena");
            }
        }
        if (state.get() != UP) {
            return false;
        }
        submitters.incrementAndGet();
        try {
            // Re-checked after announcing ourselves: down() sets the state, then waits for submitters to reach 0, so
            // either it sees us and waits, or we see its state here (both are volatile: sequentially consistent).
            if (state.get() != UP) {
                return false;
            }
            final Fetch f = free.poll();
            if (f == null) {
                return false;
            }
            f.firstPage = firstPage;
            f.count = count;
            f.priority = priority;
            f.tag = tag;
            f.bytes = bytes;
            f.valid = valid;
            f.dst = valid && dst.byteSize() != bytes ? dst.asSlice(0, bytes) : dst;
            f.listener = listener;
            f.state = Fetch.QUEUED;
            // The queue's offer publishes the fields above (ordered store) to the transport thread's poll (acquire).
            // It cannot fail: there are no more slots than queue capacity.
            (priority == PageSource.DEMAND ? demand : background).offer(f);
            // Inside the gate: once close() has waited for submitters, nobody wakes a transport that may be gone.
            wake.accept(priority);
            return true;
        } finally {
            submitters.decrementAndGet();
        }
    }

    /** Accepted fetches not yet completed. */
    public int inFlight() {
        return slots.length - free.size();
    }

    /** True while the transport is connected and the source open: {@link #submit} may accept. */
    public boolean isUp() {
        return state.get() == UP;
    }

    /** The transport connected: start accepting (unless closed). */
    public void up() {
        state.compareAndSet(DOWN, UP);
    }

    /**
     * Stops accepting and waits until no submitter is between its state check and its publish, so after this
     * returns nothing new reaches the queues and {@link #failAll} leaves them empty. Any thread; returns at once if
     * already down.
     */
    public void down() {
        state.compareAndSet(UP, DOWN);
        awaitSubmitters();
    }

    /** Stops accepting for good (see {@link #down()}). */
    public void close() {
        state.set(CLOSED);
        awaitSubmitters();
    }

    public boolean isClosed() {
        return state.get() == CLOSED;
    }

    private void awaitSubmitters() {
        // A submitter holds this for the few hundred ns of a slot poll and a queue offer; yield in case it was preempted.
        while (submitters.get() != 0) {
            Thread.yield();
        }
    }

    /**
     * Transport thread: the next fetch to put on the wire, demand first, if the window allows; null if none. Marks it
     * issued and gives it an id. Fetches for ranges outside the image complete {@link PageSource#FAILED} here.
     */
    public Fetch next() {
        return next(true);
    }

    /**
     * {@link #next()} for a thread the transport lets issue in its stead (it must exclude the transport thread meanwhile,
     * and hand over with a happens-before): the same, except that a fetch for a range outside the image stops it
     * (null) instead of completing there, so completions stay on the transport thread.
     */
    public Fetch nextFromSubmitter() {
        return next(false);
    }

    private Fetch next(final boolean mayComplete) {
        while (true) {
            Fetch f = demand.peek();
            final boolean isDemand = f != null;
            if (f == null) {
                f = background.peek();
                if (f == null) {
                    return null;
                }
            }
            if (!f.valid) {
                if (!mayComplete) {
                    return null;
                }
                (isDemand ? demand : background).poll();
                complete(f, PageSource.FAILED);
                continue;
            }
            if (!fits(f, isDemand)) {
                return null;
            }
            (isDemand ? demand : background).poll();
            f.state = Fetch.ISSUED;
            f.id = (++sequence << slotBits) | f.index;
            issued++;
            issuedBytes += f.bytes;
            return f;
        }
    }

    /** True if {@link #next()} would return something or complete something now: the transport should not sleep. */
    public boolean hasWork() {
        final Fetch d = demand.peek();
        if (d != null) {
            return fits(d, true);
        }
        final Fetch b = background.peek();
        return b != null && fits(b, false);
    }

    /** Whether {@code f} may go on the wire now: within its priority's share of the window (or to be failed at once). */
    private boolean fits(final Fetch f, final boolean isDemand) {
        if (!f.valid) {
            return true;
        }
        final int maxN = isDemand ? maxIssued : backgroundIssued;
        final long maxB = isDemand ? maxIssuedBytes : backgroundIssuedBytes;
        return issued < maxN && (issued == 0 || issuedBytes + f.bytes <= maxB);
    }

    /** Queued (not yet issued) fetches: a cheap emptiness test for the transport's sleep decision. */
    public boolean hasQueued() {
        return !demand.isEmpty() || !background.isEmpty();
    }

    /** Transport thread: the issued fetch with request id {@code id}, or null if there is none (a protocol error). */
    public Fetch issued(final long id) {
        final Fetch f = slots[(int) (id & slotMask)];
        return f.state == Fetch.ISSUED && f.id == id ? f : null;
    }

    /** Requests on the wire now. */
    public int issuedCount() {
        return issued;
    }

    /**
     * Transport thread: completes {@code f} with {@code status}. The slot goes back to the pool before the listener
     * runs, so the listener may submit again at once; it is called exactly once, and what it throws is logged.
     */
    public void complete(final Fetch f, final int status) {
        if (f.state == Fetch.ISSUED) {
            issued--;
            issuedBytes -= f.bytes;
        }
        final PageSource.Listener listener = f.listener;
        final long tag = f.tag;
        final int first = f.firstPage;
        final int count = f.count;
        f.state = Fetch.FREE;
        f.dst = null;
        f.listener = null;
        free.offer(f); // ordered store: our writes to the slot happen before a submitter's poll takes it
        try {
            listener.onFetched(tag, first, count, status);
        } catch (final Throwable e) {
            if (e instanceof VirtualMachineError fatal) {
                throw fatal;
            }
            listenerErrors++;
            final long now = System.nanoTime();
            if (now - lastErrorLog > LOG_INTERVAL_NANOS) {
                lastErrorLog = now;
                LOG.error("fetch listener threw ({} times so far); the transport carries on", listenerErrors, e);
            }
        }
    }

    /** Transport thread, after {@link #down()} or {@link #close()}: completes every issued and queued fetch with {@code status}. */
    public void failAll(final int status) {
        for (final Fetch f : slots) {
            if (f.state == Fetch.ISSUED) {
                complete(f, status);
            }
        }
        Fetch f;
        while ((f = demand.poll()) != null) {
            complete(f, status);
        }
        while ((f = background.poll()) != null) {
            complete(f, status);
        }
        issued = 0;
        issuedBytes = 0;
    }

    private int rangeBytes(final int first, final int count) {
        return (int) (Math.min(geometry.pageStart(first) + (long) count * geometry.pageSize(), geometry.imageSize()) - geometry.pageStart(first));
    }
}
