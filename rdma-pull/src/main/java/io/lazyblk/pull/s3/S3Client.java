package io.lazyblk.pull.s3;

import javax.net.ssl.SSLContext;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Semaphore;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The few S3 requests lazyblk makes, on our own HTTP/1.1 client ({@link HttpPool}: a socket channel, TLS through
 * {@code SSLEngine} for https://) with our own SigV4 signing ({@link SigV4}): ranged GETs read straight into native
 * memory, small GETs and PUTs (manifests), and multipart uploads ({@code publish}). Why neither the JDK's HTTP client
 * nor the AWS SDK: docs/s3.md ("Choosing the client").
 *
 * <p>Connections: at most {@code maxConnections} requests run at once (a semaphore around each), and the pool keeps
 * at most that many connections, reusing kept-alive ones.
 * Failures: {@link S3Exception} carries S3's status and error code and whether a retry may help (5xx, 429, SlowDown);
 * {@link #retrying} retries those and connection failures with exponential backoff and full jitter. Thread-safe.
 */
public final class S3Client implements AutoCloseable {
    /** Most bytes of an error body read (S3's are a few hundred bytes of XML). */
    static final int MAX_ERROR_BODY = 64 << 10;
    private static final Pattern CODE = Pattern.compile("<Code>([^<]{1,128})</Code>");
    private static final Pattern MESSAGE = Pattern.compile("<Message>([^<]{0,512})</Message>");
    private static final Pattern UPLOAD_ID = Pattern.compile("<UploadId>([^<]{1,1024})</UploadId>");
    private static final Pattern CONTENT_RANGE = Pattern.compile("bytes (\\d+)-(\\d+)/(\\d+)");

    /** What to retry and how long to wait between attempts: {@code base * 2^attempt}, capped, times a random [0, 1). */
    public record Retry(int attempts, Duration base, Duration cap) {
        /** A guest waits: a few quick tries, then the engine's own demand retries (and the next source) take over. */
        public static final Retry DEMAND = new Retry(3, Duration.ofMillis(10), Duration.ofMillis(200));
        /** The fill and uploads: patient, as S3 asks of clients that get SlowDown. */
        public static final Retry BACKGROUND = new Retry(8, Duration.ofMillis(100), Duration.ofSeconds(10));
        /** At start: a store that is busy (503) gets a few seconds; wrong credentials or a missing object fail at once. */
        public static final Retry START = new Retry(5, Duration.ofMillis(100), Duration.ofSeconds(2));
    }

    /** The object's size and ETag, as a ranged GET of its first byte reported them. */
    public record ObjectInfo(long size, String etag) {
    }

    /** An operation {@link #retrying} repeats. */
    @FunctionalInterface
    public interface Attempt<T> {
        T run() throws IOException;
    }

    private final S3Config config;
    private final SigV4 signer;
    private final HttpPool http;
    private final Semaphore connections;
    private final Duration requestTimeout;

    /**
     * @param maxConnections requests (and so connections) at once
     * @param requestTimeout bound on one request from send to the end of its body
     */
    public S3Client(final S3Config config, final int maxConnections, final Duration requestTimeout) {
        this(config, maxConnections, requestTimeout, null);
    }

    /** @param tls the TLS context for https:// endpoints (tests trust their own certificate); null: the JDK's default */
    S3Client(final S3Config config, final int maxConnections, final Duration requestTimeout, final SSLContext tls) {
        if (maxConnections < 1) {
            throw new IllegalArgumentException("maxConnections " + maxConnections);
        }
        this.config = config;
        this.signer = new SigV4(config.accessKeyId(), config.secretAccessKey(), config.sessionToken(), config.region(), "s3");
        this.http = new HttpPool(maxConnections, tls);
        this.connections = new Semaphore(maxConnections);
        this.requestTimeout = requestTimeout;
    }

    public S3Config config() {
        return config;
    }

    /**
     * The object's size and ETag, from a GET of its first byte: a GET, not a HEAD, so that a refusal comes with S3's
     * error code (a HEAD's has no body), and the message can say whether the key, the secret or the object is wrong.
     */
    public ObjectInfo probe(final S3Location loc) throws IOException {
        final Map<String, String> h = new LinkedHashMap<>();
        h.put("range", "bytes=0-0");
        final Response r = send("GET", uri(loc, null), h, null, SigV4.EMPTY_SHA256, null, 0, 0);
        if (r.status == 416) {
            return new ObjectInfo(0, r.etag); // an empty object has no first byte
        }
        r.check(loc);
        final Matcher m = r.contentRange == null ? null : CONTENT_RANGE.matcher(r.contentRange);
        if (r.status == 206 && m != null && m.matches()) {
            return new ObjectInfo(Long.parseLong(m.group(3)), r.etag);
        }
        if (r.status == 200 && r.bodyLength <= 1) {
            return new ObjectInfo(r.bodyLength, r.etag); // a server that ignores Range on a one-byte object
        }
        throw new IOException("S3 answered a ranged GET of " + loc + " with status " + r.status + " and Content-Range "
            + r.contentRange + ": not an S3 server that supports ranged GETs?");
    }

    /** The whole of a small object (a manifest); refuses one larger than {@code maxBytes}. */
    public byte[] getSmall(final S3Location loc, final int maxBytes) throws IOException {
        final ObjectInfo info = probe(loc);
        if (info.size() > maxBytes) {
            throw new IOException(loc + " holds " + info.size() + " bytes, more than the " + maxBytes + " expected");
        }
        final MemorySegment buf = MemorySegment.ofArray(new byte[(int) info.size()]);
        if (info.size() > 0) {
            getRange(loc, 0, (int) info.size(), buf, 0, info.etag());
        }
        return buf.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
    }

    /**
     * One ranged GET of {@code [offset, offset + length)} into {@code dst} at {@code dstOffset}, only if the object's
     * ETag is still {@code etag} (null: any); exactly those bytes or an exception, never a short read. The HTTP client's
     * own thread writes {@code dst}: it must be a heap segment or one of a shared (or global, or automatic) arena.
     */
    public void getRange(final S3Location loc, final long offset, final int length, final MemorySegment dst, final long dstOffset,
                         final String etag) throws IOException {
        final Map<String, String> h = new LinkedHashMap<>();
        h.put("range", "bytes=" + offset + "-" + (offset + length - 1));
        if (etag != null) {
            h.put("if-match", etag); // a replaced object answers 412, never the new object's bytes under the old manifest
        }
        final Response r = send("GET", uri(loc, null), h, null, SigV4.EMPTY_SHA256, dst, dstOffset, length);
        r.check(loc);
        if (r.status != 206 && !(r.status == 200 && offset == 0)) {
            throw new IOException("S3 answered a ranged GET of " + loc + " with status " + r.status);
        }
        final Matcher m = r.contentRange == null ? null : CONTENT_RANGE.matcher(r.contentRange);
        if (r.status == 206 && (m == null || !m.matches() || Long.parseLong(m.group(1)) != offset
            || Long.parseLong(m.group(2)) != offset + length - 1)) {
            throw new IOException("S3 answered bytes " + offset + "-" + (offset + length - 1) + " of " + loc + " with Content-Range "
                + r.contentRange);
        }
        if (r.bodyLength != length) {
            throw new IOException("S3 sent " + r.bodyLength + " bytes of " + loc + " at " + offset + " where " + length + " were asked");
        }
    }

    /** PUT of a small object (a manifest) in one request, its payload signed. */
    public void put(final S3Location loc, final byte[] body) throws IOException {
        final Map<String, String> h = new LinkedHashMap<>();
        send("PUT", uri(loc, null), h, body, SigV4.sha256Hex(body, 0, body.length), null, 0, 0).check(loc);
    }

    /** Starts a multipart upload; returns its upload id. */
    public String createMultipart(final S3Location loc) throws IOException {
        final Response r = send("POST", uri(loc, "uploads"), new LinkedHashMap<>(), new byte[0], SigV4.EMPTY_SHA256, null, 0, 0);
        r.check(loc);
        final Matcher m = UPLOAD_ID.matcher(r.text());
        if (!m.find()) {
            throw new IOException("S3 started a multipart upload of " + loc + " but sent no UploadId");
        }
        return m.group(1);
    }

    /** Uploads part {@code part} (1-based) of {@code body}; returns its ETag, for {@link #completeMultipart}. */
    public String uploadPart(final S3Location loc, final String uploadId, final int part, final byte[] body, final int length)
        throws IOException {
        final byte[] exact = length == body.length ? body : java.util.Arrays.copyOf(body, length);
        final Response r = send("PUT", uri(loc, "partNumber=" + part + "&uploadId=" + SigV4Encoding.encode(uploadId)),
            new LinkedHashMap<>(), exact, SigV4.sha256Hex(exact, 0, length), null, 0, 0);
        r.check(loc);
        if (r.etag == null) {
            throw new IOException("S3 took part " + part + " of " + loc + " but sent no ETag");
        }
        return r.etag;
    }

    /** Completes a multipart upload of the parts' ETags, in part order. */
    public void completeMultipart(final S3Location loc, final String uploadId, final List<String> etags) throws IOException {
        final StringBuilder xml = new StringBuilder("<CompleteMultipartUpload>");
        for (int i = 0; i < etags.size(); i++) {
            xml.append("<Part><PartNumber>").append(i + 1).append("</PartNumber><ETag>")
                .append(etags.get(i).replace("&", "&amp;").replace("\"", "&quot;")).append("</ETag></Part>");
        }
        final byte[] body = xml.append("</CompleteMultipartUpload>").toString().getBytes(StandardCharsets.UTF_8);
        final Response r = send("POST", uri(loc, "uploadId=" + SigV4Encoding.encode(uploadId)), new LinkedHashMap<>(), body,
            SigV4.sha256Hex(body, 0, body.length), null, 0, 0);
        r.check(loc);
        if (r.text().contains("<Error>")) {
            // S3 may answer 200 and report the failure in the body, once the response has started.
            throw r.error(loc);
        }
    }

    /** Abandons a multipart upload (its parts are deleted); failures are ignored by callers that are failing anyway. */
    public void abortMultipart(final S3Location loc, final String uploadId) throws IOException {
        send("DELETE", uri(loc, "uploadId=" + SigV4Encoding.encode(uploadId)), new LinkedHashMap<>(), null, SigV4.EMPTY_SHA256,
            null, 0, 0).check(loc);
    }

    /**
     * Runs {@code attempt} until it succeeds, fails in a way a retry cannot mend (a 4xx other than 429), or
     * {@code retry.attempts()} tries have failed; waits {@code min(cap, base * 2^n) * random} between them. The last
     * failure is rethrown.
     */
    public static <T> T retrying(final Retry retry, final Attempt<T> attempt) throws IOException {
        for (int n = 0; ; n++) {
            try {
                return attempt.run();
            } catch (final IOException e) {
                if (n + 1 >= retry.attempts() || (e instanceof S3Exception s && !s.retryable())) {
                    throw e;
                }
                final long cap = retry.cap().toNanos();
                final long backoff = Math.min(cap, retry.base().toNanos() << Math.min(n, 20));
                final long nanos = (long) (ThreadLocalRandom.current().nextDouble() * backoff);
                try {
                    TimeUnit.NANOSECONDS.sleep(nanos);
                } catch (final InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    throw new java.io.InterruptedIOException("interrupted between attempts: " + e.getMessage());
                }
            }
        }
    }

    /** The object's URL: path-style at a configured endpoint (or a bucket with dots at AWS), else virtual-hosted. */
    URI uri(final S3Location loc, final String query) {
        final String key = SigV4Encoding.encodePath(loc.key());
        final String q = query == null ? "" : "?" + query;
        final URI e = config.endpoint();
        if (e != null) {
            final String base = e.getRawPath() == null ? "" : e.getRawPath().replaceFirst("/+$", "");
            return URI.create(e.getScheme() + "://" + e.getRawAuthority() + base + "/" + loc.bucket() + "/" + key + q);
        }
        if (loc.bucket().contains(".")) {
            return URI.create("https://s3." + config.region() + ".amazonaws.com/" + loc.bucket() + "/" + key + q);
        }
        return URI.create("https://" + loc.bucket() + ".s3." + config.region() + ".amazonaws.com/" + key + q);
    }

    /** The Host header sent (and signed) for {@code uri}: the port only when it is not the scheme's default. */
    static String host(final URI uri) {
        final int port = uri.getPort();
        final boolean dflt = port == -1 || ("https".equals(uri.getScheme()) ? port == 443 : port == 80);
        return dflt ? uri.getHost() : uri.getHost() + ":" + port;
    }

    private Response send(final String method, final URI uri, final Map<String, String> headers, final byte[] body,
                          final String payloadHash, final MemorySegment dst, final long dstOffset, final int length)
        throws IOException {
        headers.put("host", host(uri));
        headers.put("x-amz-content-sha256", payloadHash);
        final Map<String, String> auth = signer.sign(method, uri, headers, payloadHash, Instant.now());
        try {
            connections.acquire();
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new java.io.InterruptedIOException("interrupted waiting for a connection to S3");
        }
        try {
            final Response r = new Response();
            http.send(method, uri, headers, auth, body, dst, dstOffset, length, requestTimeout.toNanos(), r);
            return r;
        } finally {
            connections.release();
        }
    }

    /** Connections opened so far: tests prove kept-alive reuse with it. */
    int connectionsOpened() {
        return http.opened();
    }

    /** Connections open now (idle or in use). */
    int connectionsOpen() {
        return http.open();
    }

    @Override
    public void close() {
        http.close();
    }

    /** What came back: status, the headers used, and the bytes of the body (written to the destination on success). */
    static final class Response {
        int status;
        String etag;
        String contentRange;
        long bodyLength;
        byte[] errorBody = new byte[0];

        String text() {
            return new String(errorBody, StandardCharsets.UTF_8);
        }

        /** Throws the S3 error this response is, if it is one. */
        void check(final S3Location loc) throws S3Exception {
            if (status >= 300) {
                throw error(loc);
            }
        }

        S3Exception error(final S3Location loc) {
            final String xml = text();
            final Matcher c = CODE.matcher(xml);
            final Matcher m = MESSAGE.matcher(xml);
            return new S3Exception(status, c.find() ? c.group(1) : "", m.find() ? m.group(1) : "", loc);
        }
    }

    /** An S3 error answer: status, S3's code (NoSuchKey, SlowDown, ...) and message. */
    public static final class S3Exception extends IOException {
        private final int status;
        private final String code;

        S3Exception(final int status, final String code, final String message, final S3Location loc) {
            super(describe(status, code, message, loc));
            this.status = status;
            this.code = code;
        }

        public int status() {
            return status;
        }

        public String code() {
            return code;
        }

        /** Whether another attempt may succeed: server errors, throttling. */
        public boolean retryable() {
            return status >= 500 || status == 429 || "SlowDown".equals(code) || "RequestTimeout".equals(code);
        }

        private static String describe(final int status, final String code, final String message, final S3Location loc) {
            final String what = switch (code) {
                case "InvalidAccessKeyId" -> "S3 does not know the access key (check AWS_ACCESS_KEY_ID)";
                case "SignatureDoesNotMatch" -> "S3 refused the signature: the secret key is wrong (check AWS_SECRET_ACCESS_KEY)"
                    + " or this host's clock is off";
                case "ExpiredToken", "InvalidToken" -> "S3 refused the session token (renew AWS_SESSION_TOKEN)";
                case "AccessDenied" -> "S3 denied access to " + loc + " (the credentials lack permission)";
                case "NoSuchKey" -> "no object " + loc;
                case "NoSuchBucket" -> "no bucket " + loc.bucket();
                case "PreconditionFailed" -> loc + " was replaced since the engine opened it (its ETag changed)";
                case "SlowDown" -> "S3 asks to slow down";
                default -> status == 404 ? "no object " + loc : status == 412 ? loc + " was replaced since it was opened (its ETag changed)"
                    : status == 403 ? "S3 refused access to " + loc : "S3 answered " + status + (code.isEmpty() ? "" : " " + code);
            };
            return what + (message.isEmpty() ? "" : " (" + status + " " + code + ": " + message + ")");
        }
    }
}
