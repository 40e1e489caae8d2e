package io.lazyblk.persistence;

import java.io.IOException;

/**
 * A {@link FileIo} that hands every call to another one: a test fake overrides only the calls it changes or counts
 * (a full disk, counted reads). Thread-safe if the file it wraps is.
 */
public class ForwardingFileIo implements FileIo {
    protected final FileIo f;

    public ForwardingFileIo(final FileIo f) {
        this.f = f;
    }

    @Override
    public long size() throws IOException {
        return f.size();
    }

    @Override
    public long preadv(final long iov, final int cnt, final long offset) {
        return f.preadv(iov, cnt, offset);
    }

    @Override
    public long pwritev(final long iov, final int cnt, final long offset) {
        return f.pwritev(iov, cnt, offset);
    }

    @Override
    public int fdatasync() {
        return f.fdatasync();
    }

    @Override
    public int truncate(final long length) {
        return f.truncate(length);
    }

    @Override
    public int fallocate(final int mode, final long offset, final long length) {
        return f.fallocate(mode, offset, length);
    }

    @Override
    public int fadviseDontNeed(final long offset, final long length) {
        return f.fadviseDontNeed(offset, length);
    }

    @Override
    public long residentPages(final long size) {
        return f.residentPages(size);
    }

    @Override
    public int startWriteback(final long offset, final long length) {
        return f.startWriteback(offset, length);
    }

    @Override
    public long allocatedBytes() {
        return f.allocatedBytes();
    }

    @Override
    public void close() {
        f.close();
    }
}
