package io.lazyblk.persistence;

import java.io.IOException;
import java.nio.file.Path;

/**
 * The file calls the local image and its page-state file make, so that tests can put a crash-simulating or
 * fault-injecting layer under both ({@code SimulatedDisk} in this module's test jar). {@link #NATIVE} is the real
 * thing: the kernel's calls on an fd. I/O methods take raw {@code struct iovec} addresses the caller has checked,
 * return bytes transferred or {@code -errno}, may transfer less than asked, and neither allocate nor throw.
 * Thread-safe: positional calls only.
 */
public interface FileIo extends AutoCloseable {
    /** Opens files: the kernel's, or a simulation's. */
    interface Opener {
        /**
         * Opens {@code path}, creating it empty if {@code create} and it does not exist.
         *
         * @throws IOException naming the path and the reason
         */
        FileIo open(Path path, boolean readOnly, boolean create) throws IOException;
    }

    /** The kernel's files. */
    Opener NATIVE = NativeFileIo::open;

    /** The file's length now. */
    long size() throws IOException;

    long preadv(long iov, int cnt, long offset);

    long pwritev(long iov, int cnt, long offset);

    /** Makes every completed write durable; 0 or {@code -errno}. */
    int fdatasync();

    /** Sets the length; 0 or {@code -errno}. */
    int truncate(long length);

    /** {@code fallocate(2)}; 0 or {@code -errno} ({@code -EOPNOTSUPP} where the file system cannot). */
    int fallocate(int mode, long offset, long length);

    /** Advice that a clean range is not needed in the page cache; 0 or an error number. Harmless if ignored. */
    int fadviseDontNeed(long offset, long length);

    /** How many of the first {@code size} bytes' 4 KiB pages are in the page cache; -1 if unknown. */
    long residentPages(long size);

    /**
     * Starts writeback of {@code [offset, offset + length)} without waiting (a hint: the next sync has less to do); 0
     * or {@code -errno}. Does nothing by default (a simulated disk has no page cache to drain).
     */
    default int startWriteback(final long offset, final long length) {
        return 0;
    }

    /** Bytes the file system allocated to the file ({@code st_blocks}); -1 if unknown (a simulated disk). */
    default long allocatedBytes() {
        return -1;
    }

    @Override
    void close();
}
