package io.lazyblk.pull.onesided;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.sched.Fetch;
import io.lazyblk.pull.sched.FetchScheduler;
import org.agrona.concurrent.Agent;
import org.agrona.concurrent.AgentRunner;
import org.agrona.concurrent.IdleStrategy;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.foreign.MemorySegment;
import java.util.concurrent.locks.LockSupport;

/**
 * A {@link PageSource} over {@link OneSidedReads}: the transport thread takes fetches from a {@link FetchScheduler}
 * (demand first, a bounded window in flight), posts one read per fetch straight into its destination, and polls
 * for completions. The provider's CPU is not involved after the handshake that produced the reads. The same code
 * drives a shared mapping on this host and RDMA READs.
 *
 * <p>The transport thread polls while reads are outstanding (completions are what it waits for; a sleep/wake pair
 * would cost more than the read) and sleeps when there is nothing to do; a submit wakes it. Thread-safety: as
 * {@link PageSource}.
 *
 * <p>No boot profile ({@link PageSource#bootProfile()} stays empty): its reads are one-sided, so the provider never
 * sees them, learns nothing from them and is not asked; an engine whose chain also has a {@code tcp://} source gets
 * the profile from that one ({@code SourceChain} asks each source in turn).
 */
public final class OneSidedPageSource implements PageSource {
    private static final Logger LOG = LoggerFactory.getLogger(OneSidedPageSource.class);
    /** How long the transport polls after its last work before it sleeps. */
    private static final long IDLE_SPIN_NANOS = 50_000L;

    /**
     * @param maxFetches fetches accepted and not yet completed (a power of two)
     * @param maxIssued reads in flight at once
     * @param maxIssuedBytes bytes in flight at once
     * @param maxPagesPerFetch pages one fetch may carry
     */
    public record Options(int maxFetches, int maxIssued, int maxIssuedBytes, int maxPagesPerFetch) {
        /** 1024 fetches, 32 reads or 4 MiB in flight, 256 pages a fetch. */
        public static Options defaults() {
            return new Options(1024, 32, 4 << 20, 256);
        }
    }

    private final Manifest manifest;
    private final OneSidedReads reads;
    private final FetchScheduler scheduler;
    private final Transport transport;
    private final AgentRunner runner;
    private final Thread thread;
    private final String name;
    /** Demand fetches are copied on the caller's thread (see {@link #fetch}). */
    private final boolean inline;
    /** Callers inside an inline copy; {@link #close()} waits for them before the mapping goes. */
    private final java.util.concurrent.atomic.AtomicInteger inlineReaders = new java.util.concurrent.atomic.AtomicInteger();

    public OneSidedPageSource(final String name, final Manifest manifest, final OneSidedReads reads, final Options options) {
        this.name = name;
        this.manifest = manifest;
        this.reads = reads;
        this.inline = reads.synchronous();
        final Thread[] target = new Thread[1];
        this.scheduler = new FetchScheduler(manifest.geometry(), options.maxPagesPerFetch(), options.maxFetches(), options.maxIssued(),
            options.maxIssuedBytes(), priority -> {
                final Thread t = target[0];
                if (t != null) {
                    LockSupport.unpark(t);
                }
            });
        this.transport = new Transport();
        this.runner = new AgentRunner(transport.idle, t -> LOG.error("transport thread of {} failed; it carries on", name, t), null, transport);
        this.thread = Thread.ofPlatform().daemon().name("lazyblk-" + name).unstarted(runner);
        target[0] = thread;
        scheduler.transportThread(thread);
        scheduler.up();
        thread.start();
    }

    @Override
    public Manifest manifest() {
        return manifest;
    }

