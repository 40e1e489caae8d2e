package io.lazyblk.blk;

/**
 * Completes every request without touching data, like qemu-storage-daemon's {@code null-co} driver with
 * {@code read-zeroes=off}: for measuring the engine's own overhead. Thread-safe.
 */
public final class NullBackend implements BlockBackend {
    private final long size;

    public NullBackend(final long size) {
        this.size = size;
    }

    @Override
    public long sizeBytes() {
        return size;
    }

    @Override
    public boolean readOnly() {
        return false;
    }

    @Override
    public int read(final long iov, final int cnt, final long offset, final long total) {
        return 0;
    }

    @Override
    public int write(final long iov, final int cnt, final long offset, final long total) {
        return 0;
    }

    @Override
    public int flush() {
        return 0;
    }

    @Override
    public int discard(final long offset, final long length) {
        return 0;
    }

    @Override
    public int writeZeroes(final long offset, final long length, final boolean mayUnmap, final long scratchIov, final long scratchLen) {
        return 0;
    }

    @Override
    public void close() {
    }
}
