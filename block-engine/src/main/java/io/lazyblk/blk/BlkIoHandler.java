package io.lazyblk.blk;

import com.lmax.disruptor.EventHandler;
import io.lazyblk.persistence.LocalImage;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * Executes requests against the backend on one Disruptor handler thread. With several handlers per ring each
 * takes every n-th sequence. Errors become status bytes; the log is rate-limited to one line per second.
 */
final class BlkIoHandler implements EventHandler<BlkQueueHandler.RequestSlot> {
    private static final Logger LOG = LoggerFactory.getLogger(BlkIoHandler.class);
    private static final int ZERO_BYTES = 64 * 1024;
    private static final long LOG_INTERVAL_NANOS = 1_000_000_000L;

    private final BlockBackend backend;
    private final BlkDeviceConfig cfg;
    private final int id;
    private final int of;
    private final MemorySegment zeroIov;
    private BlkQueueHandler pendingWake;
    private long lastLog;

    BlkIoHandler(final BlockBackend backend, final BlkDeviceConfig cfg, final int id, final int of, final Arena arena) {
        this.backend = backend;
        this.cfg = cfg;
        this.id = id;
        this.of = of;
        this.zeroIov = LocalImage.zeroIov(arena, ZERO_BYTES);
    }

    @Override
    public void onEvent(final BlkQueueHandler.RequestSlot slot, final long sequence, final boolean endOfBatch) {
        if (of == 1 || sequence % of == id) {
            final BlkRequest req = slot.request;
            req.status = execute(req);
            req.writeStatus();
            final BlkQueueHandler owner = req.owner;
            owner.completions.offer(req); // CAS: publishes the status and data to the agent's poll()
            pendingWake = owner;
        }
        if (endOfBatch && pendingWake != null) {
            pendingWake.waker.run(); // one wake per batch, not per request
            pendingWake = null;
        }
    }

    private byte execute(final BlkRequest r) {
        int rc;
        switch (r.type) {
            case VirtioBlk.T_IN -> rc = backend.read(r.iov.address(), r.iovCount, r.offset, r.dataBytes);
            case VirtioBlk.T_OUT -> {
                rc = backend.write(r.iov.address(), r.iovCount, r.offset, r.dataBytes);
                if (rc == 0 && cfg.writeThrough()) {
                    rc = backend.flush();
                }
            }
            case VirtioBlk.T_FLUSH -> rc = backend.flush();
            case VirtioBlk.T_DISCARD -> {
                rc = backend.discard(r.dwzOffset, r.dwzLength);
                if (rc == -95) { // EOPNOTSUPP: discard is a hint, the guest loses nothing
                    rc = 0;
                }
            }
            case VirtioBlk.T_WRITE_ZEROES -> {
                rc = backend.writeZeroes(r.dwzOffset, r.dwzLength, r.dwzUnmap, zeroIov.address(), ZERO_BYTES);
                if (rc == 0 && cfg.writeThrough()) {
                    rc = backend.flush();
                }
            }
            default -> rc = -22;
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
}
