package io.lazyblk.tools.frontend;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class LatencyHistogramTest {
    @Test
    void shouldReportSmallValuesExactly() {
        final LatencyHistogram h = new LatencyHistogram();
        for (int v = 1; v <= 100; v++) {
            h.record(v);
        }

        assertEquals(50, h.valueAtPercentile(50));
        assertEquals(99, h.valueAtPercentile(99));
        assertEquals(100, h.valueAtPercentile(100));
    }

    @Test
    void shouldStayWithinOnePercentOverSixDecades() {
        final LatencyHistogram h = new LatencyHistogram();
        for (long v = 1000; v <= 1_000_000_000L; v += 997) {
            h.record(v);
        }
        final double n = (1_000_000_000L - 1000) / 997.0;

        for (final double p : new double[] {10, 50, 90, 99, 99.9}) {
            final double exact = 1000 + (p / 100 * n - 1) * 997;
            final double got = h.valueAtPercentile(p);
            assertTrue(Math.abs(got - exact) / exact < 0.01, "p" + p + ": " + got + " vs " + exact);
        }
    }

    @Test
    void shouldMapEveryBucketBackToTheValuesItHolds() {
        for (long v = 0; v < 1 << 20; v += 7) {
            final int i = LatencyHistogram.index(v);
            assertTrue(LatencyHistogram.lowest(i) <= v && v < LatencyHistogram.lowest(i) + LatencyHistogram.width(i), "value " + v);
        }
        final long huge = (1L << 41) - 1;
        final int last = LatencyHistogram.index(huge);
        assertTrue(LatencyHistogram.lowest(last) <= huge);
    }

    @Test
    void shouldSeeTailOfBimodalDistribution() {
        final LatencyHistogram h = new LatencyHistogram();
        for (int i = 0; i < 980; i++) {
            h.record(10_000);
        }
        for (int i = 0; i < 20; i++) {
            h.record(5_000_000);
        }

        assertEquals(10_000, h.valueAtPercentile(50), 100);
        assertEquals(5_000_000, h.valueAtPercentile(99), 50_000);
        assertEquals(5_000_000, h.max());
    }

    @Test
    void shouldMergePerThreadHistograms() {
        final LatencyHistogram a = new LatencyHistogram();
        final LatencyHistogram b = new LatencyHistogram();
        a.record(100);
        b.record(300);
        b.record(-5); // clamped to 0, never an exception on the hot path

        a.add(b);

        assertEquals(3, a.count());
        assertEquals(300, a.max(), 3);
        assertEquals(0, a.valueAtPercentile(1));
    }
}
