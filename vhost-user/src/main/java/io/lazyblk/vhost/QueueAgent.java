package io.lazyblk.vhost;

import io.lazyblk.vhost.device.QueueHandler;
import io.lazyblk.vhost.ring.SplitVirtqueue;
import io.lazyblk.sys.EventFd;
import io.lazyblk.sys.LibC;
import io.lazyblk.sys.NativeException;
import org.agrona.concurrent.Agent;
import org.agrona.concurrent.IdleStrategy;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.VarHandle;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

/**
 * Runs one started virtqueue: pops its avail ring and publishes completions in its used ring (which its handler
 * may lease to a thread that answers a request itself). Polls the ring for a while after the last work (longer while
 * requests are in flight: {@link #IN_FLIGHT_SPIN_NANOS}), then re-enables guest notifications and sleeps in
 * {@code poll(2)} on the kick eventfd and its own wake eventfd (which other threads signal through {@link #wake()}
 * when they hand it completions).
 */
public final class QueueAgent implements Agent {
    private static final Logger LOG = LoggerFactory.getLogger(QueueAgent.class);
    /**
     * While requests are in flight, poll at least this long after the last work (unless polling is off): an awake
     * agent lets the handler read their answers itself ({@link QueueHandler#doWork}; a page fetched over the network
     * takes ~0.05-0.3 ms on a LAN), and it sees the guest's next request, which follows right after, without a
     * wake-up. Polling longer alone did not shorten a loopback miss here; reading the answers on this thread did.
     */
    static final long IN_FLIGHT_SPIN_NANOS = 500_000;
    /**
     * A yield that comes back after more than this handed the core to a thread that wanted it for longer than a whole
     * poll: the host is oversubscribed (busy front ends, other engines, the guest's vCPUs), and polling on only takes
     * the core from whoever must run for our next request to come. The queue then sleeps on its kick eventfd at once,
     * and a kick wakes it with the scheduler's preference for a thread that slept. Uncontended, a yield returns in
     * ~1 us; a context switch to a short-lived thread and back takes a few; a busy thread keeps the core for its
     * whole time slice (0.75-3 ms).
     */
    static final long DESCHEDULED_NANOS = 50_000;
    /**
     * After a late yield the queue does not poll at all for this long (it sleeps as soon as it has nothing to do), then
     * tries one poll again: polling on a contended core costs a whole time slice of someone else's before the queue
     * notices, so it is tried again at most ten times a second (a few percent of a busy queue's time).
     */
    static final long NO_POLL_AFTER_DESCHEDULED_NANOS = 100_000_000;
    /**
     * Late yields in a row before the queue stops polling: one can be a kernel thread or a timer that ran once; two in a
     * row (with no on-time yield between) is a core that others keep wanting.
     */
    static final int LATE_YIELDS_TO_STOP_POLLING = 2;
    /** Sleep at most this long in poll(2): bounds how late a lost wake-up could be noticed. */
    private static final int SLEEP_MILLIS = 100;
    /** How long {@link #onClose()} waits for in-flight requests to finish before giving up on them. */
    private static final long DRAIN_NANOS = 30_000_000_000L;
    /** How long stopping a queue waits for its agent before it logs that it still waits: the drain, and some. */
    public static final int CLOSE_WAIT_MILLIS = (int) (DRAIN_NANOS / 1_000_000) + 5_000;

    private final SplitVirtqueue queue;
    private final QueueHandler handler;
    private final int kickFd;
    private final int errFd;
    private final int wakeFd;
    private final long spinNanos;
    private final MemorySegment pollFds;
    private final Arena arena = Arena.ofShared();
    /** Written by the agent around its sleep, read by wakers; the volatile pair forms the sleep/wake handshake. */
    private volatile boolean sleeping;
    private boolean reportedBroken;
    /** Guest memory faulted under us (the front end shrank a region's file): the queue never touches it again. */
    private boolean faulted;
    /** Set once the handler and our fds are released, by the agent's thread or, after it ended, the connection's. */
    private boolean released;
    private long idleSince;
    /** Late yields in a row (see {@link #DESCHEDULED_NANOS}); an on-time one resets it. */
    private int lateYields;
    /** Until when the queue sleeps without polling, after it was last descheduled while polling (0: poll). */
    private long noPollUntil;
    /** Set by {@link #interruptSleep()}: the agent no longer sleeps in poll(2), its runner is about to stop it. */
    private volatile boolean stopping;
    /** How long {@link #drain()} waits; lowered by {@link #limitDrain} before a stop. */
    private volatile long drainNanos = DRAIN_NANOS;