    /**
     * {@link PageSource#fetch}. For a {@link OneSidedReads#synchronous()} source, a demand fetch is copied on the caller's
     * thread and its listener called there, before this returns: a guest's miss costs the copy and nothing else.
     */
    @Override
    public boolean fetch(final int firstPage, final int count, final MemorySegment dst, final int priority, final long tag,
                         final Listener listener) {
        if (priority == DEMAND && inline && count >= 1 && count <= scheduler.maxPagesPerFetch() && firstPage >= 0
            && (long) firstPage + count <= manifest.pageCount()) {
            final long offset = manifest.geometry().pageStart(firstPage);
            final int bytes = (int) (Math.min(offset + (long) count * manifest.pageSize(), manifest.size()) - offset);
            if (dst.byteSize() < bytes || dst.isReadOnly() || !dst.isNative()) {
                throw new IllegalArgumentException("destination of " + dst.byteSize() + " bytes" + (dst.isNative() ? "" : " in the Java heap")
                    + " for " + bytes + " bytes: pass writable native memory of at least the fetch's size");
            }
            inlineReaders.incrementAndGet();
            final boolean ok;
            try {
                // Re-checked after announcing ourselves: close() sets the state, then waits for inline readers to leave
                // before it unmaps (both volatile), so a copy never runs against a closed mapping.
                if (!scheduler.isUp()) {
                    return false;
                }
                ok = reads.readNow(offset, dst, bytes);
            } finally {
                inlineReaders.decrementAndGet();
            }
            try {
                listener.onFetched(tag, firstPage, count, ok ? OK : FAILED); // outside the gate: the listener may close us
            } catch (final RuntimeException e) {
                // As on the transport thread: a listener's failure is logged, never the caller's (it was accepted).
                LOG.error("fetch listener of {} threw on a demand fetch of page {}", name, firstPage, e);
            }
            return true;
        }
        return scheduler.submit(firstPage, count, dst, priority, tag, listener);
    }

    @Override
    public int maxPagesPerFetch() {
        return scheduler.maxPagesPerFetch();
    }

    @Override
    public int inFlight() {
        return scheduler.inFlight();
    }

    @Override
    public boolean connected() {
        return scheduler.isUp();
    }

    /** Closes the source; every accepted fetch completes (UNAVAILABLE if not done) before this returns. */
    @Override
    public void close() {
        scheduler.close();
        while (inlineReaders.get() != 0) {
            Thread.onSpinWait(); // a copy of at most a few MiB is in progress on another thread
        }
        if (Thread.currentThread() != thread) {
            runner.close(); // the agent's onClose fails what is left and releases the reads
        } else {
            transport.closeRequested = true;
        }
    }

    /** The transport thread's loop: post what the window allows, reap what finished. */
    private final class Transport implements Agent, OneSidedReads.Completions {
        volatile boolean closeRequested;
        private boolean broken;
        final IdleStrategy idle = new IdleStrategy() {
            /** When the transport last had work; it polls for a while after that before it sleeps. */
            private long idleSince;

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
                final long now = System.nanoTime();
                if (idleSince == 0) {
                    idleSince = now;
                }
                if (reads.outstanding() > 0 || now - idleSince < IDLE_SPIN_NANOS) {
                    // A read is in flight (its completion is microseconds away), or work just stopped: a fill refills
                    // its window as completions come, so more is about to arrive. Parking now would cost a wake-up.
                    Thread.onSpinWait();
                    return;
                }
                // Nothing for a while: sleep until a submit unparks us (the 1 ms bound is a safety net, not the wake-up).
                if (!scheduler.hasWork()) {
                    LockSupport.parkNanos(1_000_000L);
                }
                idleSince = 0;
            }

            @Override
            public void reset() {
                idleSince = 0;
            }
        };

        @Override
        public int doWork() {
            if (closeRequested) {
                throw new org.agrona.concurrent.AgentTerminationException();
            }
            int work = reads.poll(this);
            if (!broken && !reads.healthy()) {
                broken = true;
                LOG.warn("{}: {} failed; fetches fail until the source is reopened", name, reads.describe());
                scheduler.down();
                scheduler.failAll(PageSource.UNAVAILABLE);
                pending = null; // failed with the rest
            }
            if (pending != null) {
                if (!post(pending)) {
                    return work; // the device queue is still full
                }
                pending = null;
                work++;
            }
            Fetch f;
            while ((f = scheduler.next()) != null) {
                if (!post(f)) {
                    pending = f; // stays issued; posted first after the next poll
                    break;
                }
                work++;
            }
            return work;
        }

        private boolean post(final Fetch f) {
            return reads.post(f.id(), manifest.geometry().pageStart(f.firstPage()), f.dst(), f.bytes());
        }

        /** An issued fetch the device had no room for. */
        private Fetch pending;

        @Override
        public void completed(final long id, final boolean ok) {
            final Fetch f = scheduler.issued(id);
            if (f != null) {
                scheduler.complete(f, ok ? PageSource.OK : PageSource.FAILED);
            }
        }

        @Override
        public void onClose() {
            scheduler.close();
            reads.close();
            scheduler.failAll(PageSource.UNAVAILABLE);
        }

        @Override
        public String roleName() {
            return "lazyblk-" + name;
        }
    }
}
