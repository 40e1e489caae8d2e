package io.lazyblk.pull.s3;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The S3 client against a real S3 implementation (s3proxy, SigV4) on loopback, and through a proxy that injects S3's
 * failures: ranged GETs land exactly in native memory, a multipart upload reads back whole, refusals carry S3's code
 * and say what to fix, a replaced object is caught by its ETag, throttling and dropped connections are retried, and
 * concurrent requests never open more connections than allowed.
 */
class S3ClientTest {
    private static final S3Location OBJECT = new S3Location("bucket", "dir/a key+with=odd$chars.raw");

    @TempDir
    Path dir;
    private S3TestServer server;
    private byte[] content;

    @BeforeEach
    void start() throws Exception {
        server = S3TestServer.start(dir);
        server.createBucket("bucket");
        content = new byte[3 << 20];
        new Random(3).nextBytes(content);
        server.putObject("bucket", OBJECT.key(), content);
    }

    @AfterEach
    void stop() throws Exception {
        server.close();
    }

    private S3Client client(final java.net.URI endpoint, final String secret, final int connections) {
        return new S3Client(new S3Config(server.accessKey(), secret, null, server.region(), endpoint), connections, Duration.ofSeconds(30));
    }

    private S3Client client() {
        return client(server.endpoint(), server.secretKey(), 4);
    }

    @Test
    void shouldReadRangesIntoNativeMemoryWithTheirExactBytes() throws Exception {
        try (S3Client c = client(); Arena arena = Arena.ofShared()) {
            final S3Client.ObjectInfo info = c.probe(OBJECT);
            assertEquals(content.length, info.size());
            final MemorySegment dst = arena.allocate(1 << 20);
            for (final long at : new long[] {0, 65536, content.length - 4096, 12345}) {
                final int len = (int) Math.min(1 << 20, content.length - at);
                c.getRange(OBJECT, at, len, dst, 0, info.etag());
                assertArrayEquals(Arrays.copyOfRange(content, (int) at, (int) at + len),
                    dst.asSlice(0, len).toArray(ValueLayout.JAVA_BYTE), "bytes at " + at);
            }
        }
    }

    @Test
    void shouldUploadInPartsAndReadTheWholeObjectBack() throws Exception {
        final byte[] big = new byte[(11 << 20) + 4096];
        new Random(5).nextBytes(big);
        final S3Location loc = new S3Location("bucket", "up/loaded.raw");
        try (S3Client c = client()) {
            final String id = c.createMultipart(loc);
            final List<String> etags = new ArrayList<>();
            final int part = 5 << 20;
            for (int i = 0; i * part < big.length; i++) {
                final int len = Math.min(part, big.length - i * part);
                etags.add(c.uploadPart(loc, id, i + 1, Arrays.copyOfRange(big, i * part, i * part + len), len));
            }
            c.completeMultipart(loc, id, etags);
            assertEquals(big.length, c.probe(loc).size());
        }
        assertArrayEquals(big, server.getObject("bucket", loc.key()));
    }

    @Test
    void shouldSayWhichCredentialIsWrongAndWhatIsMissing() throws Exception {
        try (S3Client wrong = client(server.endpoint(), "not-the-secret", 1)) {
            final S3Client.S3Exception e = assertThrows(S3Client.S3Exception.class, () -> wrong.probe(OBJECT));
            assertEquals("SignatureDoesNotMatch", e.code());
            assertFalse(e.retryable());
            assertTrue(e.getMessage().contains("AWS_SECRET_ACCESS_KEY"), e.getMessage());
            assertFalse(e.getMessage().contains("not-the-secret"), "the secret never reaches a message");
        }
        try (S3Client c = client()) {
            final S3Client.S3Exception e = assertThrows(S3Client.S3Exception.class, () -> c.probe(new S3Location("bucket", "nope")));
            assertEquals(404, e.status());
            assertTrue(e.getMessage().contains("no object s3://bucket/nope"), e.getMessage());
        }
    }

    @Test
    void shouldRefuseRangesOfAnObjectReplacedSinceItsETagWasTaken() throws Exception {
        try (S3Client c = client(); Arena arena = Arena.ofShared()) {
            final String etag = c.probe(OBJECT).etag();
            final byte[] other = content.clone();
            other[0] ^= 1;
            server.putObject("bucket", OBJECT.key(), other);
            final S3Client.S3Exception e = assertThrows(S3Client.S3Exception.class,
                () -> c.getRange(OBJECT, 0, 4096, arena.allocate(4096), 0, etag));
            assertEquals(412, e.status());
            assertFalse(e.retryable());
        }
    }

    @Test
    void shouldRetrySlowDownAndDroppedConnectionsButNotForever() throws Exception {
        try (S3FaultProxy proxy = S3FaultProxy.start(server.endpoint());
             S3Client c = client(proxy.endpoint(), server.secretKey(), 2);
             Arena arena = Arena.ofShared()) {
            final MemorySegment dst = arena.allocate(1 << 20);
            proxy.failNext(2, 503, "SlowDown");
            S3Client.retrying(S3Client.Retry.DEMAND, () -> {
                c.getRange(OBJECT, 0, 1 << 20, dst, 0, null);
                return null;
            });
            assertArrayEquals(Arrays.copyOf(content, 1 << 20), dst.toArray(ValueLayout.JAVA_BYTE));

            proxy.dropNext(1);
            S3Client.retrying(S3Client.Retry.DEMAND, () -> {
                c.getRange(OBJECT, 1 << 20, 1 << 20, dst, 0, null);
                return null;
            });
            assertArrayEquals(Arrays.copyOfRange(content, 1 << 20, 2 << 20), dst.toArray(ValueLayout.JAVA_BYTE));

            proxy.failNext(5, 503, "SlowDown");
            final int before = proxy.requests();
            final S3Client.S3Exception e = assertThrows(S3Client.S3Exception.class, () -> S3Client.retrying(S3Client.Retry.DEMAND, () -> {
                c.getRange(OBJECT, 0, 4096, dst, 0, null);
                return null;
            }));
            assertTrue(e.retryable());
            assertEquals(S3Client.Retry.DEMAND.attempts(), proxy.requests() - before, "as many tries as the policy allows, no more");
        }
    }

    @Test
    void shouldNeverOpenMoreConnectionsThanAllowed() throws Exception {
        final ExecutorService pool = Executors.newFixedThreadPool(12);
        try (S3FaultProxy proxy = S3FaultProxy.start(server.endpoint());
             S3Client c = client(proxy.endpoint(), server.secretKey(), 3)) {
            final List<Future<?>> gets = new ArrayList<>();
            for (int i = 0; i < 48; i++) {
                final long at = (long) (i % 12) * (256 << 10);
                gets.add(pool.submit(() -> {
                    try (Arena a = Arena.ofShared()) {
                        c.getRange(OBJECT, at, 256 << 10, a.allocate(256 << 10), 0, null);
                    }
                    return null;
                }));
            }
            for (final Future<?> f : gets) {
                f.get(60, TimeUnit.SECONDS);
            }
            assertTrue(proxy.maxConnectionsOpen() <= 3, "at most 3 connections: " + proxy.maxConnectionsOpen());
            assertTrue(proxy.maxConnectionsOpen() >= 2, "and the requests did run side by side: " + proxy.maxConnectionsOpen());
        } finally {
            pool.shutdownNow();
        }
    }
}
