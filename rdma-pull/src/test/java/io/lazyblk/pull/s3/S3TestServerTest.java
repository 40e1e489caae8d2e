package io.lazyblk.pull.s3;

import io.lazyblk.pagemap.Await;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.ConnectException;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.HashSet;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.stream.Collectors;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** S3TestServer is a real S3 endpoint: curl, signing SigV4 itself, stores and reads objects with S3's answers. */
class S3TestServerTest {
    private static final String BUCKET = "images";

    @TempDir
    static Path tmp;
    private static S3TestServer server;
    private static Curl curl;

    @BeforeAll
    static void start() throws Exception {
        final long t0 = System.nanoTime();
        server = S3TestServer.start(tmp.resolve("s3"));
        System.out.printf("S3TestServer.start took %d ms%n", (System.nanoTime() - t0) / 1_000_000);
        server.createBucket(BUCKET);
        curl = new Curl(tmp, server.accessKey(), server.secretKey(), server.region());
    }

    @AfterAll
    static void stop() throws Exception {
        if (server != null) {
            server.close();
        }
    }

    private static String url(final String key) {
        return server.endpoint() + "/" + BUCKET + "/" + key;
    }

    private static byte[] random(final int n, final long seed) {
        final byte[] b = new byte[n];
        new Random(seed).nextBytes(b);
        return b;
    }

    @Test
    void objectPutWithCurlIsStoredAndServedWholeAndByRange() throws Exception {
        final byte[] content = random(3 * 1024 * 1024 + 17, 1); // curl sends it after a 100 Continue
        final Curl.Result put = curl.put(url("disk.img"), content);
        assertEquals(200, put.status(), put.bodyText() + put.stderr());
        assertArrayEquals(content, server.getObject(BUCKET, "disk.img"), "what the store holds");

        final Curl.Result whole = curl.get(url("disk.img"));
        assertEquals(200, whole.status());
        assertArrayEquals(content, whole.body());

        final Curl.Result range = curl.get(url("disk.img"), "-H", "Range: bytes=1048570-1048589");
        assertEquals(206, range.status(), range.bodyText());
        assertArrayEquals(Arrays.copyOfRange(content, 1048570, 1048590), range.body());

        final Curl.Result tail = curl.get(url("disk.img"), "-H", "Range: bytes=" + (content.length - 5) + "-");
        assertEquals(206, tail.status());
        assertArrayEquals(Arrays.copyOfRange(content, content.length - 5, content.length), tail.body());
    }

    @Test
    void rangeStartingPastTheEndIs416() throws Exception {
        server.putObject(BUCKET, "small", random(100, 2));
        final Curl.Result r = curl.get(url("small"), "-H", "Range: bytes=100-199");
        assertEquals(416, r.status(), r.bodyText());
        assertTrue(r.bodyText().contains("<Code>InvalidRange</Code>"), r.bodyText());
    }

    @Test
    void objectStoredThroughTheBlobStoreIsServedOverHttp() throws Exception {
        final byte[] content = random(4096, 3);
        server.putObject(BUCKET, "dir/with/slashes.bin", content);
        assertTrue(server.objectExists(BUCKET, "dir/with/slashes.bin"));
        final Curl.Result r = curl.get(url("dir/with/slashes.bin"));
        assertEquals(200, r.status());
        assertArrayEquals(content, r.body());
    }

    @Test
    void missingKeyIs404NoSuchKey() throws Exception {
        final Curl.Result r = curl.get(url("no-such-key"));
        assertEquals(404, r.status());
        assertTrue(r.bodyText().contains("<Code>NoSuchKey</Code>"), r.bodyText());
        assertFalse(server.objectExists(BUCKET, "no-such-key"));
    }

    @Test
    void wrongSecretIs403SignatureDoesNotMatch() throws Exception {
        server.putObject(BUCKET, "secret", random(10, 4));
        final Curl wrong = new Curl(tmp, server.accessKey(), server.secretKey() + "x", server.region());
        final Curl.Result r = wrong.get(url("secret"));
        assertEquals(403, r.status());
        assertTrue(r.bodyText().contains("<Code>SignatureDoesNotMatch</Code>"), r.bodyText());
    }

    @Test
    void unknownAccessKeyIs403InvalidAccessKeyId() throws Exception {
        final Curl stranger = new Curl(tmp, "AKIANOTTHEKEY0000000", server.secretKey(), server.region());
        final Curl.Result r = stranger.get(url("anything"));
        assertEquals(403, r.status());
        assertTrue(r.bodyText().contains("<Code>InvalidAccessKeyId</Code>"), r.bodyText());
    }

    @Test
    void envNamesTheEndpointKeysAndRegionForAChildProcess() {
        assertEquals(Map.of(
            "AWS_ACCESS_KEY_ID", server.accessKey(),
            "AWS_SECRET_ACCESS_KEY", server.secretKey(),
            "AWS_REGION", "us-east-1",
            "AWS_ENDPOINT_URL_S3", "http://127.0.0.1:" + server.endpoint().getPort()), server.env());
    }

    @Test
    void closeStopsListeningAndEndsItsThreads() throws Exception {
        final Set<Thread> before = jettyThreads(); // the shared server's
        final S3TestServer other = S3TestServer.start(tmp.resolve("other"));
        final int port = other.endpoint().getPort();
        other.createBucket("b");
        assertTrue(Files.isDirectory(tmp.resolve("other").resolve("b")), "buckets are directories under the given one");
        final Set<Thread> its = jettyThreads();
        its.removeAll(before);
        assertFalse(its.isEmpty(), "the second server has Jetty threads of its own");
        other.close();
        assertThrows(ConnectException.class, () -> new Socket("127.0.0.1", port).close());
        Await.until("the closed server's Jetty threads to end", Duration.ofSeconds(5),
            () -> its.stream().noneMatch(Thread::isAlive));
    }

    private static Set<Thread> jettyThreads() {
        return Thread.getAllStackTraces().keySet().stream()
            .filter(t -> t.isAlive() && t.getName().startsWith("S3Proxy-Jetty"))
            .collect(Collectors.toCollection(HashSet::new));
    }
}
