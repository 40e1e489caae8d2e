package io.lazyblk.pull;

import io.lazyblk.pull.s3.S3Client;
import io.lazyblk.pull.s3.S3Config;
import io.lazyblk.pull.s3.S3Location;
import io.lazyblk.pull.s3.S3TestServer;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;
import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.core.ResponseInputStream;
import software.amazon.awssdk.core.checksums.ResponseChecksumValidation;
import software.amazon.awssdk.http.apache5.Apache5HttpClient;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.s3.model.GetObjectRequest;
import software.amazon.awssdk.services.s3.model.GetObjectResponse;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;

/**
 * Choosing the S3 client (docs/s3.md): one ranged GET into a native page buffer, as an s3:// source does it, with
 * lazyblk's client (its own HTTP/1.1 on a socket channel, the body read straight into the buffer, and our SigV4)
 * against the AWS SDK v2's S3 client (Apache 5 HTTP client, the SDK's default sync client), both on one kept-alive
 * connection to the same s3proxy on loopback in this JVM, 64 KiB (a demand miss), 1 MiB, 4 MiB (the fill's range)
 * and 8 MiB. (Until this client, lazyblk used the JDK's java.net.http client: docs/s3.md keeps its numbers.) SampleTime gives p50/p99; run with {@code -prof gc} for bytes
 * allocated per GET. {@link Cold} times a new client's first GET in a fresh JVM (class loading included).
 *
 * <pre>tools/jmh S3ClientBenchmark -prof gc</pre>
 */
@State(Scope.Benchmark)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 5, time = 2)
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
public class S3ClientBenchmark {
    static final String BUCKET = "bench";
    static final String KEY = "images/bench.raw";
    static final int OBJECT = 64 << 20;

    @Param({"lazyblk", "sdk"})
    public String client;

    @Param({"65536", "1048576", "4194304", "8388608"})
    public int size;

    private Path dir;
    private S3TestServer server;
    private S3Client lazyblk;
    private software.amazon.awssdk.services.s3.S3Client sdk;
    private String etag;
    private Arena arena;
    private MemorySegment dst;
    private byte[] heap;
    private long next;

    @Setup
    public void setUp() throws Exception {
        dir = Files.createTempDirectory("s3-bench");
        server = startWithObject(dir);
        arena = Arena.ofShared();
        dst = arena.allocate(8 << 20);
        heap = new byte[8 << 20];
        lazyblk = lazyblkClient(server);
        sdk = sdkClient(server);
        etag = lazyblk.probe(new S3Location(BUCKET, KEY)).etag();
    }

    static S3TestServer startWithObject(final Path dir) throws Exception {
        final S3TestServer s = S3TestServer.start(dir);
        s.createBucket(BUCKET);
        final byte[] content = new byte[OBJECT];
        new SplittableRandom(1).nextBytes(content);
        s.putObject(BUCKET, KEY, content);
        return s;
    }

    static S3Client lazyblkClient(final S3TestServer s) {
        return new S3Client(new S3Config(s.accessKey(), s.secretKey(), null, s.region(), s.endpoint()), 1, Duration.ofSeconds(30));
    }

    /** The SDK as an operator would configure it for a non-AWS endpoint; response checksums only when required, as ours. */
    static software.amazon.awssdk.services.s3.S3Client sdkClient(final S3TestServer s) {
        return software.amazon.awssdk.services.s3.S3Client.builder()
            .endpointOverride(s.endpoint()).forcePathStyle(true).region(Region.of(s.region()))
            .credentialsProvider(StaticCredentialsProvider.create(AwsBasicCredentials.create(s.accessKey(), s.secretKey())))
            .responseChecksumValidation(ResponseChecksumValidation.WHEN_REQUIRED)
            .httpClient(Apache5HttpClient.builder().maxConnections(1).build())
            .build();
    }

    @TearDown
    public void tearDown() throws Exception {
        lazyblk.close();
        sdk.close();
        server.close();
        arena.close();
        try (var files = Files.walk(dir)) {
            files.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }

    @Benchmark
    public long rangedGet() throws IOException {
        final long at = next;
        next = (next + size) % (OBJECT - size);
        if ("lazyblk".equals(client)) {
            lazyblk.getRange(new S3Location(BUCKET, KEY), at, size, dst, 0, etag);
        } else {
            sdkGet(sdk, at, size, etag, heap, dst);
        }
        return at;
    }

    /** The SDK's GET, its body read into a reused array and copied into the native buffer, where a page must land. */
    static void sdkGet(final software.amazon.awssdk.services.s3.S3Client sdk, final long at, final int size, final String etag,
                       final byte[] heap, final MemorySegment dst) throws IOException {
        try (ResponseInputStream<GetObjectResponse> in = sdk.getObject(GetObjectRequest.builder().bucket(BUCKET).key(KEY)
            .range("bytes=" + at + "-" + (at + size - 1)).ifMatch(etag).build())) {
            final int n = in.readNBytes(heap, 0, size);
            if (n != size) {
                throw new IOException("short read " + n);
            }
            MemorySegment.copy(MemorySegment.ofArray(heap), 0, dst, 0, size);
        }
    }

    /** A new client's first 64 KiB GET in a fresh JVM: what an engine's first demand miss pays. */
    @State(Scope.Benchmark)
    @Fork(value = 5, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED"})
    @Warmup(iterations = 0)
    @Measurement(iterations = 1)
    @BenchmarkMode(Mode.SingleShotTime)
    @OutputTimeUnit(TimeUnit.MILLISECONDS)
    public static class Cold {
        @Param({"lazyblk", "sdk"})
        public String client;
        private Path dir;
        private S3TestServer server;
        private Arena arena;

        @Setup
        public void setUp() throws Exception {
            dir = Files.createTempDirectory("s3-bench-cold");
            server = startWithObject(dir);
            arena = Arena.ofShared();
        }

        @TearDown
        public void tearDown() {
            try {
                server.close();
            } catch (final Exception e) {
                // Jetty's graceful stop can time out on a connection the SDK's pool left half-closed; the JVM ends anyway.
            }
            arena.close();
        }

        @Benchmark
        public Object firstGet() throws IOException {
            final MemorySegment dst = arena.allocate(64 << 10);
            if ("lazyblk".equals(client)) {
                try (S3Client c = lazyblkClient(server)) {
                    c.getRange(new S3Location(BUCKET, KEY), 0, 64 << 10, dst, 0, null);
                }
            } else {
                try (software.amazon.awssdk.services.s3.S3Client c = sdkClient(server)) {
                    try (ResponseInputStream<GetObjectResponse> in = c.getObject(GetObjectRequest.builder().bucket(BUCKET).key(KEY)
                        .range("bytes=0-65535").build())) {
                        MemorySegment.copy(MemorySegment.ofArray(in.readAllBytes()), 0, dst, 0, 64 << 10);
                    }
                }
            }
            return dst;
        }
    }
}
