package io.lazyblk.blk;

/**
 * A live migration's export of the device's disk to a destination engine that has no shared storage: it is told of
 * every range the guest changes ({@link WriteWatch}), of the switchover (instead of the image being handed over, as
 * with shared storage, {@link Storage#handOver}), and of queues starting again after it (the migration failed: the VM
 * runs here again).
 */
public interface LiveExport extends WriteWatch {
    /** The switchover: every request is answered and durable, and nothing changes the disk any more. Control thread. */
    void switchedOver();

    /** A queue started after a switchover: the VM runs here again. Control thread. */
    void resumed();
}
