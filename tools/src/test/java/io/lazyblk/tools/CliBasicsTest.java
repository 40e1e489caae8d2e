package io.lazyblk.tools;

import io.lazyblk.tools.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The basics a newcomer expects from every command: a version from the build, sizes with binary units and fractions,
 * durations with units, log lines with a date and the thread and a --log-level, status as JSON and watched.
 */
class CliBasicsTest {
    @TempDir
    Path dir;

    @Test
    void shouldPrintTheVersionTheBuildWrote() {
        final CliRun r = CliRun.run("--version");
        assertEquals(0, r.code());
        assertTrue(r.out().lines().findFirst().orElse("").matches("lazyblk \\d+\\.\\d+\\.\\d+(-SNAPSHOT)? \\(built \\d{4}-\\d\\d-\\d\\dT.*\\)"),
            r.out());
    }

    @Test
    void shouldTakeSizesInBinaryUnitsWithFractionsOfWholeBytes() {
        assertEquals(1536L << 20, SizeConverter.parse("1.5G"));
        assertEquals(64L << 10, SizeConverter.parse("64k"));
        assertEquals(1L << 30, SizeConverter.parse("1GiB"));
        assertEquals(4096L, SizeConverter.parse("4096"));
        final Exception e = assertThrows(picocli.CommandLine.TypeConversionException.class, () -> SizeConverter.parse("1.3k"));
        assertTrue(e.getMessage().contains("not a whole number of bytes") && e.getMessage().contains("binary"), e.getMessage());
    }

    @Test
    void shouldTakeDurationsWithUnitsAndBareNumbersAsSeconds() {
        assertEquals(Duration.ofMillis(500), DurationConverter.parse("500ms"));
        assertEquals(Duration.ofSeconds(30), DurationConverter.parse("30s"));
        assertEquals(Duration.ofSeconds(30), DurationConverter.parse("30"));
        assertEquals(Duration.ofHours(24), DurationConverter.parse("24h"));
        assertThrows(picocli.CommandLine.TypeConversionException.class, () -> DurationConverter.parse("0s"));
        assertThrows(picocli.CommandLine.TypeConversionException.class, () -> DurationConverter.parse("soon"));
    }

    @Test
    void shouldLogWithADateAndTheThreadAndHonourTheLogLevel() throws Exception {
        final Path img = Files.write(dir.resolve("disk.img"), new byte[1 << 20]);
        final Path logs = Files.createDirectories(Path.of("target", "lazy-process-logs", "cli-basics"));
        try (LazyblkProcess info = LazyblkProcess.start("info", logs, "serve", "--socket", dir.resolve("a.sock").toString(),
            "--local", img.toString())) {
            info.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);
            FrontEnds.connect(dir.resolve("a.sock")).close();
            final String line = info.awaitLine("front end connected", LazyblkProcess.START_TIMEOUT);
            assertTrue(line.matches("\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\.\\d{3} \\[[^]]+] INFO .*"), "date, time, thread: " + line);
        }
        try (LazyblkProcess warn = LazyblkProcess.start("warn", logs, "serve", "--socket", dir.resolve("b.sock").toString(),
            "--local", img.toString(), "--log-level", "warn")) {
            warn.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);
            try (VhostUserFrontend fe = FrontEnds.connect(dir.resolve("b.sock"))) {
                assertEquals(io.lazyblk.tools.frontend.VirtioBlk.S_OK, FrontEnds.client(fe, 0).flush());
            }
            warn.stop();
            warn.awaitExit(Duration.ofSeconds(10));
            assertFalse(warn.output().contains(" INFO "), "--log-level warn: no INFO lines\n" + warn.output());
        }
        final CliRun bad = CliRun.run("serve", "--socket", dir.resolve("c.sock").toString(), "--null", "1M", "--log-level", "loud");
        assertEquals(2, bad.code());
        assertTrue(bad.err().contains("--log-level loud is not one of"), bad.err());
    }

    @Test
    void shouldPrintTheStatusAsJsonAndWatchItUntilTheEngineGoes() throws Exception {
        final Path img = Files.write(dir.resolve("disk.img"), new byte[1 << 20]);
        final Engine e = Engine.start(Engine.Options.file(dir.resolve("s.sock"), img));
        try {
            final CliRun json = CliRun.run("status", "--socket", dir.resolve("s.sock").toString(), "--format", "json");
            assertEquals(0, json.code(), json.err());
            final String o = json.out().strip();
            assertTrue(o.startsWith("{") && o.endsWith("}") && o.contains("\"mode\":\"disk-only\"") && o.contains("\"size_bytes\":1048576"), o);
            final Path logs = Files.createDirectories(Path.of("target", "lazy-process-logs", "cli-basics"));
            try (LazyblkProcess watch = LazyblkProcess.start("watch", logs, "status", "--socket", dir.resolve("s.sock").toString(),
                "--format", "kv", "--watch", "200ms")) {
                final String first = watch.awaitLine("mode=disk-only", LazyblkProcess.START_TIMEOUT);
                final int after = watch.lineCount();
                watch.awaitLine("mode=disk-only", after, LazyblkProcess.START_TIMEOUT); // printed again
                assertTrue(first.startsWith("mode="), first);
                e.close();
                assertEquals(1, watch.awaitExit(java.time.Duration.ofSeconds(10)), "ends once the engine is gone");
                assertTrue(watch.output().contains("lost the engine"), watch.output());
            }
        } finally {
            e.close();
        }
        assertEquals("{\"a\":1,\"b\":\"x \\\"y\\\"\",\"c\":-2.5,\"d\":\"007\"}",
            StatusCommand.json(ordered("a", "1", "b", "x \"y\"", "c", "-2.5", "d", "007")), "numbers as numbers, strings escaped");
    }

    private static java.util.Map<String, String> ordered(final String... kv) {
        final java.util.Map<String, String> m = new java.util.LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put(kv[i], kv[i + 1]);
        }
        return m;
    }
}
