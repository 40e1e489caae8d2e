package io.lazyblk.blk;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;

/**
 * What one queue answered, for the metrics: per operation the requests, the errors and the bytes, and a histogram of
 * the time from taking a request off the ring to publishing its answer. Written only by whoever holds the queue's used
 * side (one thread at a time: the used lease orders them), with opaque stores: no lock, no allocation, no atomic
 * read-modify-write on the data path. Read at scrape time with opaque loads: each value whole, possibly a request behind.
 */
public final class QueueStats {
    /** The operations, by index; the metrics' {@code op} label. */
    public static final String[] OPS = {"read", "write", "flush", "discard", "write_zeroes", "get_id", "other"};
    private static final VarHandle LONGS = MethodHandles.arrayElementVarHandle(long[].class);
    /** requests, errors, bytes per operation. */
    private final long[] counts = new long[OPS.length * 3];
    /** Buckets then the sum of nanoseconds, last. */
    private final long[] latency = new long[LatencyBuckets.COUNT + 2];

    static int op(final int type) {
        return switch (type) {
            case VirtioBlk.T_IN -> 0;
            case VirtioBlk.T_OUT -> 1;
            case VirtioBlk.T_FLUSH -> 2;
            case VirtioBlk.T_DISCARD -> 3;
            case VirtioBlk.T_WRITE_ZEROES -> 4;
            case VirtioBlk.T_GET_ID -> 5;
            default -> 6;
        };
    }

    private void add(final long[] a, final int i, final long v) {
        LONGS.setOpaque(a, i, (long) LONGS.getOpaque(a, i) + v); // single writer (the used lease): no lost update
    }

    /** A request answered at {@code now} (nanoTime); under the queue's used lease. */
    void answered(final BlkRequest r, final long now) {
        final int base = op(r.type) * 3;
        add(counts, base, 1);
        if (r.status != VirtioBlk.S_OK) {
            add(counts, base + 1, 1);
        }
        final long bytes = r.type == VirtioBlk.T_DISCARD || r.type == VirtioBlk.T_WRITE_ZEROES ? r.dwzLength : r.dataBytes;
        if (r.status == VirtioBlk.S_OK && bytes > 0) {
            add(counts, base + 2, bytes);
        }
        if (now != 0 && r.takenNanos != 0) { // timed (metrics are scraped), and taken while timed
            final long d = Math.max(0, now - r.takenNanos);
            add(latency, LatencyBuckets.of(d), 1);
            add(latency, LatencyBuckets.COUNT + 1, d);
        }
    }

    /** Adds this queue's counts into {@code into} (requests, errors, bytes per op) and latency into {@code lat}. */
    public void addTo(final long[] into, final long[] lat) {
        for (int i = 0; i < counts.length; i++) {
            into[i] += (long) LONGS.getOpaque(counts, i);
        }
        for (int i = 0; i < latency.length; i++) {
            lat[i] += (long) LONGS.getOpaque(latency, i);
        }
    }

    public static long[] newCounts() {
        return new long[OPS.length * 3];
    }

    /** LatencyBuckets.COUNT + 1 buckets, then the sum of nanoseconds. */
    public static long[] newLatency() {
        return new long[LatencyBuckets.COUNT + 2];
    }
}
