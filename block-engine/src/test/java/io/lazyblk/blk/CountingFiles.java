package io.lazyblk.blk;

import io.lazyblk.persistence.FileIo;
import io.lazyblk.persistence.ForwardingFileIo;

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
        return new ForwardingFileIo(files.open(path, readOnly, create)) {
            @Override
            public long preadv(final long iov, final int cnt, final long offset) {
                reads.incrementAndGet();
                return f.preadv(iov, cnt, offset);
            }
        };
    }
}
