package io.lazyblk.blk;

import io.lazyblk.persistence.FileIo;

import java.io.IOException;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicLong;

/** Files of another {@link FileIo.Opener} (a simulated disk, the kernel's), with their reads counted: a test sees I/O that should not happen. */
final class CountingFiles implements FileIo.Opener {
    private final FileIo.Opener files;
    final AtomicLong reads = new AtomicLong();

    CountingFiles(final FileIo.Opener files) {
        this.files = files;
    }

    @Override
    public FileIo open(final Path path, final boolean readOnly, final boolean create) throws IOException {
        final FileIo f = files.open(path, readOnly, create);
        return new FileIo() {
            @Override
            public long size() throws IOException {
                return f.size();
            }

            @Override
            public long preadv(final long iov, final int cnt, final long offset) {
                reads.incrementAndGet();
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
            public long allocatedBytes() {
                return f.allocatedBytes();
            }

            @Override
            public void close() {
                f.close();
            }
        };
    }
}
