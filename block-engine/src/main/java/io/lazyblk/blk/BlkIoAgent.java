package io.lazyblk.blk;

import com.lmax.disruptor.EventPoller;
import com.lmax.disruptor.RingBuffer;
import io.lazyblk.persistence.LocalImage;
import org.agrona.concurrent.Agent;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * Executes requests from one queue's Disruptor ring against the backend. An {@link Agent} that polls the ring
 * ({@link EventPoller}), so the threading mode decides where it runs: inline on the queue agent's own thread
 * (no hand-off at all, the default) or on a dedicated thread, several per ring each taking every n-th sequence.
 * Errors become status bytes; the log is rate-limited to one line per second.
 */
final class BlkIoAgent implements Agent, EventPoller.Handler<BlkQueueHandler.RequestSlot> {
    private static final Logger LOG = LoggerFactory.getLogger(BlkIoAgent.class);
    private static final int ZERO_BYTES = 64 * 1024;
    private static final long LOG_INTERVAL_NANOS = 1_000_000_000L;
    private static final int EINVAL = 22;

    private final RingBuffer<BlkQueueHandler.RequestSlot> ring;
    private final EventPoller<BlkQueueHandler.RequestSlot> poller;
    private final BlockBackend backend;
    private final BlkDeviceConfig cfg;
    private final int id;
    private final int of;
    private final boolean dedicated;
    private final String name;
    private final MemorySegment zeroIov;
    private BlkQueueHandler pendingWake;
    private int processed;
    private long lastLog;
    /** Dedicated mode: set while the agent's thread parks, read by the producer to decide whether to unpark it. */
    volatile boolean sleeping;
    volatile Thread thread;

    BlkIoAgent(final RingBuffer<BlkQueueHandler.RequestSlot> ring, final BlockBackend backend, final BlkDeviceConfig cfg,
               final int id, final int of, final boolean dedicated, final String name, final Arena arena) {
        this.ring = ring;
        this.poller = ring.newPoller();
        ring.addGatingSequences(poller.getSequence());
        this.backend = backend;
        this.cfg = cfg;
        this.id = id;
        this.of = of;
        this.dedicated = dedicated;
        this.name = name;
        this.zeroIov = LocalImage.zeroIov(arena, ZERO_BYTES);
    }

    @Override
    public void onStart() {
        thread = Thread.currentThread();
    }

    @Override
    public int doWork() throws Exception {
        processed = 0;
        poller.poll(this);
        return processed;
    }

    /** True if the ring holds sequences this agent has not passed yet (checked before parking). */
    boolean hasWork() {
        return ring.getCursor() > poller.getSequence().get();
    }

    @Override
    public boolean onEvent(final BlkQueueHandler.RequestSlot slot, final long sequence, final boolean endOfBatch) {
        if (of == 1 || sequence % of == id) {
            final BlkRequest req = slot.request;
            final int rc = execute(req);
            if (rc != BlockBackend.PENDING) { // PENDING: parked on a page; the backend completes it (IoRequest.completeParked)
                req.status = (byte) rc;
                req.writeStatus();
                final BlkQueueHandler owner = req.owner;
                owner.completions.offer(req); // CAS: publishes the status and data to the queue agent's poll()
                pendingWake = owner;
            }
            processed++;
        }
        if (endOfBatch) {
            if (pendingWake != null) {
                if (dedicated) {
                    pendingWake.waker.run(); // one wake per batch, not per request
                }
                pendingWake = null;
            }
            if (dedicated) {
                backend.idle(); // the queue agent publishes what we handed it; our local writes meanwhile
            }
        }
        return true;
    }

    /** Runs the request; returns a status byte, or {@link BlockBackend#PENDING} if it parked. */
    private int execute(final BlkRequest r) {
        int rc;
        switch (r.type) {
            case VirtioBlk.T_IN -> {
                rc = backend.read(r);
                if (rc == BlockBackend.PENDING) {
                    return rc;
                }
            }
            case VirtioBlk.T_OUT -> {
                rc = backend.write(r);
                watched(r.offset, r.dataBytes);
                if (rc == 0 && cfg.writeThrough()) {
                    rc = backend.flush();
                }
            }
            case VirtioBlk.T_FLUSH -> rc = backend.flush();
            case VirtioBlk.T_DISCARD -> {
                rc = backend.discard(r);
                watched(r.dwzOffset, r.dwzLength);
            }
            case VirtioBlk.T_WRITE_ZEROES -> {
                rc = backend.writeZeroes(r, zeroIov.address(), ZERO_BYTES);
                watched(r.dwzOffset, r.dwzLength);
                if (rc == 0 && cfg.writeThrough()) {
                    rc = backend.flush();
                }
            }
            default -> rc = -EINVAL;
        }
        if (rc == 0) {
            return VirtioBlk.S_OK;
        }
        final long now = System.nanoTime();
        if (now - lastLog > LOG_INTERVAL_NANOS) {
            lastLog = now;
            LOG.warn("request type {} at offset {} failed with errno {}; the guest gets IOERR (at most one such line per second)",
                r.type, r.offset, -rc);
        }
        return VirtioBlk.S_IOERR;
    }

    /** Tells a live migration's export what the guest changed; one volatile read when none is running. */
    private void watched(final long offset, final long length) {
        // Volatile read, paired with the export's install (VirtioBlkDevice.watchWrites). A write that still reads null
        // finished its pwritev before the install; the export installs before it serves anything, and serves by reading
        // the file, so it sends that write's bytes and there is nothing to track.
        final WriteWatch w = cfg.watch;
        if (w != null) {
            w.written(offset, length);
        }
    }

    @Override
    public String roleName() {
        return name;
    }
}
