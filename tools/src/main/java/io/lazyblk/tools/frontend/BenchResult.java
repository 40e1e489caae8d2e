package io.lazyblk.tools.frontend;

import java.util.Locale;

/**
 * What a benchmark run measured, over the measured window only (warm-up excluded). Immutable.
 *
 * @param ops requests completed in the window (all queues)
 * @param bytes data bytes those requests moved
 * @param errors requests in the window (or its drain) completed with a status other than OK
 * @param seconds length of the measured window
 * @param p50Us median latency in microseconds, submit to completion seen
 * @param p99Us 99th percentile latency in microseconds
 * @param maxUs largest latency in microseconds
 * @param kicks kick eventfd writes over the whole run (warm-up and drain included)
 * @param allocatedBytes heap bytes the queue threads allocated during the measured window (0 if the JVM cannot tell)
 * @param cpuSeconds CPU time the queue threads used during the measured window (-1 if the JVM cannot tell): about
 *     {@code seconds} per queue when they spin, much less when they sleep between completions
 * @param sleeps poll(2) calls the queue threads made on their call eventfds over the whole run (0 when they spin)
 * @param wakeups how many of those returned because the back end signalled
 */
public record BenchResult(long ops, long bytes, long errors, double seconds, double p50Us, double p99Us, double maxUs,
                          long kicks, long allocatedBytes, double cpuSeconds, long sleeps, long wakeups) {
    public double iops() {
        return ops / seconds;
    }

    /** Megabytes (10^6 bytes, as fio's MB/s) per second. */
    public double mbps() {
        return bytes / seconds / 1e6;
    }

    /** {@code iops=… mbps=… p50_us=… p99_us=…}. */
    public String line() {
        return String.format(Locale.ROOT, "iops=%.0f mbps=%.1f p50_us=%.1f p99_us=%.1f", iops(), mbps(), p50Us, p99Us);
    }

    /**
     * Counters behind the numbers:
     * {@code ops=… errors=… kicks=… max_us=… allocated_bytes=… cpu_s=… sleeps=… wakeups=…}.
     */
    public String details() {
        return String.format(Locale.ROOT, "ops=%d errors=%d kicks=%d max_us=%.1f allocated_bytes=%d cpu_s=%.3f sleeps=%d wakeups=%d",
            ops, errors, kicks, maxUs, allocatedBytes, cpuSeconds, sleeps, wakeups);
    }

    @Override
    public String toString() {
        return line();
    }
}
