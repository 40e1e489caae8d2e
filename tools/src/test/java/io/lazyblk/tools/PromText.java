package io.lazyblk.tools;

import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** Prometheus exposition text, parsed by Prometheus' own Python parser (Debian's python3-prometheus-client). */
final class PromText {
    /** Debian's python3 (the package installs there), not whatever python3 is first on PATH. */
    private static final String PYTHON = "/usr/bin/python3";

    private PromText() {
    }

    /**
     * Every sample as "name{k=v,...}" (labels sorted) to its value; fails if the parser refuses the text. Skips the
     * test, naming the package, where the parser is not installed.
     */
    static Map<String, Double> parse(final String text) throws Exception {
        assumeTrue(new java.io.File(PYTHON).canExecute() && new ProcessBuilder(PYTHON, "-c", "import prometheus_client")
                .redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start().waitFor() == 0,
            "Prometheus' Python client is not installed (apt-get install python3-prometheus-client)");
        final Process p = new ProcessBuilder(PYTHON, "-c", String.join("\n",
            "import sys",
            "from prometheus_client.parser import text_string_to_metric_families",
            "for f in text_string_to_metric_families(sys.stdin.read()):",
            "    for s in f.samples:",
            "        labels = ','.join('%s=%s' % kv for kv in sorted(s.labels.items()))",
            "        print('%s{%s} %r' % (s.name, labels, s.value))")).redirectErrorStream(true).start();
        p.getOutputStream().write(text.getBytes(StandardCharsets.UTF_8));
        p.getOutputStream().close();
        final String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor(), "Prometheus' parser refused the exposition:\n" + out);
        final Map<String, Double> m = new HashMap<>();
        for (final String line : out.split("\n")) {
            if (!line.isBlank()) {
                final int sp = line.lastIndexOf(' ');
                m.put(line.substring(0, sp), Double.parseDouble(line.substring(sp + 1)));
            }
        }
        return m;
    }
}
