package io.lazyblk.blk;

import com.lmax.disruptor.EventHandler;
import com.lmax.disruptor.PhasedBackoffWaitStrategy;
import com.lmax.disruptor.RingBuffer;
import com.lmax.disruptor.dsl.Disruptor;
import com.lmax.disruptor.dsl.ProducerType;
import io.lazyblk.vhost.device.QueueHandler;
import io.lazyblk.vhost.ring.SplitVirtqueue;
import org.agrona.concurrent.ManyToOneConcurrentArrayQueue;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * One virtqueue's request pipeline. On the queue agent's thread it pops chains, parses them into preallocated
 * {@link BlkRequest}s and publishes those needing I/O on a Disruptor ring; the ring's I/O handlers execute them
 * and hand them back through a many-to-one queue; the agent then writes the used ring (its only writer).
 * Requests refused by the parser complete at once without the ring.
 */
final class BlkQueueHandler implements QueueHandler {
    /** Chains taken per doWork: bounds the time before completions are published under a flood. */
    private static final int POP_BATCH = 64;
    /**
     * I/O handlers spin 20 µs then yield for 200 µs before blocking: a 4 KiB pread from page cache takes a few µs,
     * so a busy queue's next request usually arrives within the spin; blocking uses the "lite" lock that costs the
     * publisher nothing unless a handler actually sleeps.
     */
    private static final long HANDLER_SPIN_NANOS = 20_000;
    private static final long HANDLER_YIELD_NANOS = 200_000;

    final ManyToOneConcurrentArrayQueue<BlkRequest> completions;
    final Runnable waker;
    private final SplitVirtqueue queue;
    private final BlkDeviceConfig cfg;
    private final BlkRequest[] free;
    private int freeCount;
    private int inFlight;
    private final Arena arena = Arena.ofShared();
    private final Disruptor<RequestSlot> disruptor;
    private final RingBuffer<RequestSlot> ring;
    private final List<Thread> threads = new ArrayList<>();

    BlkQueueHandler(final SplitVirtqueue queue, final Runnable waker, final BlkDeviceConfig cfg,
                    final BlockBackend backend, final int ioThreads) {
        this.queue = queue;
        this.waker = waker;
        this.cfg = cfg;
        final int depth = queue.size();
        this.completions = new ManyToOneConcurrentArrayQueue<>(depth);
        this.free = new BlkRequest[depth];
        for (int i = 0; i < depth; i++) {
            free[i] = new BlkRequest(this, BlkDeviceConfig.SEG_MAX + 2, arena);
        }
        this.freeCount = depth;
        // At most `depth` requests are in flight, so a ring of 2x never makes the agent wait for a slot.
        this.disruptor = new Disruptor<>(RequestSlot::new, Integer.highestOneBit(depth) * 2, r -> {
            final Thread t = new Thread(r, "blk-io-q" + queue.index + "-" + threads.size());
            t.setDaemon(true);
            threads.add(t);
            return t;
        }, ProducerType.SINGLE, PhasedBackoffWaitStrategy.withLiteLock(HANDLER_SPIN_NANOS, HANDLER_YIELD_NANOS, TimeUnit.NANOSECONDS));
        @SuppressWarnings("unchecked")
        final EventHandler<RequestSlot>[] handlers = new EventHandler[ioThreads];
        for (int i = 0; i < ioThreads; i++) {
            handlers[i] = new BlkIoHandler(backend, cfg, i, ioThreads, arena);
        }
        disruptor.handleEventsWith(handlers);
        this.ring = disruptor.start();
    }

    @Override
    public int doWork() {
        int work = drainCompletions();
        final int pending = Math.min(queue.pending(), POP_BATCH);
        int done = 0;
        for (int i = 0; i < pending && freeCount > 0; i++) {
            final int head = queue.pop();
            final BlkRequest req = free[--freeCount];
            final int err = queue.readChain(head, req.chain);
            if (req.parse(err, cfg)) {
                final long seq = ring.next();
                ring.get(seq).request = req;
                ring.publish(seq); // release: the parsed request is visible to the I/O handler that sees seq
                inFlight++;
            } else {
                req.writeStatus();
                queue.pushUsed(head, req.usedLen);
                free[freeCount++] = req;
                done++;
            }
        }
        if (done > 0) {
            queue.publishUsed();
        }
        return work + pending;
    }

    private int drainCompletions() {
        int n = 0;
        BlkRequest req;
        // poll() is an acquire: everything the I/O handler wrote (status byte, guest data) is visible here.
        while ((req = completions.poll()) != null) {
            queue.pushUsed(req.chain.head, req.usedLen);
            free[freeCount++] = req;
            n++;
        }
        if (n > 0) {
            inFlight -= n;
            queue.publishUsed();
        }
        return n;
    }

    @Override
    public int inFlight() {
        return inFlight;
    }

    @Override
    public boolean hasCompletions() {
        return !completions.isEmpty();
    }

    @Override
    public void close() {
        disruptor.halt();
        for (final Thread t : threads) {
            try {
                t.join(10_000);
            } catch (final InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        arena.close();
    }

    /** A Disruptor ring entry: points at the request it carries. */
    static final class RequestSlot {
        BlkRequest request;
    }
}
