package io.lazyblk.tools;

import io.prometheus.metrics.exporter.httpserver.HTTPServer;
import io.prometheus.metrics.model.registry.MultiCollector;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import io.prometheus.metrics.model.snapshots.CounterSnapshot;
import io.prometheus.metrics.model.snapshots.GaugeSnapshot;
import io.prometheus.metrics.model.snapshots.Labels;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.Map;

/**
 * {@code /metrics} over HTTP for one collector, in the Prometheus formats the scraper asks for (text, OpenMetrics,
 * protobuf), on one daemon thread ("metrics"): what {@code serve --metrics} and {@code image-server --metrics} run.
 */
final class MetricsEndpoint implements AutoCloseable {
    private final HTTPServer server;

    MetricsEndpoint(final MultiCollector collector, final InetSocketAddress listen) throws IOException {
        final PrometheusRegistry registry = new PrometheusRegistry();
        registry.register(collector);
        this.server = HTTPServer.builder().inetAddress(listen.getAddress()).port(listen.getPort()).registry(registry)
            .executorService(java.util.concurrent.Executors.newSingleThreadExecutor(r -> {
                final Thread t = new Thread(r, "metrics");
                t.setDaemon(true);
                return t;
            })).buildAndStart();
    }

    int port() {
        return server.getPort();
    }

    static GaugeSnapshot gauge(final String name, final String help, final double v) {
        return GaugeSnapshot.builder().name(name).help(help).dataPoint(GaugeSnapshot.GaugeDataPointSnapshot.builder().value(v).build())
            .build();
    }

    /** A counter with one data point per entry of {@code values}, labelled {@code label}=key. */
    static CounterSnapshot counter(final String name, final String help, final String label, final Map<String, Long> values) {
        final CounterSnapshot.Builder b = CounterSnapshot.builder().name(name).help(help);
        values.forEach((k, v) -> b.dataPoint(CounterSnapshot.CounterDataPointSnapshot.builder().labels(Labels.of(label, k)).value(v).build()));
        return b.build();
    }

    @Override
    public void close() {
        server.close();
    }
}
