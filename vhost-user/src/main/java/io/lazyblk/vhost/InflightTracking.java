package io.lazyblk.vhost;

import io.lazyblk.sys.NativeException;
import io.lazyblk.vhost.inflight.InflightException;
import io.lazyblk.vhost.inflight.InflightQueue;
import io.lazyblk.vhost.inflight.InflightRegion;
import io.lazyblk.vhost.proto.Protocol;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.foreign.MemorySegment;

import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED;

/**
 * A connection's in-flight region (INFLIGHT_SHMFD): the messages that create and hand over the region, and the
 * attachment of each starting queue to its part. The region lets a restarted engine find the requests its
 * predecessor had taken and not answered, and answer them, in any order they had been running. Owned by the
 * connection's control thread; the region changes only while no queue runs.
 */
final class InflightTracking implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(InflightTracking.class);

    private final int deviceQueues;
    private InflightRegion region;

    InflightTracking(final int deviceQueues) {
        this.deviceQueues = deviceQueues;
    }

    /**
     * GET_INFLIGHT_FD: creates a zeroed region for the geometry the front end names and makes it current; writes the
     * reply's payload into {@code payload} and returns the memfd to send with it (the region keeps it open).
     */
    int create(final MemorySegment payload) throws ProtocolException {
        final int numQueues = Short.toUnsignedInt(payload.get(JAVA_SHORT_UNALIGNED, Protocol.INFLIGHT_NUM_QUEUES));
        final int queueSize = Short.toUnsignedInt(payload.get(JAVA_SHORT_UNALIGNED, Protocol.INFLIGHT_QUEUE_SIZE));
        final String bad = InflightRegion.checkGeometry(numQueues, queueSize, deviceQueues);
        if (bad != null) {
            throw new ProtocolException("GET_INFLIGHT_FD refused: " + bad);
        }
        final InflightRegion created;
        try {
            created = InflightRegion.create(numQueues, queueSize);
        } catch (final NativeException e) {
            throw new ProtocolException("GET_INFLIGHT_FD: cannot create the region: " + e.getMessage());
        }
        replace(created);
        payload.fill((byte) 0);
        payload.set(JAVA_LONG_UNALIGNED, Protocol.INFLIGHT_MMAP_SIZE, created.mmapSize);
        payload.set(JAVA_LONG_UNALIGNED, Protocol.INFLIGHT_MMAP_OFFSET, 0L);
        payload.set(JAVA_SHORT_UNALIGNED, Protocol.INFLIGHT_NUM_QUEUES, (short) numQueues);
        payload.set(JAVA_SHORT_UNALIGNED, Protocol.INFLIGHT_QUEUE_SIZE, (short) queueSize);
        return created.fd();
    }

    /** SET_INFLIGHT_FD: maps the region the front end hands over (checked: see InflightRegion.adopt) and makes it current. */
    void adopt(final MemorySegment payload, final int fd) throws ProtocolException {
        final long mmapSize = payload.get(JAVA_LONG_UNALIGNED, Protocol.INFLIGHT_MMAP_SIZE);
        final long mmapOffset = payload.get(JAVA_LONG_UNALIGNED, Protocol.INFLIGHT_MMAP_OFFSET);
        final int numQueues = Short.toUnsignedInt(payload.get(JAVA_SHORT_UNALIGNED, Protocol.INFLIGHT_NUM_QUEUES));
        final int queueSize = Short.toUnsignedInt(payload.get(JAVA_SHORT_UNALIGNED, Protocol.INFLIGHT_QUEUE_SIZE));
        try {
            replace(InflightRegion.adopt(fd, mmapSize, mmapOffset, numQueues, queueSize, deviceQueues));
        } catch (final InflightException e) {
            throw new ProtocolException("SET_INFLIGHT_FD refused: " + e.getMessage());
        }
    }

    private void replace(final InflightRegion next) {
        if (region != null) {
            region.close();
        }
        region = next;
    }

    /** True if queue {@code index} has its part in the current region: its requests survive an engine restart. */
    boolean tracks(final int index) {
        return region != null && region.queue(index) != null;
    }

    /**
     * Attaches a starting queue (ring configured, addresses resolved, base set) to its part of the region, if it has
     * one; the ring then resubmits what the region says was in flight. A region that does not hold together is
     * refused: the connection ends, and the guest's requests wait for the next one.
     *
     * @return true if the queue resumes where an earlier device left it (the region was in use), false if it starts
     *     afresh or untracked
     */
    boolean attach(final QueueState q) throws ProtocolException {
        final InflightQueue part = region != null ? region.queue(q.ring.index) : null;
        if (part == null) {
            return false;
        }
        try {
            final boolean resumed = part.initialised();
            final int again = q.ring.attachInflight(part, q.base);
            if (again > 0) {
                LOG.info("queue {}: {} requests were in flight when the previous engine stopped; running them again",
                    q.ring.index, again);
            }
            return resumed;
        } catch (final InflightException e) {
            throw new ProtocolException("queue " + q.ring.index + " cannot resume: " + e.getMessage());
        } catch (final InternalError e) {
            // A SIGBUS on the ring's indices: the front end shrank guest memory's file under us (see QueueAgent).
            throw new ProtocolException("queue " + q.ring.index + " cannot resume: guest memory faulted (" + e.getMessage() + ")");
        }
    }

    /** Drops the region (device reset, connection end); no queue may run. */
    @Override
    public void close() {
        replace(null);
    }
}
