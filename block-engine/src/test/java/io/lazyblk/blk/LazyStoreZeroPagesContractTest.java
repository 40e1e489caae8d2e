package io.lazyblk.blk;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.persistence.LocalImage;
import io.lazyblk.persistence.PageStateFile;

import java.util.Arrays;

/**
 * The contract against the lazily filled store over an image where a third of the pages hold only zeros: every write,
 * write-zeroes, read and durability promise holds the same where reads are answered with zeros without I/O.
 */
class LazyStoreZeroPagesContractTest extends BlockBackendContract {
    LazyStoreZeroPagesContractTest() {
        for (int p = 0; p < SIZE / PAGE; p += 3) {
            Arrays.fill(initial, p * PAGE, (p + 1) * PAGE, (byte) 0);
        }
    }

    @Override
    BlockBackend open(final boolean first) throws Exception {
        final MemorySource source = new MemorySource(initial, PAGE, 1);
        source.failShare(0.05);
        final Manifest m = source.manifest();
        if (first) {
            LocalImage.createReserved(IMAGE, SIZE, PAGE, p -> !m.isZeroPage(p), disk);
        }
        final PageStateFile state = PageStateFile.openOrCreate(LazyStoreContractTest.STATE, m.size(), m.pageSize(), m.digest(), disk);
        return new LazyStore(m, LocalImage.open(IMAGE, false, disk), state, source,
            new LazyStore.Options("golden", 1 << 20, 1, 10_000_000_000L));
    }
}
