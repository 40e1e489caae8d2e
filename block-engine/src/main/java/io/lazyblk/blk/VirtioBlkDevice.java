package io.lazyblk.blk;

import io.lazyblk.vhost.device.QueueHandler;
import io.lazyblk.vhost.device.VhostUserDevice;
import io.lazyblk.vhost.proto.Protocol;
import io.lazyblk.vhost.ring.SplitVirtqueue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;

/**
 * A virtio-blk device over a {@link BlockBackend}. Control-plane calls come from the connection's control
 * thread; each opened queue runs its own {@link BlkQueueHandler}.
 */
public final class VirtioBlkDevice implements VhostUserDevice {
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(VirtioBlkDevice.class);
    private final Storage storage;
    private final BlkDeviceConfig cfg;
    private final int ioThreadsPerQueue;
    /** A live migration's export without shared storage, or null; set by the control socket's thread. */
    private volatile LiveExport export;
    /** What the open queues answered, and the sum of the closed ones' (metrics); guarded by {@link #statsLock}. */
    private final java.util.List<QueueStats> liveStats = new java.util.ArrayList<>();
    private final long[] retiredCounts = QueueStats.newCounts();
    private final long[] retiredLatency = QueueStats.newLatency();
    private final Object statsLock = new Object();
    /** Whether the last stop was a switchover: control thread, and {@link #switchedBefore()} from the status thread. */
    private volatile boolean switched;

    public VirtioBlkDevice(final BlockBackend backend, final int numQueues, final int ioThreadsPerQueue, final String serial) {
        this(Storage.fixed(backend), numQueues, ioThreadsPerQueue, serial);
    }

    /** A device over storage that a live migration may hand over ({@link Storage}): opened at the first queue's start. */
    public VirtioBlkDevice(final Storage storage, final int numQueues, final int ioThreadsPerQueue, final String serial) {
        this.storage = storage;
        this.cfg = new BlkDeviceConfig(storage.sizeBytes(), storage.readOnly(), numQueues, serial);
        this.ioThreadsPerQueue = ioThreadsPerQueue;
    }

    @Override
    public long features() {
        return cfg.features() | (1L << Protocol.F_INDIRECT_DESC) | (1L << Protocol.F_EVENT_IDX) | (1L << Protocol.F_VERSION_1);
    }

    @Override
    public int numQueues() {
        return cfg.numQueues;
    }

    @Override
    public int configSize() {
        return VirtioBlk.CONFIG_SIZE;
    }

    @Override
    public void readConfig(final int offset, final MemorySegment dst) {
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment all = a.allocate(VirtioBlk.CONFIG_SIZE);
            cfg.render(all);
            MemorySegment.copy(all, offset, dst, 0, dst.byteSize());
        }
    }

    @Override
    public boolean writeConfig(final int offset, final MemorySegment src) {
        // Only the writeback byte is writable, and only to 0 or 1 (virtio 1.2 §5.2.5).
        if (offset == VirtioBlk.CFG_WRITEBACK && src.byteSize() == 1) {
            final byte v = src.get(JAVA_BYTE, 0);
            if (v == 0 || v == 1) {
                cfg.writeback = v == 1;
                return true;
            }
        }
        return false;
    }

    @Override
    public void featuresAcked(final long features) {
        cfg.flushAcked = Protocol.has(features, VirtioBlk.F_FLUSH);
    }

    @Override
    public QueueHandler openQueue(final SplitVirtqueue queue, final Runnable waker) {
        final LiveExport e = export;
        if (switched && e != null) {
            e.resumed(); // the migration failed after its switchover: the guest runs here again
        }
        switched = false;
        final boolean opening = storage.current() == null;
        final BlockBackend backend = storage.take(); // a migration's destination: waits for the image's lock here
        if (opening && storage.carriedWriteback() >= 0) {
            cfg.writeback = storage.carriedWriteback() == 1; // the mode the guest chose on the source host
        }
        final QueueStats stats = new QueueStats();
        synchronized (statsLock) {
            liveStats.add(stats);
        }
        return new BlkQueueHandler(queue, waker, cfg, backend, ioThreadsPerQueue, stats, () -> retire(stats));
    }

    /** Every backend can: a plain file or a lazily filled one (its state file moves with it) is handed over whole. */
    @Override
    public boolean migratable() {
        return true;
    }

    /**
     * Installs (or with null removes) a live migration's export: told of every range the guest changes from the next
     * request on, and of the switchover, at which the image then stays here (no shared storage to hand over).
     */
    public void export(final LiveExport e) {
        export = e;
        cfg.watch = e; // volatile: request threads see it from their next write on (BlkIoAgent.watched)
    }

    /** Times requests for the latency histogram from the next batch on (metrics are served); off: no clock reading. */
    public void timeRequests(final boolean on) {
        cfg.timed = on; // volatile: each queue reads it once per batch
    }

    /** A queue closed: its counts join the totals, under the lock a scrape takes, so no total ever goes down. */
    private void retire(final QueueStats stats) {
        synchronized (statsLock) {
            stats.addTo(retiredCounts, retiredLatency);
            liveStats.remove(stats);
        }
    }

    /**
     * Everything the device answered since it was made, every queue and connection: per operation requests, errors and
     * bytes into {@code counts} ({@link QueueStats#newCounts()}), the latency histogram into {@code latency}. Not for
     * the data path (it takes a lock the queues never take).
     */
    public void answered(final long[] counts, final long[] latency) {
        synchronized (statsLock) {
            System.arraycopy(retiredCounts, 0, counts, 0, counts.length);
            System.arraycopy(retiredLatency, 0, latency, 0, latency.length);
            for (final QueueStats q : liveStats) {
                q.addTo(counts, latency);
            }
        }
    }

    public Storage storage() {
        return storage;
    }

    /**
     * A queue stopped (the VM stops or migrates): what it answered is made durable, as QEMU's own block layer flushes
     * at a stop, so that a destination host reading the same storage finds the guest's writes.
     */
    @Override
    public void queueStopped(final int index) {
        final BlockBackend backend = storage.current();
        if (backend != null && backend.flush() != VirtioBlk.S_OK) {
            LOG.warn("queue {} stopped but the disk could not be made durable: {}", index, backend.failure());
        }
    }

    /** The migration's switchover: the image goes to the destination engine, with the guest's write-cache mode. */
    @Override
    public void switchedOver() {
        final LiveExport e = export;
        if (e == null) {
            storage.handOver(cfg.writeback);
        } else if (!switched) {
            e.switchedOver(); // no shared storage: the image stays here and is served to the destination until it has it all
        }
        switched = true;
    }

    /**
     * The image was handed over at a switchover before this engine started (a live migration's record of it): a queue
     * starting means the VM runs here again, which the export is told ({@link LiveExport#resumed()}). Control thread.
     */
    public void switchedBefore() {
        switched = true;
    }

    /** The guest's write-cache mode: true for writeback. */
    public boolean writeback() {
        return cfg.writeback;
    }

    /** Sets the guest's write-cache mode (a live migration's destination: the mode the guest chose on the source). */
    public void writeback(final boolean on) {
        cfg.writeback = on;
    }

    @Override
    public void reset() {
        cfg.writeback = true;
        cfg.flushAcked = false;
    }

    public BlkDeviceConfig config() {
        return cfg;
    }
}
