package io.lazyblk.blk;

/** The contract against the null backend: every request completes, no data is kept. */
class NullBackendContractTest extends BlockBackendContract {
    @Override
    BlockBackend open(final boolean first) {
        return new NullBackend(SIZE);
    }

    @Override
    boolean storesData() {
        return false;
    }
}
