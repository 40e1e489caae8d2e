package io.lazyblk.blk;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.persistence.LocalImage;
import io.lazyblk.persistence.PageStateFile;

import java.nio.file.Path;

/** The contract against the lazily filled store: the image comes from a source, reads of absent pages park. */
class LazyStoreContractTest extends BlockBackendContract {
    static final Path STATE = PageStateFile.beside(IMAGE);

    @Override
    BlockBackend open(final boolean first) throws Exception {
        final MemorySource source = new MemorySource(initial, PAGE, 1);
        source.failShare(0.05); // transient failures the store retries
        final Manifest m = source.manifest();
        if (first) {
            LocalImage.createReserved(IMAGE, SIZE, disk);
        }
        final PageStateFile state = PageStateFile.openOrCreate(STATE, m.size(), m.pageSize(), m.digest(), disk);
        // The background fill held to a byte a second: every read of an absent page parks on its demand fetch, and no
        // background write takes a fault a test injects for the guest's write (SimulatedDisk counts every write).
        return new LazyStore(m, LocalImage.open(IMAGE, false, disk), state, source,
            new LazyStore.Options("golden", 1 << 20, 1, 10_000_000_000L));
    }
}
