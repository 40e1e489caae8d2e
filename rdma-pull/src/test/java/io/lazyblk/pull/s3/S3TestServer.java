package io.lazyblk.pull.s3;

import org.gaul.s3proxy.S3Proxy;
import org.gaul.s3proxy.auth.AuthenticationType;
import org.gaul.s3proxy.blobstore.BlobStore;
import org.gaul.s3proxy.nio2blob.FilesystemNio2BlobStore;
import software.amazon.awssdk.core.ResponseInputStream;
import software.amazon.awssdk.services.s3.model.GetObjectResponse;
import software.amazon.awssdk.services.s3.model.PutObjectRequest;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.HexFormat;
import java.util.Map;

/**
 * A real S3 server for tests: s3proxy embedded in the test JVM, on 127.0.0.1 and a port the kernel picks, storing its
 * buckets as directories under the given directory, and checking every request's AWS signature (V2 or V4) against a
 * key pair generated per server. It speaks S3 as s3proxy does: path-style addressing only (the endpoint is an IP
 * address), and every signed request carries {@code x-amz-content-sha256}.
 * <p>
 * Setting up buckets and objects goes through s3proxy's own BlobStore, not over HTTP, so a test's setup does not
 * depend on the S3 client under test. Shipped in rdma-pull's test jar for tools' CLI tests; {@link #env()} is what a
 * child {@code lazyblk} process needs to reach it.
 * <p>
 * Logging: s3proxy and its (shaded) Jetty log through SLF4J; the first use of this class lowers them to WARN in
 * slf4j-simple unless the run already set a level for them ({@code -Dorg.slf4j.simpleLogger.log.org.gaul=debug} to
 * see every request). Other loggers are left as they are.
 */
public final class S3TestServer implements AutoCloseable {
    /** s3proxy does not check the region; this is the one clients sign with (SigV4's credential scope). */
    public static final String REGION = "us-east-1";

    /** Loggers that log per request or per start at INFO: s3proxy itself, Jetty (shaded under org.gaul, and plain), the
     *  AWS SDK model classes s3proxy's BlobStore API is written in. */
    private static final String[] QUIET_LOGGERS = {"org.gaul", "org.eclipse.jetty", "software.amazon.awssdk"};

    static {
        // slf4j-simple reads a logger's level from the system properties when the logger is created, which for these
        // is when s3proxy's classes first load, after this initializer: so setting them here is early enough, and
        // touches no logger of ours.
        for (final String logger : QUIET_LOGGERS) {
            final String key = "org.slf4j.simpleLogger.log." + logger;
            if (System.getProperty(key) == null) {
                System.setProperty(key, "warn");
            }
        }
    }

    /** Threads of s3proxy's Jetty pool: acceptor and selector threads take some; tests make a few requests at once. */
    private static final int JETTY_MAX_THREADS = 24;
    /** How long close() lets in-flight requests finish: s3proxy's default is 30 s, which every test's close would pay
     *  for a client that keeps its connection open (Jetty's graceful stop waits for idle connections too). */
    private static final long STOP_TIMEOUT_MS = 500;

    private final S3Proxy proxy;
    private final BlobStore blobStore;
    private final URI endpoint;
    private final String accessKey;
    private final String secretKey;

    private S3TestServer(final S3Proxy proxy, final BlobStore blobStore, final URI endpoint, final String accessKey,
                         final String secretKey) {
        this.proxy = proxy;
        this.blobStore = blobStore;
        this.endpoint = endpoint;
        this.accessKey = accessKey;
        this.secretKey = secretKey;
    }

    /**
     * Starts a server storing its buckets under {@code dir} (created if missing; one directory per bucket). Port 0:
     * the kernel picks a free port while binding, so two servers started at once never race for one.
     */
    public static S3TestServer start(final Path dir) throws Exception {
        Files.createDirectories(dir);
        final SecureRandom random = new SecureRandom();
        // The shapes of AWS's own keys: a 20-character upper-case key id, a 40-character secret.
        final String accessKey = "AKIA" + HexFormat.of().withUpperCase().formatHex(randomBytes(random, 8));
        final String secretKey = HexFormat.of().formatHex(randomBytes(random, 20));
        final BlobStore blobStore = new FilesystemNio2BlobStore(dir.toAbsolutePath().toString());
        final S3Proxy proxy = S3Proxy.builder()
            .blobStore(blobStore)
            .endpoint(URI.create("http://127.0.0.1:0"))
            .awsAuthentication(AuthenticationType.AWS_V2_OR_V4, accessKey, secretKey)
            .jettyMaxThreads(JETTY_MAX_THREADS)
            .stopTimeout(STOP_TIMEOUT_MS)
            .build();
        try {
            proxy.start();
        } catch (final Exception e) {
            // Jetty may have started its thread pool before the failure: stop it, or its threads outlive the test.
            try {
                proxy.stop();
            } catch (final Exception suppressed) {
                e.addSuppressed(suppressed);
            }
            throw e;
        }
        return new S3TestServer(proxy, blobStore, URI.create("http://127.0.0.1:" + proxy.getPort()), accessKey,
            secretKey);
    }

    private static byte[] randomBytes(final SecureRandom random, final int n) {
        final byte[] b = new byte[n];
        random.nextBytes(b);
        return b;
    }

    /** {@code http://127.0.0.1:PORT}, no trailing slash. Address buckets path-style: {@code endpoint/bucket/key}. */
    public URI endpoint() {
        return endpoint;
    }

    public String accessKey() {
        return accessKey;
    }

    public String secretKey() {
        return secretKey;
    }

    /** {@value #REGION}. */
    public String region() {
        return REGION;
    }

    /**
     * The environment a child process (the {@code lazyblk} CLI) needs to reach this server with the standard AWS
     * variables: key pair, region, and the S3 endpoint override. Immutable; add it to a ProcessBuilder's environment.
     * It does not clear other AWS variables the test's own environment may carry (a profile, a session token).
     */
    public Map<String, String> env() {
        return Map.of(
            "AWS_ACCESS_KEY_ID", accessKey,
            "AWS_SECRET_ACCESS_KEY", secretKey,
            "AWS_REGION", REGION,
            "AWS_ENDPOINT_URL_S3", endpoint.toString());
    }

    /** Creates a bucket directly in the store (no HTTP request). */
    public void createBucket(final String bucket) {
        blobStore.createContainer(bucket);
    }

    /** Stores an object directly in the store (no HTTP request), replacing any object of that key. */
    public void putObject(final String bucket, final String key, final byte[] content) {
        blobStore.putBlob(PutObjectRequest.builder().bucket(bucket).key(key).contentLength((long) content.length).build(),
            new ByteArrayInputStream(content));
    }

    /** An object's bytes, read directly from the store (no HTTP request); fails if there is no such object. */
    public byte[] getObject(final String bucket, final String key) {
        try (ResponseInputStream<GetObjectResponse> in = blobStore.getBlob(bucket, key)) {
            return in.readAllBytes();
        } catch (final IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Whether an object of that key exists, asked of the store directly. */
    public boolean objectExists(final String bucket, final String key) {
        return blobStore.blobExists(bucket, key);
    }

    /** Stops the server and its Jetty threads; open client connections are closed. Idempotent. */
    @Override
    public void close() throws Exception {
        try {
            proxy.stop();
        } finally {
            blobStore.close();
        }
    }
}
