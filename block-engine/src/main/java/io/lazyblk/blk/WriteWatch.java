package io.lazyblk.blk;

/**
 * Told of every range the guest changed (write, write zeroes, discard), after the backend did it, whether it succeeded
 * or not (a failed write may have changed part of its range). A live migration's export tracks with it which pages
 * changed after the destination fetched them. Called on request threads: must not allocate, block or log.
 */
@FunctionalInterface
public interface WriteWatch {
    void written(long offset, long length);
}
