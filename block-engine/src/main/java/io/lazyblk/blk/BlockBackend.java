package io.lazyblk.blk;

/**
 * Where the device's bytes live. Calls come from the I/O handler threads concurrently; implementations are
 * thread-safe. Buffers are native {@code struct iovec} arrays whose every entry was checked to lie in guest
 * memory. Every method returns 0 or {@code -errno} (no exceptions, no allocation on the data path).
 */
public interface BlockBackend extends AutoCloseable {
    long sizeBytes();

    boolean readOnly();

    int read(long iov, int cnt, long offset, long total);

    int write(long iov, int cnt, long offset, long total);

    /** Makes every write completed before this call durable. */
    int flush();

    int discard(long offset, long length);

    /**
     * @param scratchIov a one-entry iovec over a zero-filled buffer owned by the calling thread, for backends
     *        that must write zeros
     */
    int writeZeroes(long offset, long length, boolean mayUnmap, long scratchIov, long scratchLen);

    /**
     * A queue's thread with requests in flight, polling anyway: delivers completions another thread would deliver
     * (a lazy store: fetches its source lets the caller read, see {@code PageSource.poll()}). Returns how many.
     */
    default int poll() {
        return 0;
    }

    @Override
    void close();
}
