package io.lazyblk.blk;

import io.lazyblk.persistence.LocalImage;

/** A {@link BlockBackend} over a local raw image file; owns the file. Thread-safe. */
public final class FileBackend implements BlockBackend {
    private final LocalImage image;

    public FileBackend(final LocalImage image) {
        this.image = image;
    }

    @Override
    public long sizeBytes() {
        return image.size();
    }

    @Override
    public boolean readOnly() {
        return image.readOnly();
    }

    @Override
    public int read(final long iov, final int cnt, final long offset, final long total) {
        return image.read(iov, cnt, offset, total);
    }

    @Override
    public int write(final long iov, final int cnt, final long offset, final long total) {
        return image.write(iov, cnt, offset, total);
    }

    @Override
    public int flush() {
        return image.datasync();
    }

    @Override
    public int discard(final long offset, final long length) {
        return image.discard(offset, length);
    }

    @Override
    public int writeZeroes(final long offset, final long length, final boolean mayUnmap, final long scratchIov, final long scratchLen) {
        return image.writeZeroes(offset, length, mayUnmap, scratchIov, scratchLen);
    }

    @Override
    public void close() {
        image.close();
    }
}
