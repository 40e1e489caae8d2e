package io.lazyblk.blk;

import com.lmax.disruptor.BusySpinWaitStrategy;
import com.lmax.disruptor.RingBuffer;
import io.lazyblk.vhost.device.QueueHandler;
import io.lazyblk.vhost.ring.SplitVirtqueue;
import org.agrona.ErrorHandler;
import org.agrona.concurrent.AgentRunner;
import org.agrona.concurrent.IdleStrategy;
import org.agrona.concurrent.ManyToOneConcurrentArrayQueue;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.foreign.Arena;
import java.lang.invoke.VarHandle;
import java.util.concurrent.locks.LockSupport;

/**
 * One virtqueue's request pipeline. On the queue agent's thread it pops chains, parses them into preallocated
 * {@link BlkRequest}s and publishes those needing I/O on a Disruptor ring; {@link BlkIoAgent}s execute them and
 * hand them back through a many-to-one queue; the queue agent then writes the used ring. A read answered by the
 * thread that fetched its page is published by that thread, under a lease on the used side ({@link #complete}).
 * Requests refused by the parser complete at once without the ring.
 *
 * <p>Threading mode: with {@code ioThreads == 0} one I/O agent runs inline in this handler's {@code doWork}, on
 * the queue agent's thread: a request is parsed, executed and completed in one pass with no thread hand-off
 * (measured: 2-core machines lose ~25 µs per request to hand-offs). With {@code ioThreads > 0} that many I/O
 * agents run on dedicated threads, for backends whose calls block long enough to be worth overlapping.
 */
final class BlkQueueHandler implements QueueHandler {
    private static final Logger LOG = LoggerFactory.getLogger(BlkQueueHandler.class);
    /** Chains taken per doWork: bounds the time before completions are published under a flood. */
    private static final int POP_BATCH = 64;
    /**
     * Idle this long before doing deferred work (writing answered misses to the local file): a guest polling at QD1
     * sends its next request within a few µs of a completion, and a 64 KiB local write (~12 µs) started just before
     * it would delay that request by as much (measured on 2 cores).
     */
    private static final long IDLE_BEFORE_DEFERRED_NANOS = 20_000;

    final ManyToOneConcurrentArrayQueue<BlkRequest> completions;
    /** Requests another thread completed and published itself ({@link #complete}): back to the free list. */
    private final ManyToOneConcurrentArrayQueue<BlkRequest> recycled;
    /**
     * Lease on the used side of the ring ({@link SplitVirtqueue#pushUsed}, {@link SplitVirtqueue#publishUsed}): 1
     * while a thread pushes and publishes. The queue agent takes it to publish its completions; a thread answering a
     * parked read from a fetched page ({@link #complete}) takes it to publish that answer itself, so the answer does
     * not wait for the agent to wake (8–11 µs on 2 cores). The CAS that takes it is an acquire and the store that
     * returns it a release, so each holder sees the ring's used-side state as the previous holder left it.
     */
    private final java.util.concurrent.atomic.AtomicInteger usedLease = new java.util.concurrent.atomic.AtomicInteger();
    final Runnable waker;
    private final SplitVirtqueue queue;
    private final BlkDeviceConfig cfg;
    private final BlkRequest[] free;
    private int freeCount;
    private int inFlight;
    /** Set when the queue closes: other threads no longer touch its requests ({@link #enter()}). */
    private volatile boolean closed;
    /** Threads between {@link #enter()} and {@link #exit()}. */
    private final java.util.concurrent.atomic.AtomicInteger outsiders = new java.util.concurrent.atomic.AtomicInteger();
    /** When the inline agent's run of passes with nothing to do began, or 0 while there is work. */
    private long idleSince;
    private final Arena arena = Arena.ofShared();
    private final RingBuffer<RequestSlot> ring;
    private final BlkIoAgent inline;
    private final BlkIoAgent[] dedicated;
    private final AgentRunner[] runners;
    private final BlockBackend backend;

    private final QueueStats stats;
    private final Runnable onClose;

    BlkQueueHandler(final SplitVirtqueue queue, final Runnable waker, final BlkDeviceConfig cfg,
                    final BlockBackend backend, final int ioThreads) {
        this(queue, waker, cfg, backend, ioThreads, new QueueStats(), () -> { });
    }

