package io.lazyblk.tools.frontend;

/**
 * A log-linear histogram of nanosecond latencies in a fixed {@code long[]} (HdrHistogram's bucket scheme, written
 * small): values below 128 are exact; above, each power of two is split into 64 equal buckets, so a reported
 * value is within 1/128 (0.8%) of every value in its bucket. Values from 0 to 2^41 ns (~37 minutes) are tracked;
 * larger ones count in the last bucket. {@link #record} never allocates.
 *
 * <p>Not thread-safe: one recording thread; merge per-thread histograms afterwards.
 */
public final class LatencyHistogram {
    private static final int SUB_BITS = 7;
    private static final int SUB_COUNT = 1 << SUB_BITS;
    private static final int HALF = SUB_COUNT / 2;
    /** The largest tracked value has its top bit at 40, so the largest shift is 40 - (SUB_BITS - 1). */
    private static final int MAX_SHIFT = 40 - (SUB_BITS - 1);
    private static final long MAX_TRACKED = (1L << 41) - 1;
    private static final int BUCKETS = SUB_COUNT + MAX_SHIFT * HALF;

    private final long[] counts = new long[BUCKETS];
    private long total;
    private long max;

    public void record(final long nanos) {
        final long v = Math.min(Math.max(nanos, 0), MAX_TRACKED);
        counts[index(v)]++;
        total++;
        if (v > max) {
            max = v;
        }
    }

    static int index(final long v) {
        if (v < SUB_COUNT) {
            return (int) v;
        }
        final int shift = 63 - Long.numberOfLeadingZeros(v) - (SUB_BITS - 1); // v >> shift lies in [64, 128)
        return SUB_COUNT + (shift - 1) * HALF + (int) ((v >>> shift) - HALF);
    }

    /** Smallest value that falls in bucket {@code i}. */
    static long lowest(final int i) {
        if (i < SUB_COUNT) {
            return i;
        }
        final int shift = (i - SUB_COUNT) / HALF + 1;
        final long sub = (i - SUB_COUNT) % HALF + HALF;
        return sub << shift;
    }

    static long width(final int i) {
        return i < SUB_COUNT ? 1 : 1L << ((i - SUB_COUNT) / HALF + 1);
    }

    /**
     * The value at {@code percentile} (0..100): the middle of the bucket holding the ⌈p·n⌉-th smallest value.
     * Returns 0 when empty.
     */
    public long valueAtPercentile(final double percentile) {
        if (total == 0) {
            return 0;
        }
        final long rank = Math.max(1, (long) Math.ceil(Math.min(100.0, Math.max(0.0, percentile)) / 100.0 * total));
        long seen = 0;
        for (int i = 0; i < BUCKETS; i++) {
            seen += counts[i];
            if (seen >= rank) {
                return Math.min(max, lowest(i) + width(i) / 2);
            }
        }
        return max;
    }

    public long count() {
        return total;
    }

    /** The largest value recorded (exact, up to the tracked range). */
    public long max() {
        return max;
    }

    /** Adds {@code other}'s counts to this one. */
    public void add(final LatencyHistogram other) {
        for (int i = 0; i < BUCKETS; i++) {
            counts[i] += other.counts[i];
        }
        total += other.total;
        max = Math.max(max, other.max);
    }

    public void reset() {
        java.util.Arrays.fill(counts, 0);
        total = 0;
        max = 0;
    }
}