    /**
     * @param kickFd the guest's kick eventfd (owned by the connection, non-blocking), or -1 to poll the ring without one
     * @param errFd the front end's error eventfd (owned by the connection, non-blocking), signalled when the queue
     *     breaks; -1 for none
     * @param spinNanos how long to poll the ring after the last work before sleeping
     */
    public QueueAgent(final SplitVirtqueue queue, final java.util.function.Function<Runnable, QueueHandler> handlerFactory,
                      final int kickFd, final int errFd, final long spinNanos) throws NativeException {
        this.queue = queue;
        this.kickFd = kickFd;
        this.errFd = errFd;
        this.spinNanos = spinNanos;
        this.wakeFd = LibC.eventfd(LibC.EFD_NONBLOCK);
        this.pollFds = arena.allocate(16, 8);
        this.handler = handlerFactory.apply(this::wake);
    }

    /** Wakes the agent if it sleeps; any thread. Called after the caller published work for the agent. */
    public void wake() {
        // Volatile read after the caller's publishing write (a CAS or release in its queue): if we read false,
        // the agent's re-check of hasCompletions() after setting sleeping=true will see the work.
        if (sleeping) {
            EventFd.signal(wakeFd);
        }
    }

    /**
     * Lets the coming stop wait at most {@code nanos} for the requests in flight (any thread, before the stop): for a
     * queue whose requests the in-flight region tracks, what is left is run again by the next engine.
     */
    public void limitDrain(final long nanos) {
        drainNanos = Math.min(drainNanos, nanos); // volatile: read by the agent's thread in drain() after the stop
    }

    /**
     * The agent is about to be stopped (its runner closed): from now on it does not go to sleep, and it is woken if it
     * sleeps. Waking it alone was not enough: it could wake, find nothing to do and sleep again (up to
     * {@link #SLEEP_MILLIS}) before the runner's stop flag was set, so each stop, and so a migration's switchover, could
     * take 100 ms more.
     */
    public void interruptSleep() {
        stopping = true; // volatile: read by the agent's idle strategy before it sleeps, after this store
        EventFd.signal(wakeFd);
    }

    @Override
    public int doWork() throws Exception {
        if (broken()) {
            if (!reportedBroken) {
                reportedBroken = true;
                LOG.warn("queue {}: the driver's avail index is corrupt; the queue is stopped until the device is reset", queue.index);
                signalError();
            }
            return 0;
        }
        try {
            return handler.doWork();
        } catch (final InternalError e) {
            onMemoryFault(e);
            return 0;
        }
    }

    private boolean broken() {
        return faulted || queue.isBroken();
    }

    /**
     * The JVM turns a SIGBUS on a guest memory access into this {@link InternalError} (HotSpot: "a fault occurred in an
     * unsafe memory access operation"): the front end shrank the file behind a memory region after handing it over
     * (QEMU seals its memfds against that unless told {@code seal=off}; a plain file on tmpfs or hugetlbfs cannot be
     * sealed). Nothing the queue holds can be trusted to be mapped any more: it stops touching guest memory, abandons
     * what it had taken, and waits to be stopped. Any other InternalError is not ours to swallow.
     */
    private void onMemoryFault(final InternalError e) {
        if (e.getMessage() == null || !e.getMessage().contains("unsafe memory access")) {
            throw e;
        }
        faulted = true;
        reportedBroken = true;
        LOG.warn("queue {}: guest memory faulted under the queue ({}): the front end shrank the file behind a memory region it"
            + " handed over; the queue is stopped until the front end sets it up again (with QEMU, use memory-backend-memfd with"
            + " seal=on, its default)", queue.index, e.getMessage());
        signalError();
    }

    /** Tells the front end the queue broke (vhost-user's error eventfd; QEMU logs "vhost vring error"). */
    private void signalError() {
        if (errFd >= 0) {
            EventFd.signal(errFd);
        }
    }

    @Override
    public void onClose() {
        try {
            if (!faulted) {
                drain();
            }
        } catch (final Exception e) {
            LOG.warn("queue {}: failed while finishing in-flight requests at stop: {}", queue.index, e.toString());
        } catch (final InternalError e) {
            try {
                onMemoryFault(e);
            } finally {
                release();
            }
            return;
        }
        release();
    }

    /** Closes the handler and this agent's own fd and memory, whatever happened to the queue; once. */
    private void release() {
        if (released) {
            return;
        }
        released = true;
        try {
            handler.close();
        } finally {
            LibC.close(wakeFd);
            arena.close();
        }
    }

    /**
     * Called by the connection once this agent's thread has ended (its runner closed): releases what
     * {@link #onClose()} would have. Agrona's AgentRunner does not call onClose when the work loop ends with an
     * Error (it rethrows it after the error handler), and the thread then dies with the handler, the wake eventfd
     * and the handler's I/O threads still held; this is the safety net for an Error we do not expect.
     */
    public void releaseAfterStop() {
        release(); // the runner joined the agent's thread before returning: its writes to `released` are visible
    }

