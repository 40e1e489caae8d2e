package io.lazyblk.blk;

import io.lazyblk.pagemap.PageWaiter;

import java.lang.foreign.MemorySegment;

import static io.lazyblk.blk.GuestAccess.ALL;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * One block request as a {@link BlockBackend} sees it: the operation, where, and the buffers as a native iovec array
 * (every entry already checked to lie in memory the request's owner keeps mapped while it is in flight). Preallocated
 * and reused by its owner (a virtqueue's {@link BlkRequest}, or a test's driver); no allocation per request.
 *
 * <p>A backend answers a request at once (the status is the return value), or, for a read of data that is not here
 * yet, returns {@link BlockBackend#PENDING} and later completes it exactly once through {@link #completeParked},
 * from whichever thread brought the data. Between the park and that call the backend owns the request; the owner must
 * not touch it, and {@link #enter()} tells the backend whether the owner still wants it.
 */
public abstract class IoRequest extends PageWaiter {
    /** Operations; the values are virtio-blk's request types. */
    public static final int READ = VirtioBlk.T_IN;
    public static final int WRITE = VirtioBlk.T_OUT;
    public static final int FLUSH = VirtioBlk.T_FLUSH;
    public static final int DISCARD = VirtioBlk.T_DISCARD;
    public static final int WRITE_ZEROES = VirtioBlk.T_WRITE_ZEROES;

    /** The iovec array ({@code struct iovec}, 16 bytes an entry) over the request's data buffers. */
    final MemorySegment iov;
    int type;
    /** READ/WRITE: byte offset and length of the data; DISCARD/WRITE_ZEROES: see {@link #dwzOffset}. */
    long offset;
    long dataBytes;
    int iovCount;
    // DISCARD / WRITE_ZEROES segment, copied out of guest memory so the guest cannot change it after the check.
    long dwzOffset;
    long dwzLength;
    boolean dwzUnmap;
    /** The backend a read is parked in, set by that backend before it parks the request. */
    ParkedReads parkedIn;

    protected IoRequest(final MemorySegment iov) {
        this.iov = iov;
    }

    /**
     * The owner still wants this parked request and will keep its buffers mapped until {@link #exit()}; false once it
     * gave up on it (a stopped queue), and then the backend drops the request without touching its buffers.
     */
    protected abstract boolean enter();

    protected abstract void exit();

    /**
     * Completes a parked request: its data is in its buffers, {@code status} is a virtio-blk status byte. Called once,
     * between {@link #enter()} and {@link #exit()}, on the thread that brought the data; the backend does not touch the
     * request afterwards.
     */
    protected abstract void completeParked(byte status);

    /** The page this request waited for arrived or failed: the backend that parked it finishes it. */
    @Override
    public final void pageReady(final int page, final boolean ok) {
        parkedIn.finish(this, page, ok);
    }

    /** Copies {@code dataBytes} from {@code src} at {@code srcOffset} into the request's buffers. */
    final void copyIn(final MemorySegment src, final long srcOffset) {
        long at = srcOffset;
        for (int i = 0; i < iovCount; i++) {
            final long len = iov.get(JAVA_LONG, 16L * i + 8);
            MemorySegment.copy(src, at, ALL, iov.get(JAVA_LONG, 16L * i), len);
            at += len;
        }
    }

    /** Native zeros the size of a large request's piece, copied into buffers a read answers with zeros (no allocation). */
    private static final MemorySegment ZEROS = java.lang.foreign.Arena.global().allocate(64 << 10, 4096);

    /** Fills the request's buffers with {@code dataBytes} of zeros (a read of pages that hold only zeros). */
    final void zeroFill() {
        for (int i = 0; i < iovCount; i++) {
            final long base = iov.get(JAVA_LONG, 16L * i);
            final long len = iov.get(JAVA_LONG, 16L * i + 8);
            for (long done = 0; done < len; ) {
                final long n = Math.min(ZEROS.byteSize(), len - done);
                MemorySegment.copy(ZEROS, 0, ALL, base + done, n);
                done += n;
            }
        }
    }

    /** Sets up a read or write over an iovec the caller filled; for drivers other than a virtqueue (tests, benchmarks). */
    public final void set(final int type, final long offset, final long dataBytes, final int iovCount) {
        this.type = type;
        this.offset = offset;
        this.dataBytes = dataBytes;
        this.iovCount = iovCount;
    }

    /** Sets up a DISCARD or WRITE_ZEROES; for drivers other than a virtqueue. */
    public final void setRange(final int type, final long offset, final long length, final boolean unmap) {
        this.type = type;
        this.dwzOffset = offset;
        this.dwzLength = length;
        this.dwzUnmap = unmap;
        this.iovCount = 0;
        this.dataBytes = 0;
    }

    /** What a backend that parks reads implements: finishing a parked read when its page arrives. */
    interface ParkedReads {
        void finish(IoRequest r, int page, boolean ok);
    }
}
