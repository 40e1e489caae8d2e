package io.lazyblk.vhost.mem;

import io.lazyblk.sys.LibC;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.VarHandle;

/**
 * The front end's dirty log for live migration (VHOST_F_LOG_ALL with LOG_SHMFD): a bitmap in shared memory, one bit per
 * 4 KiB page of guest physical memory, that the device sets for every page it writes so the front end sends the page
 * again. Bits are set with an atomic OR on 64-bit words, as QEMU reads and clears them (it swaps whole words).
 * Thread-safe: any queue thread marks; {@link #close()} only once no queue can mark any more.
 */
public final class DirtyLog implements AutoCloseable {
    /** VHOST_LOG_PAGE: the bytes one bit stands for. */
    public static final int PAGE_SHIFT = 12;
    /**
     * The largest log accepted: 1 GiB of bitmap covers 32 TiB of guest memory, far beyond any guest here; a front end
     * asking for more is broken or hostile.
     */
    public static final long MAX_SIZE = 1L << 30;
    private static final VarHandle WORD = ValueLayout.JAVA_LONG.varHandle();

    private final MemorySegment bits;
    private final long words;
    private final Arena arena;
    /** Marks that fell beyond the log (a front end whose log does not cover its memory): counted, never written. */
    private final java.util.concurrent.atomic.AtomicLong outside = new java.util.concurrent.atomic.AtomicLong();

    private DirtyLog(final MemorySegment bits, final Arena arena) {
        this.bits = bits;
        this.words = bits.byteSize() / 8;
        this.arena = arena;
    }

    /**
     * Maps {@code size} bytes of {@code fd} at {@code offset}, after checking that the fd is a memfd sealed against
     * shrinking (a file that shrank under the mapping would fault) that holds them. {@code fd} is closed here whatever
     * happens.
     *
     * @throws IllegalArgumentException with the reason the log is refused
     */
    public static DirtyLog map(final int fd, final long size, final long offset) {
        try {
            if (size < 8 || size > MAX_SIZE || size % 8 != 0) {
                throw new IllegalArgumentException("dirty log of " + Long.toUnsignedString(size) + " bytes; a log is a whole number of"
                    + " 64-bit words, at most " + MAX_SIZE);
            }
            final Arena arena = Arena.ofShared();
            try {
                return new DirtyLog(SealedMemfd.map(fd, size, offset, "dirty log", arena), arena);
            } catch (final IllegalArgumentException e) {
                arena.close();
                throw e;
            }
        } finally {
            LibC.close(fd);
        }
    }

    /** Bytes of guest physical memory the log covers. */
    public long coverage() {
        return words * 64 << PAGE_SHIFT;
    }

    /**
     * Marks every page of guest physical memory that {@code [gpa, gpa + length)} touches. Pages beyond the log are not
     * marked (they are counted: {@link #outside()}). Any thread.
     */
    public void mark(final long gpa, final long length) {
        if (length <= 0) {
            return;
        }
        final long first = gpa >>> PAGE_SHIFT;
        final long last = (gpa + length - 1) >>> PAGE_SHIFT;
        if (Long.compareUnsigned(last, first) < 0 || last >>> 6 >= words) {
            outside.incrementAndGet();
            if (first >>> 6 >= words || Long.compareUnsigned(last, first) < 0) {
                return;
            }
        }
        final long end = Math.min(last, words * 64 - 1);
        long page = first;
        while (page <= end) {
            final long word = page >>> 6;
            final int from = (int) (page & 63);
            final int to = (int) Math.min(63, end - (word << 6));
            final long mask = (to == 63 ? -1L : (1L << (to + 1)) - 1) & (-1L << from);
            // Atomic OR: the front end clears words with an atomic exchange while the guest runs, and other queues mark
            // the same words; a plain read-modify-write could lose either's bits.
            WORD.getAndBitwiseOr(bits, word * 8, mask);
            page = (word + 1) << 6;
        }
    }

    /** Marks that fell beyond the log since it was mapped. */
    public long outside() {
        return outside.get();
    }

    /** Unmaps the log; no thread may mark it any more. */
    @Override
    public void close() {
        arena.close();
    }
}
