package io.lazyblk.tools;

import io.lazyblk.blk.LatencyBuckets;
import io.lazyblk.blk.LazyStore;
import io.lazyblk.blk.QueueStats;
import io.prometheus.metrics.model.registry.MultiCollector;
import io.prometheus.metrics.model.snapshots.ClassicHistogramBuckets;
import io.prometheus.metrics.model.snapshots.CounterSnapshot;
import io.prometheus.metrics.model.snapshots.GaugeSnapshot;
import io.prometheus.metrics.model.snapshots.HistogramSnapshot;
import io.prometheus.metrics.model.snapshots.Labels;
import io.prometheus.metrics.model.snapshots.MetricSnapshot;
import io.prometheus.metrics.model.snapshots.MetricSnapshots;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * {@code serve --metrics HOST:PORT}: the engine's {@code /metrics} in the Prometheus formats (text, OpenMetrics, and
 * protobuf for scrapers that ask for it), on one daemon thread. Everything is read at scrape time: the queues count
 * without sharing or locking ({@link QueueStats}) and the scrape adds them up; the lazy store's figures and the
 * status are read as {@code lazyblk status} reads them.
 */
final class EngineMetrics implements MultiCollector, AutoCloseable {
    private final Engine engine;
    private final MetricsEndpoint server;

    private EngineMetrics(final Engine engine, final InetSocketAddress listen) throws IOException {
        this.engine = engine;
        this.server = new MetricsEndpoint(this, listen);
        engine.timeRequests(true); // the latency histogram: only while metrics are served
    }

    static EngineMetrics start(final Engine engine, final InetSocketAddress listen) throws IOException {
        return new EngineMetrics(engine, listen);
    }

    int port() {
        return server.port();
    }

    @Override
    public MetricSnapshots collect() {
        final List<MetricSnapshot> out = new ArrayList<>();
        final long[] counts = QueueStats.newCounts();
        final long[] latency = QueueStats.newLatency();
        engine.answered(counts, latency);
        out.add(perOp("lazyblk_requests", "requests answered, by operation", counts, 0));
        out.add(perOp("lazyblk_request_errors", "requests answered with an error status, by operation", counts, 1));
        out.add(perOp("lazyblk_bytes", "bytes read, written, discarded or zeroed by requests that succeeded, by operation", counts, 2));
        out.add(histogram("lazyblk_request_duration_seconds", "time from taking a request off its ring to publishing its answer"
            + " (requests taken while metrics are served)",
            latency));
        final Map<String, String> status = engine.status();
        final LazyStore lazy = engine.lazyStore();
        final String mode = status.getOrDefault("mode", "disk-only");
        final GaugeSnapshot.Builder modes = GaugeSnapshot.builder().name("lazyblk_mode")
            .help("the engine's mode: 1 for the current one (lazy, disk-only, standby, handed-over)");
        for (final String m : new String[] {"lazy", "disk-only", "standby", "handed-over"}) {
            modes.dataPoint(GaugeSnapshot.GaugeDataPointSnapshot.builder().labels(Labels.of("mode", m)).value(m.equals(mode) ? 1 : 0).build());
        }
        out.add(modes.build());
        out.add(gauge("lazyblk_pages_local", "pages of the image that are local (the whole image once disk-only)",
            Double.parseDouble(status.getOrDefault("pages_local", "0"))));
        out.add(gauge("lazyblk_pages_total", "pages of the image", Double.parseDouble(status.getOrDefault("pages_total", "0"))));
        final CounterSnapshot.Builder fetched = CounterSnapshot.builder().name("lazyblk_fetch_bytes")
            .help("bytes fetched from the sources: on demand (a guest read waited) or in the background");
        fetched.dataPoint(CounterSnapshot.CounterDataPointSnapshot.builder().labels(Labels.of("class", "demand"))
            .value(lazy != null ? lazy.bytesFetchedOnDemand() : 0).build());
        fetched.dataPoint(CounterSnapshot.CounterDataPointSnapshot.builder().labels(Labels.of("class", "background"))
            .value(lazy != null ? lazy.bytesFetchedInBackground() : 0).build());
        out.add(fetched.build());
        final long[] misses = QueueStats.newLatency();
        if (lazy != null) {
            lazy.demandMissLatency(misses);
        }
        out.add(histogram("lazyblk_demand_miss_duration_seconds", "time from a demand fetch's first attempt to its page's bytes",
            misses));
        final GaugeSnapshot.Builder up = GaugeSnapshot.builder().name("lazyblk_source_up")
            .help("whether each --source is connected (1) or not (0), nearest first");
        for (final Map.Entry<String, String> e : status.entrySet()) {
            if (e.getKey().startsWith("source.")) {
                final String v = e.getValue();
                final int sp = v.lastIndexOf(' ');
                up.dataPoint(GaugeSnapshot.GaugeDataPointSnapshot.builder().labels(Labels.of("source", v.substring(0, sp)))
                    .value(v.endsWith(" up") ? 1 : 0).build());
            }
        }
        out.add(up.build());
        out.add(gauge("lazyblk_storage_ok", "1 while the storage is healthy, 0 once a write or sync failed (sticky)",
            "ok".equals(status.get("storage")) ? 1 : 0));
        return new MetricSnapshots(out);
    }

    private static CounterSnapshot perOp(final String name, final String help, final long[] counts, final int which) {
        final CounterSnapshot.Builder b = CounterSnapshot.builder().name(name).help(help);
        for (int op = 0; op < QueueStats.OPS.length; op++) {
            b.dataPoint(CounterSnapshot.CounterDataPointSnapshot.builder().labels(Labels.of("op", QueueStats.OPS[op]))
                .value(counts[op * 3 + which]).build());
        }
        return b.build();
    }

    private static GaugeSnapshot gauge(final String name, final String help, final double v) {
        return MetricsEndpoint.gauge(name, help, v);
    }

    /** {@code latency}: {@link LatencyBuckets#COUNT} finite buckets, the +Inf one, then the sum of nanoseconds. */
    static HistogramSnapshot histogram(final String name, final String help, final long[] latency) {
        final double[] bounds = new double[LatencyBuckets.COUNT + 1];
        final long[] counts = new long[LatencyBuckets.COUNT + 1];
        for (int i = 0; i <= LatencyBuckets.COUNT; i++) {
            bounds[i] = i < LatencyBuckets.COUNT ? LatencyBuckets.upperSeconds(i) : Double.POSITIVE_INFINITY;
            counts[i] = latency[i];
        }
        return HistogramSnapshot.builder().name(name).help(help).dataPoint(HistogramSnapshot.HistogramDataPointSnapshot.builder()
            .classicHistogramBuckets(ClassicHistogramBuckets.of(bounds, counts)).sum(latency[LatencyBuckets.COUNT + 1] / 1e9).build())
            .build();
    }

    @Override
    public void close() {
        server.close();
        engine.timeRequests(false);
    }
}
