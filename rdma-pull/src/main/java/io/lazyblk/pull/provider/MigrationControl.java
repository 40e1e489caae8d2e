package io.lazyblk.pull.provider;

/**
 * The source side of a live migration without shared storage, as the image server sees it: a running engine exports
 * its disk ({@link ImageExport#withMigration}) and the destination engine asks, through the provider protocol
 * ({@link ProviderProtocol#OP_MIGRATION_FINAL}, {@link ProviderProtocol#OP_MIGRATION_DONE}), for the pages the guest
 * changed after it fetched them, and says when its copy is complete. Implemented by the engine; called on the
 * server's connection threads, possibly several at once (a destination that reconnects, or asks twice), so it must
 * be thread-safe.
 */
public interface MigrationControl {
    /**
     * Waits up to {@code timeoutNanos} for the switchover and returns the final set of changed pages: export page
     * numbers (pages of the export's manifest), each below its page count, none twice, in any order. Once the
     * switchover has happened, every call returns that same set at once. The server asks again when this returns null.
     *
     * @return the final changed pages, or null if the switchover has not happened within the timeout
     * @throws InterruptedException if the waiting thread is interrupted: the server interrupts a wait whose connection
     *     it closes (its own close, or its watchdog), and the wait must then end promptly
     */
    int[] awaitFinal(long timeoutNanos) throws InterruptedException;

    /**
     * The guest's write-cache mode, as at the switchover: true if the guest chose writeback (virtio-blk CONFIG_WCE on),
     * false for write-through. The guest sets it on the source and QEMU does not send it to the destination again, so
     * the destination learns it from this ({@link ProviderProtocol#FINAL_FLAG_GUEST_WRITEBACK}). Called by the server
     * after {@link #awaitFinal} returned a set, on the same thread; quick. The default, writeback, is the mode an
     * engine's device starts in.
     */
    default boolean guestWriteback() {
        return true;
    }

    /**
     * The destination says its copy is complete (every page fetched, the final set's pages fetched again). Quick: called
     * on a connection's thread before its answer. May be called more than once (a destination that retries).
     */
    void destinationComplete();
}
