package io.lazyblk.tools.frontend;

import java.nio.file.Path;

/**
 * One benchmark run. Immutable.
 *
 * @param socket the back end's vhost-user socket
 * @param pattern random or sequential, read or write
 * @param blockSize bytes per request, a multiple of 512
 * @param iodepth requests kept in flight per queue
 * @param seconds measured time, after a {@link BenchRunner#WARMUP_SECONDS} s warm-up
 * @param queues virtqueues, one thread each
 * @param seed seeds the random offsets (queue {@code i} uses a stream derived from {@code seed} and {@code i})
 * @param distinctStride see {@link #withDistinctStrides}; 0 for none
 * @param singlePass see {@link #withSinglePass}
 * @param waitMode how the queue threads wait for completions: spinning (the default) or sleeping on the call eventfd
 */
public record BenchOptions(Path socket, BenchPattern pattern, int blockSize, int iodepth, int seconds, int queues,
                           long seed, long distinctStride, boolean singlePass, BenchWait waitMode) {
    /** A queue holds at most 1024 entries in QEMU; three descriptors per request without indirect tables. */
    public static final int MAX_IODEPTH = 1024 / 3;

    public BenchOptions {
        if (blockSize < 512 || blockSize % 512 != 0) {
            throw new IllegalArgumentException("block size must be a positive multiple of 512, got " + blockSize);
        }
        if (iodepth < 1 || iodepth > MAX_IODEPTH) {
            throw new IllegalArgumentException("iodepth must be 1.." + MAX_IODEPTH + ", got " + iodepth);
        }
        if (seconds < 1) {
            throw new IllegalArgumentException("seconds must be at least 1, got " + seconds);
        }
        if (queues < 1 || queues > 64) {
            throw new IllegalArgumentException("queues must be 1..64, got " + queues);
        }
        if (distinctStride < 0 || distinctStride % blockSize != 0) {
            throw new IllegalArgumentException("distinct stride " + distinctStride + " must be a multiple of the block size " + blockSize);
        }
        if (waitMode == null) {
            throw new IllegalArgumentException("no wait mode given");
        }
        if (singlePass && (pattern.random || distinctStride > 0)) {
            throw new IllegalArgumentException("a single pass is for sequential patterns, not " + pattern
                + (distinctStride > 0 ? " with distinct strides" : ""));
        }
    }

    public BenchOptions(final Path socket, final BenchPattern pattern, final int blockSize, final int iodepth, final int seconds,
                        final int queues, final long seed) {
        this(socket, pattern, blockSize, iodepth, seconds, queues, seed, 0, false, BenchWait.POLL);
    }

    /**
     * Random reads that each start a stride no earlier read touched (strides in a random order), and stop when every
     * stride was read once: with the stride of a lazily filled disk's pages, every read is a demand miss.
     */
    public BenchOptions withDistinctStrides(final long stride) {
        return new BenchOptions(socket, pattern, blockSize, iodepth, seconds, queues, seed, stride, singlePass, waitMode);
    }

    /**
     * Sequential requests measured from the first, with no warm-up, stopping after one pass over the disk (or after
     * {@code seconds}): for a lazily filled disk, every page is then read as it first arrives, never again once local.
     * For a JVM whose code paths earlier runs warmed up.
     */
    public BenchOptions withSinglePass() {
        return new BenchOptions(socket, pattern, blockSize, iodepth, seconds, queues, seed, distinctStride, true, waitMode);
    }

    /** The same run with its queue threads waiting for completions as {@code w} says. */
    public BenchOptions withWait(final BenchWait w) {
        return new BenchOptions(socket, pattern, blockSize, iodepth, seconds, queues, seed, distinctStride, singlePass, w);
    }

    /** The same run against another back end's socket. */
    public BenchOptions withSocket(final Path s) {
        return new BenchOptions(s, pattern, blockSize, iodepth, seconds, queues, seed, distinctStride, singlePass, waitMode);
    }
}