    /** Finishes what the handler has taken, without taking anything new (see {@link QueueHandler#finishInFlight}). */
    private void drain() throws Exception {
        final long budget = drainNanos;
        final long deadline = System.nanoTime() + budget;
        while (handler.inFlight() > 0 && System.nanoTime() < deadline) {
            if (handler.finishInFlight() == 0) {
                sleepOn(-1, 10);
            }
        }
        if (handler.inFlight() > 0) {
            if (budget < DRAIN_NANOS) {
                LOG.info("queue {}: {} requests still in flight at stop are left to the next engine (the in-flight region"
                    + " tracks them)", queue.index, handler.inFlight());
            } else {
                LOG.warn("queue {}: {} requests still in flight after {} s at stop; they are abandoned", queue.index,
                    handler.inFlight(), budget / 1_000_000_000L);
            }
        }
    }

    @Override
    public String roleName() {
        return "vq-" + queue.index;
    }

    /** The idle strategy that belongs to this agent: spin, then sleep on the kick and wake eventfds. */
    public IdleStrategy idleStrategy() {
        return new IdleStrategy() {
            @Override
            public void idle(final int workCount) {
                if (workCount > 0) {
                    idleSince = 0;
                    return;
                }
                idle();
            }

            @Override
            public void idle() {
                if (stopping) {
                    Thread.yield(); // the runner's stop flag comes next; do not sleep past it
                    return;
                }
                final long now = System.nanoTime();
                if (idleSince == 0) {
                    idleSince = now;
                }
                final long spin = spinNanos > 0 && handler.inFlight() > 0 ? Math.max(spinNanos, IN_FLIGHT_SPIN_NANOS) : spinNanos;
                if (now - idleSince < spin && (noPollUntil == 0 || now - noPollUntil >= 0)) {
                    // Yield, not onSpinWait: on a 2-core host a polling queue shares a core with other threads
                    // (dedicated I/O agents, the front end); spinning in place cost ~25 us per request there.
                    Thread.yield();
                    final long back = System.nanoTime();
                    if (back - now <= DESCHEDULED_NANOS) {
                        lateYields = 0;
                    } else if (++lateYields >= LATE_YIELDS_TO_STOP_POLLING) {
                        lateYields = 0;
                        noPollUntil = back + NO_POLL_AFTER_DESCHEDULED_NANOS; // others keep needing this core
                    }
                    return;
                }
                prepareAndSleep();
                idleSince = 0;
            }

            @Override
            public void reset() {
                idleSince = 0;
            }
        };
    }

    private void prepareAndSleep() {
        if (broken()) {
            sleepOn(-1, SLEEP_MILLIS);
            return;
        }
        try {
            if (queue.enableNotifications()) {
                queue.disableNotifications();
                return;
            }
            sleeping = true;
            // Full fence: the sleeping=true store must be visible before we look for completions, pairing with the
            // waker's publish-then-read-sleeping in wake(); one of the two sides always sees the other.
            VarHandle.fullFence();
            if (handler.hasCompletions()) {
                sleeping = false;
                queue.disableNotifications();
                return;
            }
            sleepOn(kickFd, kickFd >= 0 ? SLEEP_MILLIS : 1);
            sleeping = false;
            queue.disableNotifications();
        } catch (final InternalError e) {
            sleeping = false;
            onMemoryFault(e); // the notification flags live in the used ring, in guest memory
        }
    }

    private void sleepOn(final int kick, final int timeoutMillis) {
        pollFds.set(JAVA_INT, 0, wakeFd);
        pollFds.set(JAVA_SHORT, 4, LibC.POLLIN);
        pollFds.set(JAVA_SHORT, 6, (short) 0);
        pollFds.set(JAVA_INT, 8, kick);
        pollFds.set(JAVA_SHORT, 12, LibC.POLLIN);
        pollFds.set(JAVA_SHORT, 14, (short) 0);
        final int n = LibC.rawPoll(pollFds, kick >= 0 ? 2 : 1, timeoutMillis);
        if (n > 0) {
            if ((pollFds.get(JAVA_SHORT, 6) & LibC.POLLIN) != 0) {
                EventFd.drain(wakeFd);
            }
            if (kick >= 0 && (pollFds.get(JAVA_SHORT, 14) & LibC.POLLIN) != 0) {
                // The connection made the kick fd non-blocking: the front end may read it too and take the count
                // between our poll and this read, which then returns EAGAIN instead of blocking this thread.
                EventFd.drain(kick);
            }
        }
    }
}
