package io.lazyblk.tools;

import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code /metrics} of a real engine, scraped over HTTP and parsed by Prometheus' own text parser (Debian's
 * python3-prometheus-client): the counters equal what a front end's requests completed, the histogram counts them all,
 * and a scraper that asks for protobuf gets it, not an error.
 */
class EngineMetricsTest {
    @TempDir
    Path dir;

    @Test
    void shouldCountWhatTheFrontEndsRequestsCompletedAndParseAsPrometheusText() throws Exception {
        final Path img = Files.write(dir.resolve("disk.img"), new byte[4 << 20]);
        try (Engine engine = Engine.start(Engine.Options.file(dir.resolve("m.sock"), img));
             EngineMetrics metrics = EngineMetrics.start(engine, new InetSocketAddress("127.0.0.1", 0))) {
            try (VhostUserFrontend fe = FrontEnds.connect(dir.resolve("m.sock"))) {
                final BlkClient blk = FrontEnds.client(fe, 0);
                for (int i = 0; i < 5; i++) {
                    assertEquals(VirtioBlk.S_OK, blk.write(8L * i, TestImage.pattern(4096, i)));
                }
                for (int i = 0; i < 7; i++) {
                    assertEquals(VirtioBlk.S_OK, blk.read(8L * i, 8192).status());
                }
                assertEquals(VirtioBlk.S_OK, blk.flush());
                assertEquals(VirtioBlk.S_OK, blk.flush());
                assertEquals(VirtioBlk.S_IOERR, blk.read((4L << 20) / 512, 4096).status(), "a read past the end fails");
            }
            final HttpClient http = HttpClient.newHttpClient();
            final URI uri = URI.create("http://127.0.0.1:" + metrics.port() + "/metrics");
            final HttpResponse<String> text = http.send(HttpRequest.newBuilder(uri).build(), HttpResponse.BodyHandlers.ofString());
            assertEquals(200, text.statusCode());
            final Map<String, Double> m = PromText.parse(text.body());
            assertEquals(5.0, m.get("lazyblk_requests_total{op=write}"), text.body());
            assertEquals(8.0, m.get("lazyblk_requests_total{op=read}"), "7 reads and the failed one");
            assertEquals(2.0, m.get("lazyblk_requests_total{op=flush}"));
            assertEquals(1.0, m.get("lazyblk_request_errors_total{op=read}"));
            assertEquals(0.0, m.get("lazyblk_request_errors_total{op=write}"));
            assertEquals(5.0 * 4096, m.get("lazyblk_bytes_total{op=write}"));
            assertEquals(7.0 * 8192, m.get("lazyblk_bytes_total{op=read}"));
            assertEquals(15.0, m.get("lazyblk_request_duration_seconds_count{}"), "every request in the histogram");
            assertEquals(15.0, m.get("lazyblk_request_duration_seconds_bucket{le=+Inf}"));
            assertTrue(m.get("lazyblk_request_duration_seconds_sum{}") > 0);
            assertEquals(1.0, m.get("lazyblk_mode{mode=disk-only}"));
            assertEquals(1.0, m.get("lazyblk_storage_ok{}"));

            // A scraper that asks for protobuf gets protobuf, not an HTTP 500.
            final HttpResponse<byte[]> proto = http.send(HttpRequest.newBuilder(uri).header("Accept",
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited").build(),
                HttpResponse.BodyHandlers.ofByteArray());
            assertEquals(200, proto.statusCode());
            assertTrue(proto.headers().firstValue("Content-Type").orElse("").contains("protobuf"), proto.headers().toString());
            assertTrue(proto.body().length > 0);
        }
    }
}
