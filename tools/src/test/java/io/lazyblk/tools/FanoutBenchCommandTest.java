package io.lazyblk.tools;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pull.s3.S3TestServer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code lazyblk bench-fanout} end to end, small: real image-server and engine children, the front end's checked boot
 * reads, the table's figures. Once with the image file as the seed, once with a host cache of an image in S3 (s3proxy).
 */
class FanoutBenchCommandTest {
    private static final String NUM = "([0-9]+\\.[0-9]+)";

    @TempDir
    Path dir;

    @Test
    void shouldMeasureTwoEnginesAgainstOneAloneFromTheImageFile() {
        final CliRun run = CliRun.run("bench-fanout", "--engines", "2", "--size", "16M", "--rounds", "1", "--boot-set", "2M",
            "--work-dir", dir.toString());
        System.out.println(run.out() + run.err()); // the table, in the test's output file
        assertEquals(0, run.code(), run.out() + run.err());
        assertTimes(run.out());
        // 16 MiB with one MiB of zeros in every eight: 14 MiB of data, sent once to the engine alone and once to each of two.
        assertTrue(run.out().contains("(14.0 MiB of data)"), run.out());
        final double[] served = row(run.out(), "MiB served by the seed", 2);
        assertTrue(served[0] >= 14.0 && served[0] < 15.0, "served to one engine: " + served[0] + "\n" + run.out());
        assertTrue(served[1] >= 28.0 && served[1] < 30.0, "served to two engines: " + served[1] + "\n" + run.out());
        assertEquals(served[1], row(run.out(), "MiB read from the seed", 2)[1], 0.05, run.out());
        assertTrue(row(run.out(), "seed CPU-s per GB served", 2)[1] > 0, run.out());
        assertTrue(run.out().contains("connections refused at the seed's limit: none"), run.out());
        assertTrue(run.err().contains("round 1/1: 2 engines at once"), "progress on stderr: " + run.err());
    }

    @Test
    void shouldReadAboutOneImageFromS3ForTwoEnginesThroughTheHostCache() throws Exception {
        try (S3TestServer s3 = S3TestServer.start(Files.createDirectories(dir.resolve("s3")))) {
            s3.createBucket("images");
            final byte[] image = TestImage.pattern(16 << 20, 16);
            Arrays.fill(image, 4 << 20, 6 << 20, (byte) 0);
            s3.putObject("images", "golden/v1.raw", image);
            final ByteBuffer m = Manifest.of(image, 64 << 10).encode();
            final byte[] manifest = new byte[m.remaining()];
            m.get(manifest);
            s3.putObject("images", "golden/v1.raw.lzbmanifest", manifest);

            final CliRun run = runWithEnvironment(s3.env(), "--seed", "s3", "--s3", "s3://images/golden/v1.raw", "--engines", "2",
                "--rounds", "1", "--boot-set", "2M", "--work-dir", dir.resolve("work").toString());
            System.out.println(run.out() + run.err()); // the table, in the test's output file
            assertEquals(0, run.code(), run.out() + run.err());
            assertTimes(run.out());
            assertTrue(run.out().contains("(14.0 MiB of data)"), run.out());
            // The cache reads about the image's data from S3 for two engines, not twice that (whole MiB, rounded down, so
            // up to 2 MiB less).
            final double[] ratio = row(run.out(), "  / the image's data bytes", 2);
            assertTrue(ratio[1] >= 0.85 && ratio[1] < 1.5, "S3 bytes over the image's data for two engines: " + ratio[1] + "\n" + run.out());
            assertTrue(row(run.out(), "MiB served by the seed", 2)[1] >= 28.0, run.out());
            assertTrue(run.out().contains("connections refused at the seed's limit: none"), run.out());
        }
    }

    @Test
    void shouldSayWhatToGiveWhenTheS3SeedLacksItsImageOrCredentials() {
        final CliRun noImage = runWithEnvironment(Map.of(), "--seed", "s3", "--work-dir", dir.toString());
        assertEquals(2, noImage.code());
        assertTrue(noImage.err().contains("--seed s3 needs --s3 s3://BUCKET/KEY"), noImage.err());
        final CliRun noKeys = runWithEnvironment(Map.of(), "--seed", "s3", "--s3", "s3://images/golden/v1.raw", "--work-dir", dir.toString());
        assertEquals(2, noKeys.code());
        assertTrue(noKeys.err().contains("AWS_ACCESS_KEY_ID"), noKeys.err());
    }

    /**
     * Every time is positive, and N at once: its slowest engine is no faster than its median. (A small image's fill may
     * end before the engine prints its serving line: disk-only is not always after the socket.)
     */
    private static void assertTimes(final String out) {
        for (final String name : new String[] {"time to socket (s)", "time to boot done (s)", "time to disk-only (s)"}) {
            final double[] v = row(out, name, 3);
            assertTrue(v[0] > 0 && v[1] > 0 && v[2] >= v[1], name + ": " + Arrays.toString(v) + "\n" + out);
        }
    }

    private static double[] row(final String out, final String name, final int columns) {
        final Matcher m = Pattern.compile("(?m)^" + Pattern.quote(name) + "\\s+" + NUM + "\\s+" + NUM + (columns == 3 ? "\\s+" + NUM : ""))
            .matcher(out);
        assertTrue(m.find(), "no row '" + name + "' in:\n" + out);
        final double[] v = new double[columns];
        for (int i = 0; i < columns; i++) {
            v[i] = Double.parseDouble(m.group(i + 1));
        }
        return v;
    }

    /** {@code lazyblk bench-fanout ARGS} in this JVM with {@code env} as its environment (CliRun cannot inject one). */
    private static CliRun runWithEnvironment(final Map<String, String> env, final String... args) {
        synchronized (CliRun.class) { // one System.out at a time, as CliRun.run
            final PrintStream out = System.out;
            final PrintStream err = System.err;
            final ByteArrayOutputStream o = new ByteArrayOutputStream();
            final ByteArrayOutputStream e = new ByteArrayOutputStream();
            try {
                System.setOut(new PrintStream(o, true, StandardCharsets.UTF_8));
                System.setErr(new PrintStream(e, true, StandardCharsets.UTF_8));
                final FanoutBenchCommand cmd = new FanoutBenchCommand();
                cmd.environment = env::get;
                final int code = new CommandLine(cmd).setCaseInsensitiveEnumValuesAllowed(true).execute(args);
                return new CliRun(code, o.toString(StandardCharsets.UTF_8), e.toString(StandardCharsets.UTF_8));
            } finally {
                System.setOut(out);
                System.setErr(err);
            }
        }
    }
}
