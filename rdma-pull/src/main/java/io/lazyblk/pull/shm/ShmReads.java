package io.lazyblk.pull.shm;

import io.lazyblk.pull.onesided.OneSidedReads;
import io.lazyblk.sys.LibC;

import java.lang.foreign.MemorySegment;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * {@link OneSidedReads} from a read-only fd of the image on this host (a file or memfd in the host's image cache,
 * handed over by the image server): a read is a {@code pread(2)} from the page cache, done when posted, reaped at
 * the next poll. The provider's CPU is not involved.
 *
 * <p>Why {@code pread} and not a copy out of a mapping of the fd: the engine reads each page once, and on the first
 * touch of a page in a new mapping this VM pays ~35 µs per 64 KiB (1.8 GB/s), against ~8 µs (8 GB/s) for
 * {@code pread}, which copies through the kernel's own long-lived mapping (measured with a C loop over a 1 GiB
 * tmpfs file; {@code bench-sources} measures both). On bare metal the two cost about the same. A file that shrinks
 * under us gives short reads, not SIGBUS: that read fails and the source turns unhealthy (the engine then uses its
 * next source).
 */
public final class ShmReads implements OneSidedReads {
    /** Set in {@link #users} by {@link #close()}: no read starts any more. */
    private static final int CLOSED = 1 << 30;

    private final int fd;
    private final String description;
    private final long[] doneIds;
    private final boolean[] doneOk;
    private int doneCount;
    private volatile boolean healthy = true;
    /**
     * Threads inside {@link #readNow} (request threads and the transport), plus {@link #CLOSED} once closing: the fd
     * is closed only when no read uses it, so a read never lands on a number the process has reused for another file.
     */
    private final AtomicInteger users = new AtomicInteger();
    private final java.util.concurrent.atomic.AtomicBoolean closing = new java.util.concurrent.atomic.AtomicBoolean();

    /**
     * @param fd the image, read-only; owned from here on (closed by {@link #close()})
     * @param window most reads posted and not yet reaped
     */
    ShmReads(final int fd, final String description, final int window) {
        this.fd = fd;
        this.description = description;
        this.doneIds = new long[window];
        this.doneOk = new boolean[window];
    }

    @Override
    public boolean post(final long id, final long offset, final MemorySegment dst, final int length) {
        if (doneCount == doneIds.length) {
            return false;
        }
        doneIds[doneCount] = id;
        doneOk[doneCount++] = readNow(offset, dst, length);
        return true;
    }

    @Override
    public boolean synchronous() {
        return true;
    }

    /** A {@code pread} of the image into {@code dst} (native memory); any thread. */
    @Override
    public boolean readNow(final long offset, final MemorySegment dst, final int length) {
        if (!healthy || !dst.isNative()) {
            return false; // (a heap destination has no address to read into: the caller's bug, the fetch fails)
        }
        // An atomic increment, sequentially consistent with close()'s: either close() sees us and waits before it
        // closes the fd, or we see CLOSED and leave the fd alone.
        if ((users.getAndIncrement() & CLOSED) != 0) {
            users.getAndDecrement();
            return false;
        }
        try {
            final long address = dst.address();
            long done = 0;
            while (done < length) {
                final long n = LibC.rawPread(fd, address + done, length - done, offset + done);
                if (n > 0) {
                    done += n;
                } else if (n != -LibC.EINTR) {
                    // 0: the file ends before the page does (someone shrank the image); < 0: the fd no longer reads.
                    // Volatile: every reader stops at once.
                    healthy = false;
                    return false;
                }
            }
            return true;
        } finally {
            users.getAndDecrement();
        }
    }

    @Override
    public int poll(final Completions done) {
        final int n = doneCount;
        for (int i = 0; i < n; i++) {
            done.completed(doneIds[i], doneOk[i]);
        }
        doneCount = 0;
        return n;
    }

    @Override
    public int outstanding() {
        return 0; // reads finish when posted: nothing to wait for, so the transport need not spin
    }

    @Override
    public boolean healthy() {
        return healthy;
    }

    @Override
    public String describe() {
        return description;
    }

    /** Waits for reads in progress (each a pread of one fetch, microseconds), then closes the fd. Idempotent. */
    @Override
    public void close() {
        if (!closing.compareAndSet(false, true)) {
            return;
        }
        users.getAndAdd(CLOSED);
        while (users.get() != CLOSED) {
            Thread.onSpinWait();
        }
        LibC.close(fd);
    }
}
