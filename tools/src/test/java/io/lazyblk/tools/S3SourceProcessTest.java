package io.lazyblk.tools;

import io.lazyblk.pull.s3.S3Client;
import io.lazyblk.pull.s3.S3Config;
import io.lazyblk.pull.s3.S3FaultProxy;
import io.lazyblk.pull.s3.S3Location;
import io.lazyblk.pull.s3.S3TestServer;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.BlkResponse;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Images in S3, end to end with the CLI as an operator runs it, against a real S3 implementation (s3proxy, embedded,
 * SigV4) started by the test: {@code publish} uploads an image and its manifest, {@code serve --source s3://} fills a
 * local file from it lazily (a guest's reads served before the fill is done) until it is byte-identical and disk-only;
 * wrong credentials and a missing object or manifest stop the engine with one line; S3's 503 SlowDown answers are
 * retried; a chain whose nearer sources are down fills from S3; {@code publish --manifest-only} makes an object that is
 * already in the bucket servable.
 */
class S3SourceProcessTest {
    private static final int SIZE = 24 << 20;
    private static final String BUCKET = "images";
    private static final String KEY = "golden/v1.raw";
    private static final String URI = "s3://" + BUCKET + "/" + KEY;
    private static final Duration DEADLINE = Duration.ofSeconds(90);

    @TempDir
    Path dir;
    private S3TestServer s3;
    private Path image;
    private byte[] bytes;
    private Path logs;
    private final List<AutoCloseable> started = new ArrayList<>();

    @BeforeEach
    void startS3(final TestInfo test) throws Exception {
        s3 = S3TestServer.start(Files.createDirectories(dir.resolve("s3")));
        s3.createBucket(BUCKET);
        // Random bytes, with 4 MiB of zeros in the middle: zero pages the fill never asks for.
        bytes = TestImage.pattern(SIZE, 16);
        Arrays.fill(bytes, 8 << 20, 12 << 20, (byte) 0);
        image = Files.write(dir.resolve("golden.raw"), bytes);
        logs = Files.createDirectories(Path.of("target", "lazy-process-logs", "s3-" + test.getTestMethod().orElseThrow().getName()));
    }

    @AfterEach
    void stop() throws Exception {
        for (int i = started.size() - 1; i >= 0; i--) {
            started.get(i).close();
        }
        s3.close();
    }

    private LazyblkProcess lazyblk(final String name, final Map<String, String> env, final String... args) throws Exception {
        final LazyblkProcess p = LazyblkProcess.start(name, logs, env, args);
        started.add(p);
        return p;
    }

    private void publish(final Map<String, String> env) throws Exception {
        final LazyblkProcess p = lazyblk("publish", env, "publish", "--image", image.toString(), "--to", URI, "--part-size", "5M");
        assertEquals(0, p.awaitExit(DEADLINE), p.output());
        assertTrue(p.output().contains("manifest " + URI + ".lzbmanifest"), p.output());
    }

    private LazyblkProcess serve(final String name, final Map<String, String> env, final Path local, final String... more) throws Exception {
        final List<String> args = new ArrayList<>(List.of("serve", "--socket", dir.resolve(name + ".sock").toString(),
            "--local", local.toString(), "--memory-budget", "32M"));
        args.addAll(List.of(more));
        return lazyblk(name, env, args.toArray(String[]::new));
    }

    /** Waits for the switch to disk-only, then compares the local file with the image. */
    private void assertFilledToTheImage(final LazyblkProcess engine, final Path local) throws Exception {
        engine.awaitLine("switched to disk-only", DEADLINE);
        assertEquals(-1, Files.mismatch(local, image), "the local file is byte-identical to the published image");
    }

    @Test
    void shouldPublishThenServeTheImageLazilyUntilTheLocalFileIsByteIdenticalAndDiskOnly() throws Exception {
        publish(s3.env());
        final Path local = dir.resolve("vm.img");
        // 4 MiB/s: the reads below come while most of the image is still in S3.
        final LazyblkProcess engine = serve("engine", s3.env(), local, "--source", URI, "--fill-rate", "4M");
        engine.awaitLine("lazyblk: serving", DEADLINE);
        try (VhostUserFrontend fe = FrontEnds.connect(dir.resolve("engine.sock"))) {
            final BlkClient blk = FrontEnds.client(fe, 0);
            for (final long at : new long[] {SIZE - (1 << 20), 0, 5L << 20, (9L << 20) + 4096}) {
                final BlkResponse r = blk.read(at / 512, 128 << 10);
                assertEquals(VirtioBlk.S_OK, r.status(), "read at " + at);
                assertArrayEquals(Arrays.copyOfRange(bytes, (int) at, (int) at + (128 << 10)), r.data(), "bytes at " + at);
            }
        }
        final CliRun status = CliRun.run("status", "--socket", dir.resolve("engine.sock").toString(), "--format", "json");
        final java.util.regex.Matcher demand = java.util.regex.Pattern.compile("\"bytes_on_demand\":(\\d+)").matcher(status.out());
        assertTrue(demand.find() && Long.parseLong(demand.group(1)) > 0, "the reads were served by demand fetches: " + status.out());
        assertTrue(engine.awaitLine("lazy fill of", Duration.ZERO).contains(URI), "the fill names its source");
        assertFilledToTheImage(engine, local);
    }

    @Test
    void shouldRefuseWrongCredentialsAndAMissingObjectAtStartInOneLine() throws Exception {
        publish(s3.env());
        final Map<String, String> wrongSecret = new HashMap<>(s3.env());
        wrongSecret.put("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123456789");
        final LazyblkProcess badSecret = serve("bad-secret", wrongSecret, dir.resolve("a.img"), "--source", URI);
        assertNotEquals(0, badSecret.awaitExit(DEADLINE));
        assertTrue(badSecret.output().contains("secret key is wrong"), badSecret.output());
        assertTrue(badSecret.output().lines().noneMatch(l -> l.contains("\tat ")), "no stack trace:\n" + badSecret.output());

        final Map<String, String> wrongKey = new HashMap<>(s3.env());
        wrongKey.put("AWS_ACCESS_KEY_ID", "AKIDNOSUCHKEY0000000");
        final LazyblkProcess badKey = serve("bad-key", wrongKey, dir.resolve("b.img"), "--source", URI);
        assertNotEquals(0, badKey.awaitExit(DEADLINE));
        assertTrue(badKey.output().contains("does not know the access key"), badKey.output());

        final LazyblkProcess missing = serve("missing", s3.env(), dir.resolve("c.img"), "--source", "s3://" + BUCKET + "/no/such.raw");
        assertNotEquals(0, missing.awaitExit(DEADLINE));
        assertTrue(missing.output().contains("no object s3://" + BUCKET + "/no/such.raw"), missing.output());

        final LazyblkProcess publishBad = lazyblk("publish-bad", wrongSecret, "publish", "--image", image.toString(), "--to",
            "s3://" + BUCKET + "/other.raw");
        assertEquals(1, publishBad.awaitExit(DEADLINE), publishBad.output());
        assertTrue(publishBad.output().contains("secret key is wrong"), publishBad.output());

        final Map<String, String> none = new HashMap<>(s3.env());
        none.remove("AWS_ACCESS_KEY_ID");
        final LazyblkProcess noCredentials = serve("no-credentials", none, dir.resolve("d.img"), "--source", URI);
        assertEquals(2, noCredentials.awaitExit(DEADLINE), noCredentials.output());
        assertTrue(noCredentials.output().contains("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"), noCredentials.output());
    }

    @Test
    void shouldRetryS3sSlowDownAndKeepItsConnectionsBounded() throws Exception {
        publish(s3.env());
        try (S3FaultProxy proxy = S3FaultProxy.start(s3.endpoint())) {
            final Map<String, String> env = new HashMap<>(s3.env());
            env.put("AWS_ENDPOINT_URL_S3", proxy.endpoint().toString());
            proxy.failNext(3, 503, "SlowDown"); // at start: the engine waits and tries again
            final Path local = dir.resolve("vm.img");
            final LazyblkProcess engine = serve("engine", env, local, "--source", URI, "--fill-rate", "8M");
            engine.awaitLine("lazyblk: serving", DEADLINE);
            proxy.failNext(12, 503, "SlowDown"); // during the fill
            assertFilledToTheImage(engine, local);
            assertTrue(proxy.requests() > 15, "the failures were answered and the fill went on: " + proxy.requests() + " requests");
            assertTrue(proxy.maxConnectionsOpen() <= 6, "two demand and four fill workers: " + proxy.maxConnectionsOpen() + " connections");
        }
    }

    @Test
    void shouldFillFromS3WhenTheChainsNearerSourcesAreDown() throws Exception {
        publish(s3.env());
        final int closedPort;
        try (java.net.ServerSocket s = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            closedPort = s.getLocalPort();
        }
        // A token for the nearer sources: they take one, S3 does not (its credentials decide).
        final String token = AccessToken.mint("some-provider-secret-0123456789ab".getBytes(), "golden", Instant.now().plusSeconds(600));
        final Path local = dir.resolve("vm.img");
        final LazyblkProcess engine = serve("engine", s3.env(), local, "--source", "shm://" + dir.resolve("no-cache.sock") + "/golden",
            "--source", "tcp://127.0.0.1:" + closedPort + "/golden", "--source", URI, "--token", token);
        engine.awaitLine("lazyblk: serving", DEADLINE);
        assertFilledToTheImage(engine, local);
    }

    @Test
    void shouldBuildTheManifestOfAnObjectAlreadyInTheBucket() throws Exception {
        final S3Location loc = S3Location.parse("s3://" + BUCKET + "/uploaded/by-someone-else.raw");
        try (S3Client c = new S3Client(new S3Config(s3.accessKey(), s3.secretKey(), null, s3.region(), s3.endpoint()), 1,
            Duration.ofSeconds(60))) {
            c.put(loc, bytes);
        }
        final LazyblkProcess noManifest = serve("no-manifest", s3.env(), dir.resolve("a.img"), "--source", loc.toString());
        assertNotEquals(0, noManifest.awaitExit(DEADLINE));
        assertTrue(noManifest.output().contains("publish --manifest-only --to " + loc), noManifest.output());

        final LazyblkProcess p = lazyblk("manifest-only", s3.env(), "publish", "--manifest-only", "--to", loc.toString());
        assertEquals(0, p.awaitExit(DEADLINE), p.output());
        final Path local = dir.resolve("vm.img");
        final LazyblkProcess engine = serve("engine", s3.env(), local, "--source", loc.toString());
        assertFilledToTheImage(engine, local);
    }
}
