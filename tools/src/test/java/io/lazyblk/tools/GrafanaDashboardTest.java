package io.lazyblk.tools;

import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;
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
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The Grafana dashboard shipped in {@code tools/grafana} against what a real lazy engine and a real image server
 * expose: the file is JSON, every metric and label its queries, legends and variables name exists in the scraped
 * {@code /metrics}, and every metric family exposed has a panel. A renamed metric breaks the test, not the operator's
 * dashboard.
 */
class GrafanaDashboardTest {
    private static final Path DASHBOARD = Path.of("").toAbsolutePath().getParent().resolve("tools/grafana/lazyblk-dashboard.json");
    private static final String PYTHON = "/usr/bin/python3";
    private static final int PAGE = 64 << 10;
    private static final byte[] SECRET = "0123456789abcdef0123456789abcdef".getBytes(StandardCharsets.US_ASCII);
    /** Labels Prometheus adds at scrape time or that belong to a histogram's series. */
    private static final Set<String> SCRAPE_LABELS = Set.of("instance", "job", "le");
    private static final Pattern METRIC = Pattern.compile("\\blazyblk_[a-z_]+");
    private static final Pattern BY = Pattern.compile("\\bby \\(([^)]*)\\)");
    private static final Pattern MATCHER = Pattern.compile("([a-z_]+)\\s*=~?\\s*\"");
    private static final Pattern LEGEND = Pattern.compile("\\{\\{\\s*([a-z_]+)\\s*}}");

    @TempDir
    Path dir;

    @Test
    void shouldQueryOnlyWhatTheEngineAndTheImageServerExposeAndShowAllOfIt() throws Exception {
        assumeTrue(Files.isExecutable(Path.of(PYTHON)), "python3 is not installed (apt-get install python3)");
        // Every query, legend and variable of the dashboard, as Python's json module reads the file.
        final Process p = new ProcessBuilder(PYTHON, "-c", String.join("\n",
            "import json, sys",
            "d = json.load(open(sys.argv[1]))",
            "def walk(ps):",
            "    for p in ps:",
            "        for t in p.get('targets', []):",
            "            print('expr\\t%s\\t%s\\t%s' % (p['title'], t['expr'], t.get('legendFormat', '')))",
            "        walk(p.get('panels', []))",
            "walk(d['panels'])",
            "for v in d['templating']['list']:",
            "    print('var\\t%s\\t%s\\t' % (v['name'], v['query']['query']))"), DASHBOARD.toString())
            .redirectErrorStream(true).start();
        final String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor(), DASHBOARD + " is not JSON Grafana can import:\n" + out);

        final Map<String, Set<String>> exposed = new HashMap<>();
        final Path golden = TestImage.create(dir.resolve("golden.raw"), 4 << 20, 9);
        try (ImageServer server = ImageServer.start(new InetSocketAddress("127.0.0.1", 0), Map.of("golden", golden), SECRET, PAGE,
                 new ManifestBuilder(dir.resolve("manifests")));
             ProviderMetrics providerMetrics = ProviderMetrics.start(server, new InetSocketAddress("127.0.0.1", 0));
             Engine engine = Engine.startLazy(Engine.Options.file(dir.resolve("g.sock"), dir.resolve("local.img")),
                 new Engine.LazySource(server.address(), "golden", AccessToken.mint(SECRET, "golden", Instant.now().plusSeconds(600)),
                     4L << 20, 1L << 20, Duration.ofSeconds(30)));
             EngineMetrics engineMetrics = EngineMetrics.start(engine, new InetSocketAddress("127.0.0.1", 0))) {
            try (VhostUserFrontend fe = FrontEnds.connect(dir.resolve("g.sock"))) {
                final BlkClient blk = FrontEnds.client(fe, 0);
                assertEquals(VirtioBlk.S_OK, blk.read(((2L << 20) / 512), 4096).status(), "a demand miss");
                assertEquals(VirtioBlk.S_OK, blk.write(0, TestImage.pattern(4096, 1)));
            }
            addSeries(exposed, scrape(engineMetrics.port()));
            addSeries(exposed, scrape(providerMetrics.port()));
        }

        final List<String> problems = new ArrayList<>();
        final Set<String> shown = new TreeSet<>();
        for (final String line : out.split("\n")) {
            if (line.isBlank()) {
                continue;
            }
            final String[] f = line.split("\t", -1);
            final String where = f[0] + " '" + f[1] + "': " + f[2];
            final Set<String> labels = new HashSet<>(SCRAPE_LABELS);
            final Matcher m = METRIC.matcher(f[2]);
            int metrics = 0;
            while (m.find()) {
                metrics++;
                final Set<String> l = exposed.get(m.group());
                if (l == null) {
                    problems.add(where + ": no metric " + m.group() + " is exposed");
                } else {
                    labels.addAll(l);
                    shown.add(family(m.group()));
                }
            }
            if (metrics == 0) {
                problems.add(where + ": names no lazyblk metric");
            }
            final List<String> used = new ArrayList<>();
            final Matcher by = BY.matcher(f[2]);
            while (by.find()) {
                for (final String l : by.group(1).split(",")) {
                    used.add(l.strip());
                }
            }
            final Matcher eq = MATCHER.matcher(f[2]);
            while (eq.find()) {
                used.add(eq.group(1));
            }
            final Matcher legend = LEGEND.matcher(f[3]);
            while (legend.find()) {
                used.add(legend.group(1));
            }
            for (final String l : used) {
                if (!labels.contains(l)) {
                    problems.add(where + ": label " + l + " is on none of its metrics");
                }
            }
        }
        final Set<String> families = new TreeSet<>();
        exposed.keySet().forEach(n -> families.add(family(n)));
        families.removeAll(shown);
        for (final String missing : families) {
            problems.add("no panel shows " + missing);
        }
        assertTrue(problems.isEmpty(), String.join("\n", problems) + "\nexposed: " + exposed);
    }

    private static Map<String, Double> scrape(final int port) throws Exception {
        final HttpResponse<String> r = HttpClient.newHttpClient().send(HttpRequest.newBuilder(
            URI.create("http://127.0.0.1:" + port + "/metrics")).build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode());
        return PromText.parse(r.body());
    }

    /** Series "name{k=v,...}" into metric name to label names. */
    private static void addSeries(final Map<String, Set<String>> into, final Map<String, Double> series) {
        for (final String s : series.keySet()) {
            final int brace = s.indexOf('{');
            final Set<String> labels = into.computeIfAbsent(s.substring(0, brace), k -> new HashSet<>());
            final String inner = s.substring(brace + 1, s.length() - 1);
            if (!inner.isEmpty()) {
                for (final String kv : inner.split(",")) {
                    labels.add(kv.substring(0, kv.indexOf('=')));
                }
            }
        }
    }

    /** A histogram's or counter's family: its series without _bucket, _count, _sum, _created. */
    private static String family(final String series) {
        return series.replaceAll("_(bucket|count|sum|created)$", "");
    }
}
