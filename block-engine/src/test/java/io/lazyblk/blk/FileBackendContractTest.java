package io.lazyblk.blk;

import io.lazyblk.persistence.LocalImage;

/** The contract against the local file backend. */
class FileBackendContractTest extends BlockBackendContract {
    @Override
    BlockBackend open(final boolean first) throws Exception {
        if (first) {
            disk.put(IMAGE, initial);
        }
        return new FileBackend(LocalImage.open(IMAGE, false, disk));
    }
}
