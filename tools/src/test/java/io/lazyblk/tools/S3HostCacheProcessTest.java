package io.lazyblk.tools;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pull.s3.S3Client;
import io.lazyblk.pull.s3.S3Config;
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

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code image-server --export NAME=s3://BUCKET/KEY}, the host cache of an image in S3, with real processes against a
 * real S3 implementation (s3proxy): several engines fill from it over tcp:// while it is itself still filling (their
 * misses make it fetch from S3 at once), every engine ends byte-identical to the image, the cache reads about one image
 * from S3 for all of them, and once complete it also serves shm://.
 */
class S3HostCacheProcessTest {
    private static final int SIZE = 24 << 20;
    private static final S3Location IMAGE = new S3Location("images", "golden/v1.raw");
    private static final Duration DEADLINE = Duration.ofSeconds(120);
    private static final Pattern PORT = Pattern.compile(" on [0-9.]+:(\\d+)");
    private static final Pattern FILLED = Pattern.compile("\\((\\d+) MiB on demand, (\\d+) MiB in the background\\)");

    @TempDir
    Path dir;
    private S3TestServer s3;
    private byte[] bytes;
    private Path image;
    private Path logs;
    private final List<AutoCloseable> started = new ArrayList<>();

    @BeforeEach
    void publish(final TestInfo test) throws Exception {
        s3 = S3TestServer.start(Files.createDirectories(dir.resolve("s3")));
        s3.createBucket(IMAGE.bucket());
        bytes = TestImage.pattern(SIZE, 21);
        Arrays.fill(bytes, 4 << 20, 8 << 20, (byte) 0);
        image = Files.write(dir.resolve("golden.raw"), bytes);
        try (S3Client c = new S3Client(new S3Config(s3.accessKey(), s3.secretKey(), null, s3.region(), s3.endpoint()), 1,
            Duration.ofSeconds(60))) {
            c.put(IMAGE, bytes);
            final ByteBuffer m = Manifest.of(bytes, 64 << 10).encode();
            final byte[] encoded = new byte[m.remaining()];
            m.get(encoded);
            c.put(IMAGE.manifest(), encoded);
        }
        logs = Files.createDirectories(Path.of("target", "lazy-process-logs", "s3cache-" + test.getTestMethod().orElseThrow().getName()));
    }

    @AfterEach
    void stop() throws Exception {
        for (int i = started.size() - 1; i >= 0; i--) {
            started.get(i).close();
        }
        s3.close();
    }

    private LazyblkProcess lazyblk(final String name, final java.util.Map<String, String> env, final String... args) throws Exception {
        final LazyblkProcess p = LazyblkProcess.start(name, logs, env, args);
        started.add(p);
        return p;
    }

    @Test
    void shouldFillSeveralEnginesFromOneCopyOfTheS3ImageAndServeShmOnceComplete() throws Exception {
        final byte[] secret = TestImage.pattern(32, 9);
        final Path secretFile = Files.write(dir.resolve("secret"), secret);
        Files.setPosixFilePermissions(secretFile, PosixFilePermissions.fromString("rw-------"));
        final Path cacheSock = dir.resolve("cache.sock");
        // The cache's own fill is slow (2 MiB/s): the engines' misses reach it while most of the image is still in S3.
        final LazyblkProcess cache = lazyblk("cache", s3.env(), "image-server", "--listen", "127.0.0.1:0", "--unix", cacheSock.toString(),
            "--export", "golden=" + IMAGE, "--fill-dir", dir.resolve("fill").toString(), "--fill-rate", "2M", "--fill-memory", "16M",
            "--secret-file", secretFile.toString());
        final Matcher port = PORT.matcher(cache.awaitLine("serving golden ", DEADLINE));
        assertTrue(port.find());
        assertTrue(cache.output().contains("is a host cache of " + IMAGE), cache.output());
        final String token = AccessToken.mint(secret, "golden", Instant.now().plusSeconds(600));
        final String tcp = "tcp://127.0.0.1:" + port.group(1) + "/golden";

        final List<LazyblkProcess> engines = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            final LazyblkProcess e = lazyblk("engine" + i, java.util.Map.of(), "serve", "--socket", dir.resolve("e" + i + ".sock").toString(),
                "--local", dir.resolve("vm" + i + ".img").toString(), "--source", tcp, "--token", token, "--memory-budget", "16M");
            e.awaitLine("lazyblk: serving", DEADLINE);
            engines.add(e);
        }
        // Each engine's guest reads the end of the image first: pages the cache has not filled yet.
        for (int i = 0; i < engines.size(); i++) {
            try (VhostUserFrontend fe = FrontEnds.connect(dir.resolve("e" + i + ".sock"))) {
                final BlkClient blk = FrontEnds.client(fe, 0);
                final long at = SIZE - (long) (i + 1) * (1 << 20);
                final BlkResponse r = blk.read(at / 512, 256 << 10);
                assertEquals(VirtioBlk.S_OK, r.status(), "engine " + i);
                assertArrayEquals(Arrays.copyOfRange(bytes, (int) at, (int) at + (256 << 10)), r.data(), "engine " + i + "'s bytes");
            }
        }
        for (int i = 0; i < engines.size(); i++) {
            engines.get(i).awaitLine("switched to disk-only", DEADLINE);
            assertEquals(-1, Files.mismatch(dir.resolve("vm" + i + ".img"), image), "engine " + i + "'s copy is the image");
        }

        // The cache read the image from S3 once for all three: its demand and background bytes add up to the image's
        // 20 MiB of data (zero pages are never read), not three times that.
        final Matcher filled = FILLED.matcher(cache.awaitLine("switched to disk-only", DEADLINE));
        assertTrue(filled.find());
        final int fromS3 = Integer.parseInt(filled.group(1)) + Integer.parseInt(filled.group(2));
        assertTrue(fromS3 >= 19 && fromS3 <= 21, "MiB the cache read from S3: " + fromS3 + " (" + filled.group() + ")");
        assertTrue(Integer.parseInt(filled.group(1)) > 0, "the engines' misses were fetched on demand: " + filled.group());
        assertEquals(-1, Files.mismatch(dir.resolve("fill").resolve("golden.raw"), image), "the cache's copy is the image");

        // Complete now: an engine on this host reads it through the cache's fd.
        final LazyblkProcess shm = lazyblk("shm-engine", java.util.Map.of(), "serve", "--socket", dir.resolve("shm.sock").toString(),
            "--local", dir.resolve("shm.img").toString(), "--source", "shm://" + cacheSock + "/golden", "--token", token);
        shm.awaitLine("switched to disk-only", DEADLINE);
        assertEquals(-1, Files.mismatch(dir.resolve("shm.img"), image));
    }

    @Test
    void shouldRefuseASecondImageServerFillingTheSameCopy() throws Exception {
        final Path secretFile = Files.write(dir.resolve("secret"), TestImage.pattern(32, 9));
        Files.setPosixFilePermissions(secretFile, PosixFilePermissions.fromString("rw-------"));
        final String[] args = {"image-server", "--listen", "127.0.0.1:0", "--export", "golden=" + IMAGE, "--fill-dir",
            dir.resolve("fill").toString(), "--fill-rate", "1M", "--secret-file", secretFile.toString()};
        lazyblk("first", s3.env(), args).awaitLine("serving golden ", DEADLINE);
        final LazyblkProcess second = lazyblk("second", s3.env(), args);
        assertEquals(1, second.awaitExit(DEADLINE), second.output());
        assertTrue(second.output().contains("another image server fills"), second.output());
    }
}
