package io.lazyblk.vhost;

import io.lazyblk.vhost.mem.DirtyLog;
import io.lazyblk.vhost.mem.GuestMemory;
import io.lazyblk.vhost.mem.MemoryRegion;
import io.lazyblk.vhost.proto.Protocol;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;

/**
 * A connection's dirty logs (VHOST_F_LOG_ALL, LOG_SHMFD): the one SET_LOG_BASE handed over last, and the ones it
 * replaced. A replaced log stays mapped, since a running queue may still be marking it, until the queues are stopped
 * next ({@link #releaseRetired}); the connection stops them early if a front end keeps replacing logs. Owned by the
 * connection's control thread.
 */
final class DirtyLogging implements AutoCloseable {
    /** Replaced logs kept mapped before the queues are stopped to unmap them: QEMU replaces one only when memory grows. */
    static final int MAX_RETIRED = 4;

    private DirtyLog current;
    private final List<DirtyLog> retired = new ArrayList<>();

    /**
     * SET_LOG_BASE: maps the log (see {@link DirtyLog#map}) and makes it current. A log that does not cover the guest
     * memory mapped now is refused: the front end would miss pages we write.
     *
     * @return true if too many replaced logs are mapped: the caller stops the queues and calls {@link #releaseRetired}
     */
    boolean setBase(final MemorySegment payload, final int fd, final GuestMemory memory) throws ProtocolException {
        final long size = payload.get(JAVA_LONG_UNALIGNED, 0);
        final long offset = payload.get(JAVA_LONG_UNALIGNED, 8);
        final DirtyLog next;
        try {
            next = DirtyLog.map(fd, size, offset);
        } catch (final IllegalArgumentException e) {
            throw new ProtocolException("SET_LOG_BASE refused: " + e.getMessage());
        }
        long end = 0;
        for (final MemoryRegion r : memory.regions()) {
            end = Math.max(end, r.guestPhysAddr + r.size);
        }
        if (Long.compareUnsigned(next.coverage(), end) < 0) {
            next.close();
            throw new ProtocolException("SET_LOG_BASE refused: a " + size + "-byte log covers 0x" + Long.toHexString(next.coverage())
                + " bytes of guest memory, which reaches 0x" + Long.toHexString(end));
        }
        if (current != null) {
            retired.add(current);
        }
        current = next;
        return retired.size() > MAX_RETIRED;
    }

    /** The log queues mark: the current one while the front end has acked LOG_ALL, else null. */
    DirtyLog active(final long ackedFeatures) {
        return Protocol.has(ackedFeatures, Protocol.F_LOG_ALL) ? current : null;
    }

    /** Unmaps the replaced logs; no queue may run. */
    void releaseRetired() {
        retired.forEach(DirtyLog::close);
        retired.clear();
    }

    /** Unmaps every log (device reset, connection end); no queue may run. */
    @Override
    public void close() {
        releaseRetired();
        if (current != null) {
            current.close();
            current = null;
        }
    }
}
