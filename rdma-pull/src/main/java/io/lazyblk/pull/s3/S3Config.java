package io.lazyblk.pull.s3;

import java.net.URI;
import java.util.Map;
import java.util.function.Function;

/**
 * Credentials and endpoint, the standard AWS way: {@code AWS_ACCESS_KEY_ID}, {@code AWS_SECRET_ACCESS_KEY},
 * {@code AWS_SESSION_TOKEN} (temporary credentials), {@code AWS_REGION} (else {@code AWS_DEFAULT_REGION}, else
 * us-east-1), and {@code AWS_ENDPOINT_URL_S3} (else {@code AWS_ENDPOINT_URL}) for an S3-compatible store that is not
 * AWS (Ceph RGW, MinIO, s3proxy): its objects are then addressed path-style ({@code ENDPOINT/BUCKET/KEY}), which every
 * such store understands, where AWS itself gets virtual-hosted addresses ({@code https://BUCKET.s3.REGION.amazonaws.com/KEY}).
 *
 * @param sessionToken null unless temporary credentials
 * @param endpoint null for AWS itself
 */
public record S3Config(String accessKeyId, String secretAccessKey, String sessionToken, String region, URI endpoint) {
    public S3Config {
        if (endpoint != null && (endpoint.getHost() == null || !("http".equals(endpoint.getScheme()) || "https".equals(endpoint.getScheme())))) {
            throw new IllegalArgumentException("S3 endpoint " + endpoint + " must be an http:// or https:// URL with a host");
        }
    }

    /** From the process's environment. */
    public static S3Config fromEnvironment() {
        return fromEnvironment(System::getenv);
    }

    /** From {@code env}; throws IllegalArgumentException naming the missing or malformed variable. */
    public static S3Config fromEnvironment(final Function<String, String> env) {
        final String id = env.apply("AWS_ACCESS_KEY_ID");
        final String secret = env.apply("AWS_SECRET_ACCESS_KEY");
        if (blank(id) || blank(secret)) {
            throw new IllegalArgumentException("an s3:// source needs S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                + " (and AWS_SESSION_TOKEN for temporary ones), and AWS_ENDPOINT_URL_S3 for a store that is not AWS");
        }
        final String token = blank(env.apply("AWS_SESSION_TOKEN")) ? null : env.apply("AWS_SESSION_TOKEN").strip();
        String region = env.apply("AWS_REGION");
        if (blank(region)) {
            region = blank(env.apply("AWS_DEFAULT_REGION")) ? "us-east-1" : env.apply("AWS_DEFAULT_REGION");
        }
        String endpoint = env.apply("AWS_ENDPOINT_URL_S3");
        String from = "AWS_ENDPOINT_URL_S3";
        if (blank(endpoint)) {
            endpoint = env.apply("AWS_ENDPOINT_URL");
            from = "AWS_ENDPOINT_URL";
        }
        URI uri = null;
        if (!blank(endpoint)) {
            try {
                uri = URI.create(endpoint.strip().replaceFirst("/+$", ""));
            } catch (final IllegalArgumentException e) {
                throw new IllegalArgumentException(from + "=" + endpoint + " is not a URL (e.g. http://10.0.0.5:9000)", e);
            }
            if (uri.getHost() == null || !("http".equals(uri.getScheme()) || "https".equals(uri.getScheme()))) {
                throw new IllegalArgumentException(from + "=" + endpoint + " must be an http:// or https:// URL (e.g. http://10.0.0.5:9000)");
            }
        }
        return new S3Config(id.strip(), secret.strip(), token, region.strip(), uri);
    }

    /** The variables {@link #fromEnvironment} reads, with these values: for a child process. */
    public Map<String, String> environment() {
        final Map<String, String> m = new java.util.LinkedHashMap<>();
        m.put("AWS_ACCESS_KEY_ID", accessKeyId);
        m.put("AWS_SECRET_ACCESS_KEY", secretAccessKey);
        if (sessionToken != null) {
            m.put("AWS_SESSION_TOKEN", sessionToken);
        }
        m.put("AWS_REGION", region);
        if (endpoint != null) {
            m.put("AWS_ENDPOINT_URL_S3", endpoint.toString());
        }
        return m;
    }

    /** The secret never reaches a log line or an exception. */
    @Override
    public String toString() {
        return "S3Config[key " + accessKeyId + ", region " + region + ", endpoint " + (endpoint == null ? "AWS" : endpoint) + "]";
    }

    private static boolean blank(final String s) {
        return s == null || s.isBlank();
    }
}