    /**
     * @param stats what this queue answered, for the metrics (written under the used lease)
     * @param onClose runs once the handler closed (the device folds the queue's stats into its totals)
     */
    BlkQueueHandler(final SplitVirtqueue queue, final Runnable waker, final BlkDeviceConfig cfg,
                    final BlockBackend backend, final int ioThreads, final QueueStats stats, final Runnable onClose) {
        this.stats = stats;
        this.onClose = onClose;
        this.queue = queue;
        this.waker = waker;
        this.cfg = cfg;
        this.backend = backend;
        final int depth = queue.size();
        this.completions = new ManyToOneConcurrentArrayQueue<>(depth);
        this.recycled = new ManyToOneConcurrentArrayQueue<>(depth);
        this.free = new BlkRequest[depth];
        for (int i = 0; i < depth; i++) {
            free[i] = new BlkRequest(this, BlkDeviceConfig.SEG_MAX + 2, arena);
        }
        this.freeCount = depth;
        // At most `depth` requests are in flight, so a ring of 2x never makes the agent wait for a slot. Pollers
        // never block in the wait strategy; BusySpin's signal is a no-op, so publishing takes no lock.
        this.ring = RingBuffer.createSingleProducer(RequestSlot::new, Integer.highestOneBit(depth) * 2, new BusySpinWaitStrategy());
        if (ioThreads == 0) {
            inline = new BlkIoAgent(ring, backend, cfg, 0, 1, false, "blk-io-q" + queue.index, arena);
            dedicated = new BlkIoAgent[0];
            runners = new AgentRunner[0];
        } else {
            inline = null;
            dedicated = new BlkIoAgent[ioThreads];
            runners = new AgentRunner[ioThreads];
            final ErrorHandler onError = t -> LOG.error("I/O agent of queue " + queue.index + " failed", t);
            for (int i = 0; i < ioThreads; i++) {
                dedicated[i] = new BlkIoAgent(ring, backend, cfg, i, ioThreads, true, "blk-io-q" + queue.index + "-" + i, arena);
                runners[i] = new AgentRunner(new ParkingIdle(dedicated[i]), onError, null, dedicated[i]);
                AgentRunner.startOnThread(runners[i]);
            }
        }
    }

    @Override
    public int doWork() throws Exception {
        return work(true);
    }

    @Override
    public int finishInFlight() throws Exception {
        return work(false);
    }

    /** One pass: completions, new chains taken if {@code take}, I/O, the sources' answers. */
    private int work(final boolean take) throws Exception {
        int work = drainCompletions();
        // A stopping queue does not even read the avail index: what it has not taken is left for the next start.
        final int pending = take ? Math.min(queue.pending(), POP_BATCH) : 0;
        int done = 0;
        int published = 0;
        final long takenNow = pending > 0 && cfg.timed ? System.nanoTime() : 0; // one reading per batch, if timed
        for (int i = 0; i < pending && freeCount > 0; i++) {
            final int head = queue.pop();
            final BlkRequest req = free[--freeCount];
            req.takenNanos = takenNow;
            final int err = queue.readChain(head, req.chain);
            if (req.parse(err, cfg)) {
                final long seq = ring.next();
                ring.get(seq).request = req;
                ring.publish(seq); // release: the parsed request is visible to the I/O agent that sees seq
                inFlight++;
                published++;
            } else {
                req.writeStatus();
                completions.offer(req); // capacity = depth >= requests in flight: never full
                inFlight++;
                done++;
            }
        }
        if (published > 0) {
            if (inline != null) {
                work += inline.doWork();
                work += drainCompletions();
            } else {
                wakeIoAgents();
            }
        }
        if (done > 0) {
            work += drainCompletions();
        }
        if (inFlight > 0) {
            // Requests wait on pages: read their fetches' answers here, on a thread that polls anyway, rather than
            // have the source's thread wake up for them. What this completes is published by complete() at once.
            work += backend.poll();
        }
        if (inline != null) {
            if (work + pending + published > 0 || inFlight > 0) {
                // Not idle while a request waits on a fetch either: this thread polls for its answer, and a deferred
                // merge here (hashing the rest of a page, ~35 us per 64 KiB, and writing it) would hold the answer up.
                idleSince = 0;
            } else if (idleSince == 0) {
                idleSince = System.nanoTime();
            } else if (System.nanoTime() - idleSince > IDLE_BEFORE_DEFERRED_NANOS) {
                backend.idle(); // nothing came for a while: the local writes answered misses left behind
            }
        }
        return work + pending;
    }

    private void wakeIoAgents() {
        // Full fence: the ring publish must be visible before we read `sleeping`; pairs with ParkingIdle's
        // sleeping=true, fence, re-check of the ring. One side always sees the other.
        VarHandle.fullFence();
        for (final BlkIoAgent a : dedicated) {
            if (a.sleeping) {
                LockSupport.unpark(a.thread);
            }
        }
    }

