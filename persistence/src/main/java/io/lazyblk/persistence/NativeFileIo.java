package io.lazyblk.persistence;

import io.lazyblk.sys.FileCalls;

import java.io.IOException;
import java.nio.file.Path;

/** {@link FileIo} over a kernel fd. Thread-safe; {@link #close()} once, after every other call has returned. */
final class NativeFileIo implements FileIo {
    private final int fd;

    private NativeFileIo(final int fd) {
        this.fd = fd;
    }

    static FileIo open(final Path path, final boolean readOnly, final boolean create) throws IOException {
        final int flags = (readOnly ? FileCalls.O_RDONLY : FileCalls.O_RDWR) | (create ? FileCalls.O_CREAT : 0);
        return new NativeFileIo(FileCalls.open(path.toString(), flags, 0644));
    }

    @Override
    public long size() throws IOException {
        return FileCalls.size(fd);
    }

    @Override
    public long preadv(final long iov, final int cnt, final long offset) {
        return FileCalls.preadv(fd, iov, cnt, offset);
    }

    @Override
    public long pwritev(final long iov, final int cnt, final long offset) {
        return FileCalls.pwritev(fd, iov, cnt, offset);
    }

    @Override
    public int fdatasync() {
        return FileCalls.fdatasync(fd);
    }

    @Override
    public int truncate(final long length) {
        return FileCalls.ftruncate(fd, length);
    }

    @Override
    public int fallocate(final int mode, final long offset, final long length) {
        return FileCalls.fallocate(fd, mode, offset, length);
    }

    @Override
    public int fadviseDontNeed(final long offset, final long length) {
        return FileCalls.fadviseDontNeed(fd, offset, length);
    }

    @Override
    public int startWriteback(final long offset, final long length) {
        return FileCalls.startWriteback(fd, offset, length);
    }

    @Override
    public long residentPages(final long size) {
        return FileCalls.residentPages(fd, size);
    }

    @Override
    public long allocatedBytes() {
        try {
            return FileCalls.allocatedBytes(fd);
        } catch (final IOException e) {
            return -1;
        }
    }

    @Override
    public void close() {
        FileCalls.close(fd);
    }
}
