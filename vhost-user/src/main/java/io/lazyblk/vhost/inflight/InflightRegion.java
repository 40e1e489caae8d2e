package io.lazyblk.vhost.inflight;

import io.lazyblk.sys.LibC;
import io.lazyblk.sys.NativeException;
import io.lazyblk.vhost.mem.SealedMemfd;
import io.lazyblk.vhost.ring.SplitVirtqueue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * The shared memory of vhost-user's INFLIGHT_SHMFD feature: one region per queue ({@link InflightQueue}), in a memfd
 * the device creates when the front end asks (GET_INFLIGHT_FD) and the front end keeps across device restarts,
 * handing it to each new device (SET_INFLIGHT_FD). Owned by the connection's control thread; unmapped by
 * {@link #close()} once no queue runs.
 */
public final class InflightRegion implements AutoCloseable {
    public final int numQueues;
    public final int queueSize;
    public final long mmapSize;
    private final Arena arena;
    private final InflightQueue[] queues;
    private int fd;

    private InflightRegion(final int fd, final MemorySegment all, final Arena arena, final int numQueues, final int queueSize) {
        this.fd = fd;
        this.numQueues = numQueues;
        this.queueSize = queueSize;
        this.mmapSize = all.byteSize();
        this.arena = arena;
        this.queues = new InflightQueue[numQueues];
        final long stride = InflightLayout.queueRegionSize(queueSize);
        for (int i = 0; i < numQueues; i++) {
            queues[i] = new InflightQueue(all.asSlice(i * stride, stride), queueSize);
        }
    }

    /** Bytes a region for {@code numQueues} queues of {@code queueSize} descriptors takes. */
    public static long sizeFor(final int numQueues, final int queueSize) {
        return numQueues * InflightLayout.queueRegionSize(queueSize);
    }

    /** Checks the geometry a front end asks for or describes; returns the reason it is refused, or null. */
    public static String checkGeometry(final int numQueues, final int queueSize, final int deviceQueues) {
        if (numQueues < 1 || numQueues > deviceQueues) {
            return "in-flight region for " + numQueues + " queues; the device has " + deviceQueues;
        }
        if (!SplitVirtqueue.validSize(queueSize)) {
            return "in-flight region for queues of " + queueSize + " descriptors; a queue holds a power of two up to "
                + SplitVirtqueue.MAX_SIZE;
        }
        return null;
    }

    /**
     * A new zeroed region (GET_INFLIGHT_FD) in a memfd sealed against shrinking and growing, so that nobody can later
     * make a mapping of it fault.
     */
    public static InflightRegion create(final int numQueues, final int queueSize) throws NativeException {
        final long size = sizeFor(numQueues, queueSize);
        final int memfd = LibC.memfdCreate("lazyblk-inflight", LibC.MFD_ALLOW_SEALING);
        final Arena arena = Arena.ofShared();
        try {
            LibC.ftruncate(memfd, size);
            LibC.addSeals(memfd, LibC.F_SEAL_SHRINK | LibC.F_SEAL_GROW | LibC.F_SEAL_SEAL);
            return new InflightRegion(memfd, SealedMemfd.mapShared(memfd, size, 0, arena), arena, numQueues, queueSize);
        } catch (final NativeException | RuntimeException e) {
            arena.close();
            LibC.close(memfd);
            throw e;
        }
    }

    /**
     * Maps the region a front end handed back (SET_INFLIGHT_FD), after checking that it is what a region for this
     * geometry must be and that it cannot shrink under the mapping. {@code fd} is closed here whatever happens.
     */
    public static InflightRegion adopt(final int fd, final long mmapSize, final long mmapOffset, final int numQueues,
                                       final int queueSize, final int deviceQueues) throws InflightException {
        try {
            final String bad = checkGeometry(numQueues, queueSize, deviceQueues);
            if (bad != null) {
                throw new InflightException(bad);
            }
            final long expected = sizeFor(numQueues, queueSize);
            if (mmapSize != expected) {
                throw new InflightException("in-flight region of " + Long.toUnsignedString(mmapSize) + " bytes; "
                    + numQueues + " queues of " + queueSize + " descriptors take " + expected);
            }
            final Arena arena = Arena.ofShared();
            try {
                return new InflightRegion(-1, SealedMemfd.map(fd, mmapSize, mmapOffset, "in-flight region", arena), arena,
                    numQueues, queueSize);
            } catch (final IllegalArgumentException e) {
                arena.close();
                throw new InflightException(e.getMessage());
            }
        } finally {
            LibC.close(fd);
        }
    }

    /** Queue {@code index}'s part, or null if the region has none for it. */
    public InflightQueue queue(final int index) {
        return index < queues.length ? queues[index] : null;
    }

    /** The memfd of a region this device created, to send with the GET_INFLIGHT_FD reply; -1 for an adopted one. */
    public int fd() {
        return fd;
    }

    /** Unmaps the region (and closes a created one's memfd). No queue may run on it. */
    @Override
    public void close() {
        LibC.close(fd);
        fd = -1;
        arena.close();
    }
}