    private int drainCompletions() {
        BlkRequest req;
        int recycledNow = 0;
        // poll() is an acquire: the other thread published this request's answer before it offered it.
        while ((req = recycled.poll()) != null) {
            free[freeCount++] = req;
            recycledNow++;
        }
        inFlight -= recycledNow;
        if (completions.isEmpty() || !usedLease.compareAndSet(0, 1)) {
            // Another thread is publishing an answer (a few hundred ns): the completions stay queued, and
            // hasCompletions() keeps this agent from sleeping until it takes them on a later pass.
            return recycledNow;
        }
        int n = 0;
        final long now = cfg.timed ? System.nanoTime() : 0;
        // poll() is an acquire: everything the I/O agent wrote (status byte, guest data) is visible here.
        while ((req = completions.poll()) != null) {
            stats.answered(req, now); // under the used lease: the stats' one writer
            queue.logWrites(req.chain); // migrating: the pages its data and status went to are sent again
            queue.pushUsed(req.chain.head, req.usedLen);
            free[freeCount++] = req;
            n++;
        }
        if (n > 0) {
            inFlight -= n;
            queue.publishUsed();
        }
        usedLease.set(0); // volatile store, a release: the next holder sees nextUsed/publishedUsed as left here
        return n + recycledNow;
    }

    /**
     * A request completed by a thread other than the queue agent (status and data already written): publishes it in
     * the used ring from this thread when the used side is free, else hands it to the agent. Call between
     * {@link #enter()} and {@link #exit()}; the request must not be touched after this returns.
     */
    void complete(final BlkRequest req) {
        if (usedLease.compareAndSet(0, 1)) {
            stats.answered(req, cfg.timed ? System.nanoTime() : 0); // under the used lease: the stats' one writer
            queue.logWrites(req.chain);
            queue.pushUsed(req.chain.head, req.usedLen);
            queue.publishUsed(); // the release store of used->idx makes the data and status visible to the driver
            usedLease.set(0);
            recycled.offer(req); // capacity = queue depth >= requests in flight: never full
        } else {
            completions.offer(req); // CAS: publishes the data and status to the queue agent's poll()
        }
        // The agent, if it slept, should poll again: a guest waiting on this answer sends its next request soon
        // after, and a polling agent takes it without a kick; it also returns the request to the free list.
        waker.run();
    }

    /**
     * Another thread (one that completed a fetch) is about to touch a parked request of this queue and its guest
     * memory; false once the queue has closed. Paired with {@link #exit()}. A queue closes after draining its
     * requests, but one that gave up on a request parked too long (see QueueAgent's drain) may have its guest memory
     * unmapped right after: a late answer must not write there.
     */
    boolean enter() {
        outsiders.incrementAndGet();
        // Volatile increment, then volatile read; close() writes closed, then reads outsiders: one side sees the other.
        if (closed) {
            outsiders.decrementAndGet();
            return false;
        }
        return true;
    }

    void exit() {
        outsiders.decrementAndGet();
    }

    @Override
    public boolean hasCompletions() {
        return !completions.isEmpty();
    }

    @Override
    public int inFlight() {
        return inFlight;
    }


    @Override
    public void close() {
        closed = true;
        while (outsiders.get() != 0) {
            Thread.yield(); // an answer in progress: a copy of at most one request's data
        }
        for (final AgentRunner r : runners) {
            r.close();
        }
        arena.close();
        onClose.run();
    }

    /** A Disruptor ring entry: points at the request it carries. */
    static final class RequestSlot {
        BlkRequest request;
    }

    /**
     * Dedicated I/O agents: spin, then yield for 50 µs, then park until the producer unparks them (or 1 ms
     * passes, a safety net that bounds the cost of any lost wake-up).
     */
    private static final class ParkingIdle implements IdleStrategy {
        private static final int SPINS = 100;
        private static final long YIELD_NANOS = 50_000;
        private static final long PARK_NANOS = 1_000_000;
        private final BlkIoAgent agent;
        private int spins;
        private long idleSince;

        ParkingIdle(final BlkIoAgent agent) {
            this.agent = agent;
        }

        @Override
        public void idle(final int workCount) {
            if (workCount > 0) {
                reset();
            } else {
                idle();
            }
        }

        @Override
        public void idle() {
            if (spins < SPINS) {
                spins++;
                Thread.onSpinWait();
                return;
            }
            final long now = System.nanoTime();
            if (idleSince == 0) {
                idleSince = now;
            }
            if (now - idleSince < YIELD_NANOS) {
                Thread.yield();
                return;
            }
            agent.sleeping = true;
            // Full fence: sleeping=true is visible before we re-check the ring (pairs with wakeIoAgents): either
            // the producer sees us sleeping and unparks, or we see its publish here and do not park.
            VarHandle.fullFence();
            if (!agent.hasWork()) {
                LockSupport.parkNanos(PARK_NANOS);
            }
            agent.sleeping = false;
        }

        @Override
        public void reset() {
            spins = 0;
            idleSince = 0;
        }
    }
}
