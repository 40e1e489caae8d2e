package io.lazyblk.blk;

/**
 * Power-of-two latency buckets for the metrics' histograms: bucket {@code i} counts durations up to
 * {@code 2^(10 + i)} ns (1.024 µs, 2.048 µs, ... 17.2 s), the last one everything longer. One shift and a
 * count-leading-zeros per observation, no search.
 */
public final class LatencyBuckets {
    /** Finite buckets, plus one for everything longer. */
    public static final int COUNT = 25;
    private static final int FIRST_SHIFT = 10;

    private LatencyBuckets() {
    }

    /** The bucket of a duration of {@code nanos}. */
    public static int of(final long nanos) {
        if (nanos <= 1L << FIRST_SHIFT) {
            return 0;
        }
        final int i = 64 - Long.numberOfLeadingZeros(nanos - 1) - FIRST_SHIFT; // ceil(log2(nanos)) - 10
        return Math.min(i, COUNT);
    }

    /** The upper bound of bucket {@code i} (&lt; {@link #COUNT}) in seconds. */
    public static double upperSeconds(final int i) {
        return (1L << (FIRST_SHIFT + i)) / 1e9;
    }
}
