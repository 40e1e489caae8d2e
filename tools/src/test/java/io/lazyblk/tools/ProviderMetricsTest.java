package io.lazyblk.tools;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.tcp.TcpPageSource;
import io.lazyblk.pull.token.AccessToken;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.lang.foreign.Arena;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * The image server's {@code /metrics}, scraped over HTTP and parsed by Prometheus' own parser: clients connected, the
 * page bytes a real TCP client fetched, and a refused token counted under its reason.
 */
class ProviderMetricsTest {
    private static final int PAGE = 64 << 10;
    private static final byte[] SECRET = "0123456789abcdef0123456789abcdef".getBytes();

    @TempDir
    Path dir;

    @Test
    void shouldCountClientsBytesSentPerImageAndRefusalsByReason() throws Exception {
        final Path golden = TestImage.create(dir.resolve("golden.raw"), 4 << 20, 5);
        try (ImageServer server = ImageServer.start(new InetSocketAddress("127.0.0.1", 0), Map.of("golden", golden), SECRET, PAGE,
                 new ManifestBuilder(dir.resolve("manifests")));
             ProviderMetrics metrics = ProviderMetrics.start(server, new InetSocketAddress("127.0.0.1", 0));
             TcpPageSource source = TcpPageSource.connect(server.address(), "golden",
                 AccessToken.mint(SECRET, "golden", Instant.now().plusSeconds(600)));
             Arena arena = Arena.ofShared()) {
            for (int i = 0; i < 3; i++) {
                final CompletableFuture<Integer> done = new CompletableFuture<>();
                source.fetch(i, 1, arena.allocate(PAGE), PageSource.DEMAND, i, (t, f, c, st) -> done.complete(st));
                assertEquals(PageSource.OK, done.get(10, TimeUnit.SECONDS));
            }
            assertThrows(java.io.IOException.class, () -> TcpPageSource.connect(server.address(), "golden",
                AccessToken.mint("another secret, not the server's".getBytes(), "golden", Instant.now().plusSeconds(600))).close());
            final HttpResponse<String> r = HttpClient.newHttpClient().send(HttpRequest.newBuilder(
                URI.create("http://127.0.0.1:" + metrics.port() + "/metrics")).build(), HttpResponse.BodyHandlers.ofString());
            assertEquals(200, r.statusCode());
            final Map<String, Double> m = PromText.parse(r.body());
            assertEquals(3.0 * PAGE, m.get("lazyblk_provider_bytes_sent_total{image=golden}"), r.body());
            assertEquals(1.0, m.get("lazyblk_provider_refused_total{reason=bad_token}"));
            assertEquals(0.0, m.get("lazyblk_provider_refused_total{reason=connection_limit}"));
            assertEquals(1.0, m.get("lazyblk_provider_clients{}"), "the one client connected");
            assertEquals(3.0, m.get("lazyblk_provider_requests_total{kind=demand}"));
        }
    }
}
