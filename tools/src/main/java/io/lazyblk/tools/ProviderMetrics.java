package io.lazyblk.tools;

import io.lazyblk.pull.provider.ImageServer;
import io.prometheus.metrics.model.registry.MultiCollector;
import io.prometheus.metrics.model.snapshots.MetricSnapshots;

import java.io.IOException;
import java.net.InetSocketAddress;

/**
 * {@code image-server --metrics HOST:PORT}: the provider's {@code /metrics}: clients connected, page bytes sent per
 * image, connections refused by reason, requests served. Read from the server's counters at scrape time.
 */
final class ProviderMetrics implements MultiCollector, AutoCloseable {
    private final ImageServer provider;
    private final MetricsEndpoint endpoint;

    private ProviderMetrics(final ImageServer provider, final InetSocketAddress listen) throws IOException {
        this.provider = provider;
        this.endpoint = new MetricsEndpoint(this, listen);
    }

    static ProviderMetrics start(final ImageServer provider, final InetSocketAddress listen) throws IOException {
        return new ProviderMetrics(provider, listen);
    }

    int port() {
        return endpoint.port();
    }

    @Override
    public MetricSnapshots collect() {
        final ImageServer.Stats s = provider.stats();
        return MetricSnapshots.of(
            MetricsEndpoint.gauge("lazyblk_provider_clients", "client connections open now", s.open()),
            MetricsEndpoint.counter("lazyblk_provider_bytes_sent", "page bytes sent, per exported image", "image",
                provider.bytesSentByImage()),
            MetricsEndpoint.counter("lazyblk_provider_refused", "connections refused, by reason", "reason",
                provider.refusedByReason()),
            MetricsEndpoint.counter("lazyblk_provider_requests", "page requests answered", "kind",
                java.util.Map.of("all", s.requests(), "demand", s.demandRequests())));
    }

    @Override
    public void close() {
        endpoint.close();
    }
}
