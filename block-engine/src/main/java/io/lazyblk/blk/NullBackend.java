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
    public int read(final IoRequest r) {
        return 0;
    }

    @Override
    public int write(final IoRequest r) {
        return 0;
    }


    @Override
    public int flush() {
        return 0;
    }

    @Override
    public int discard(final IoRequest r) {
        return 0;
    }

    @Override
    public int writeZeroes(final IoRequest r, final long scratchIov, final long scratchLen) {
        return 0;
    }

    @Override
    public void close() {
    }
}
