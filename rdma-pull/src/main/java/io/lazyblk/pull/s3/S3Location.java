package io.lazyblk.pull.s3;

/**
 * An object in S3: {@code s3://BUCKET/KEY}. The key may hold slashes; its manifest is the object {@code KEY.lzbmanifest}
 * beside it ({@link #manifest()}).
 */
public record S3Location(String bucket, String key) {
    public static final String SYNTAX = "s3://BUCKET/KEY";
    /** Suffix of the manifest object written beside an image by {@code lazyblk publish}. */
    public static final String MANIFEST_SUFFIX = ".lzbmanifest";

    public S3Location {
        // S3's own rules: 3-63 characters of lowercase letters, digits, dots and hyphens; keys up to 1024 bytes.
        if (bucket == null || !bucket.matches("[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")) {
            throw new IllegalArgumentException("bucket name '" + bucket + "' is not a valid S3 bucket name (3-63 lowercase letters,"
                + " digits, dots and hyphens)");
        }
        if (key == null || key.isEmpty() || key.getBytes(java.nio.charset.StandardCharsets.UTF_8).length > 1024) {
            throw new IllegalArgumentException("object key '" + key + "' must be 1 to 1024 bytes");
        }
    }

    /** Parses {@code s3://BUCKET/KEY}; throws IllegalArgumentException saying what is expected. */
    public static S3Location parse(final String s) {
        if (s == null || !s.startsWith("s3://")) {
            throw new IllegalArgumentException("'" + s + "' is not " + SYNTAX);
        }
        final String rest = s.substring("s3://".length());
        final int slash = rest.indexOf('/');
        if (slash <= 0 || slash == rest.length() - 1) {
            throw new IllegalArgumentException("'" + s + "' must look like " + SYNTAX + " (e.g. s3://images/golden.raw)");
        }
        return new S3Location(rest.substring(0, slash), rest.substring(slash + 1));
    }

    /** The manifest object beside this one. */
    public S3Location manifest() {
        return new S3Location(bucket, key + MANIFEST_SUFFIX);
    }

    /** The last segment of the key: how the image is named in log lines and the local file's state. */
    public String name() {
        return key.substring(key.lastIndexOf('/') + 1);
    }

    @Override
    public String toString() {
        return "s3://" + bucket + "/" + key;
    }
}
