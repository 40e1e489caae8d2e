package io.lazyblk.pull.onesided;

import java.lang.foreign.MemorySegment;

/**
 * One-sided reads of an image that lies in memory the engine can read without the provider's CPU: a read-only
 * fd of the image in this host's page cache ({@code shm://}) or a region the provider registered for remote read ({@code rdma://}).
 * The transport that drives it ({@link OneSidedPageSource}) is the same for both: it posts reads up to the window,
 * then polls for their completions; nothing blocks and nothing is allocated per read.
 *
 * <p>Thread-safety: every method is called from the one transport thread, except {@link #close()}.
 */
public interface OneSidedReads extends AutoCloseable {
    /**
     * Starts reading {@code length} bytes at {@code offset} in the image into {@code dst} (at least {@code length}
     * bytes). The read completes later through {@link #poll} with {@code id}, possibly within this call's thread
     * before the next poll. {@code offset + length} lies within the image (the caller checked).
     *
     * @return false if the device's queue is full: poll, then try again; nothing was started
     */
    boolean post(long id, long offset, MemorySegment dst, int length);

    /**
     * True if a read is a plain copy that completes at once (a mapping on this host): then a demand fetch is done on
     * the caller's thread with {@link #readNow}, with no hand-off to the transport thread and back. Default false.
     */
    default boolean synchronous() {
        return false;
    }

    /**
     * Only if {@link #synchronous()}: reads at once, on the calling thread (any thread); returns whether it worked.
     */
    default boolean readNow(final long offset, final MemorySegment dst, final int length) {
        throw new UnsupportedOperationException("not a synchronous source");
    }

    /** Reaps finished reads, calling {@code done} once per read; returns how many. Never blocks. */
    int poll(Completions done);

    /** Reads posted and not yet reaped. */
    int outstanding();

    /**
     * Whether the reads still work; false once the link broke (an RDMA queue pair in error, a mapping gone). Reads
     * posted before are then reaped as failed.
     */
    boolean healthy();

    /** A one-line description for logs: what is read and how. */
    String describe();

    /**
     * Releases the mapping or the connection. Once this returns nothing writes into any destination any more (an
     * RDMA queue pair is destroyed first, so no late READ lands in memory that is reused); reads not yet reaped are
     * abandoned and their fetches fail.
     */
    @Override
    void close();

    /** Receives completions on the transport thread. */
    interface Completions {
        void completed(long id, boolean ok);
    }
}
