package io.lazyblk.blk;

/**
 * Where the device's bytes live, at the level of whole requests ({@link IoRequest}). Calls come from I/O threads
 * concurrently; implementations are thread-safe and neither allocate nor throw on the data path. Every request method
 * returns 0 or {@code -errno}; {@link #read} may also return {@link #PENDING} and complete the request later (see
 * {@link IoRequest}). {@code BlockBackendContract} (test) is the contract every backend passes.
 *
 * <p>Errors are sticky where durability is concerned: once a write or a sync of the backend's storage failed,
 * {@link #flush()} fails for good and {@link #failure()} says why; nothing later is reported durable.
 */
public interface BlockBackend extends AutoCloseable {
    /** Returned by {@link #read} when the request was parked: the backend completes it later, exactly once. */
    int PENDING = Integer.MAX_VALUE;

    long sizeBytes();

    boolean readOnly();

    /** Reads {@code r.dataBytes} at {@code r.offset} into its buffers. */
    int read(IoRequest r);

    /** Writes {@code r}'s buffers at {@code r.offset}. */
    int write(IoRequest r);

    /**
     * Makes {@code r}'s range read as zeros.
     *
     * @param scratchIov a one-entry iovec over a zero-filled buffer of {@code scratchLen} bytes owned by the calling
     *        thread, for backends that must write zeros; left as it was on return
     */
    int writeZeroes(IoRequest r, long scratchIov, long scratchLen);

    /** A hint that {@code r}'s range is no longer needed; 0 unless the backend failed doing what it chose to do. */
    int discard(IoRequest r);

    /** Makes every write completed before this call durable, and whatever records the backend keeps of them. */
    int flush();

    /**
     * A queue's thread with requests in flight, polling anyway: delivers completions another thread would deliver
     * (a lazy store: fetches its source lets the caller read, see {@code PageSource.poll()}). Returns how many.
     */
    default int poll() {
        return 0;
    }

    /** A request thread that had nothing to do for a while: deferred work (a lazy store's local writes) may run here. */
    default void idle() {
    }

    /** Why the backend's storage failed (the first error, with what to do), or null while it is healthy. */
    default String failure() {
        return null;
    }

    @Override
    void close();
}
