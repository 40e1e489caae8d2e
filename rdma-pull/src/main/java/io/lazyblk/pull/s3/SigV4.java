package io.lazyblk.pull.s3;

import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import java.io.ByteArrayOutputStream;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;

/**
 * AWS Signature Version 4 for the Authorization header, single-chunk payload (S3 API reference, "Signature Calculations
 * for the Authorization Header: Transferring Payload in a Single Chunk"). JDK only. Thread-safe: each thread has its own
 * Mac and MessageDigest; the derived signing key is cached per day. Neither the secret key nor the session token
 * appears in {@link #toString}, an exception message or {@link #lastCanonicalRequest}.
 */
public final class SigV4 {
    /** EMPTY_SHA256: hex SHA-256 of the empty payload; UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD". */
    public static final String EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    public static final String UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD";

    private static final String ALGORITHM = "AWS4-HMAC-SHA256";
    private static final String HMAC = "HmacSHA256";
    private static final String DATE = "x-amz-date";
    private static final String TOKEN = "x-amz-security-token";
    private static final String CONTENT_SHA256 = "x-amz-content-sha256";
    private static final DateTimeFormatter AMZ_DATE = DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss'Z'").withZone(ZoneOffset.UTC);
    private static final HexFormat HEX = HexFormat.of();
    private static final HexFormat UPPER_HEX = HexFormat.of().withUpperCase();
    private static final ThreadLocal<Mac> MACS = ThreadLocal.withInitial(() -> jca(() -> Mac.getInstance(HMAC)));
    private static final ThreadLocal<MessageDigest> DIGESTS = ThreadLocal.withInitial(() -> jca(() -> MessageDigest.getInstance("SHA-256")));

    private final String accessKeyId;
    private final byte[] kSecret; // "AWS4" + secret access key, the first HMAC key of the derivation
    private final String sessionToken;
    private final String region;
    private final String service;
    private final boolean s3;
    /** The signing key of the last day signed, or null. */
    private volatile DatedKey datedKey;
    private final ThreadLocal<String[]> last = ThreadLocal.withInitial(() -> new String[2]);

    private record DatedKey(String day, byte[] key) {
    }

    /** @param sessionToken null unless temporary credentials (then x-amz-security-token is added and signed)
     *  @param service "s3" for S3 (no path normalisation, path encoded once, as S3 requires); any other service name
     *         gets the generic rules (normalised path, each segment encoded twice), for the generic test suite */
    public SigV4(String accessKeyId, String secretAccessKey, String sessionToken, String region, String service) {
        this.accessKeyId = scopePart("accessKeyId", accessKeyId);
        if (secretAccessKey == null || secretAccessKey.isEmpty()) {
            throw new IllegalArgumentException("secretAccessKey is missing");
        }
        this.kSecret = ("AWS4" + secretAccessKey).getBytes(StandardCharsets.UTF_8);
        if (sessionToken != null && (sessionToken.isEmpty() || !printable(sessionToken))) {
            throw new IllegalArgumentException("sessionToken is empty or holds a control character");
        }
        this.sessionToken = sessionToken;
        this.region = scopePart("region", region);
        this.service = scopePart("service", service);
        this.s3 = service.equals("s3");
    }

    /**
     * Signs one request. headers: the request's headers (any case; values trimmed and inner runs of spaces collapsed
     * for the canonical form); they must include "host" (with ":port" when the port is not the scheme's default) and,
     * for S3, "x-amz-content-sha256" equal to payloadHash. Returns the headers to ADD to the request, in this order:
     * "x-amz-date" (yyyyMMdd'T'HHmmss'Z' of now, UTC), "x-amz-security-token" (only with a session token), and
     * "Authorization" ("AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b;c,
     * Signature=hex"). Every header given is signed (SignedHeaders = all given names, lowercased, sorted, plus
     * x-amz-date and x-amz-security-token when added).
     * uri: the full request URI as it will be sent (raw path and raw query used: the caller already percent-encoded
     * them per RFC 3986 as S3 wants, e.g. a key "a b/c" is "/bucket/a%20b/c"); the canonical query string is built
     * from the raw query: split on '&', each name and value decoded then re-encoded with the AWS rules (unreserved
     * A-Za-z0-9-._~ kept, everything else %XX uppercase; a query parameter without '=' gets an empty value, e.g.
     * "?uploads" -> "uploads="), sorted by name then value. Decoding is of %XX only: a literal '+' is a plus sign
     * (send a space as %20). For S3 each path segment is likewise decoded then re-encoded, so "$" and "%24" sign alike.
     *
     * @throws IllegalArgumentException naming the header or argument at fault (never a value): no host header, S3
     *         without x-amz-content-sha256 equal to payloadHash, a name given twice, a header this method adds
     *         (x-amz-date, x-amz-security-token, authorization), a control character in a value, a bad payloadHash
     */
    public LinkedHashMap<String, String> sign(String method, URI uri, Map<String, String> headers, String payloadHash, Instant now) {
        if (method == null || !method.matches("[A-Z]+")) throw new IllegalArgumentException("method must be an upper-case HTTP method");
        if (payloadHash == null || !(payloadHash.matches("[0-9a-f]{64}") || payloadHash.equals(UNSIGNED_PAYLOAD))) {
            throw new IllegalArgumentException("payloadHash must be 64 lower-case hex digits or " + UNSIGNED_PAYLOAD);
        }
        Objects.requireNonNull(now, "now");
        if (uri == null || uri.isOpaque()) throw new IllegalArgumentException("uri must be hierarchical (http[s]://host/path)");
        final String amzDate = AMZ_DATE.format(now);
        final String day = amzDate.substring(0, 8);
        final TreeMap<String, String> canonical = new TreeMap<>();
        for (Map.Entry<String, String> h : headers.entrySet()) {
            final String name = h.getKey() == null ? "" : h.getKey().toLowerCase(Locale.ROOT);
            if (!name.matches("[!#$%&'*+.^_`|~0-9a-z-]+")) throw new IllegalArgumentException("header name is not an HTTP token: " + h.getKey());
            if (name.equals(DATE) || name.equals(TOKEN) || name.equals("authorization")) {
                throw new IllegalArgumentException("header " + name + " is added by sign(), do not pass it");
            }
            if (h.getValue() == null || !printable(h.getValue())) throw new IllegalArgumentException("header " + name + " is null or holds a control character");
            if (canonical.put(name, collapseSpaces(h.getValue())) != null) throw new IllegalArgumentException("header " + name + " is given twice");
        }
        if (!canonical.containsKey("host") || canonical.get("host").isEmpty()) throw new IllegalArgumentException("missing the host header");
        if (s3 && !payloadHash.equals(canonical.get(CONTENT_SHA256))) {
            throw new IllegalArgumentException("S3 needs header " + CONTENT_SHA256 + " equal to payloadHash");
        }
        canonical.put(DATE, amzDate);
        if (sessionToken != null) canonical.put(TOKEN, sessionToken);

        final StringBuilder creq = new StringBuilder(512).append(method).append('\n')
            .append(s3 ? s3Path(uri.getRawPath()) : normalisedPath(uri.getRawPath())).append('\n')
            .append(canonicalQuery(uri.getRawQuery())).append('\n');
        canonical.forEach((n, v) -> creq.append(n).append(':').append(v).append('\n'));
        final String signedHeaders = String.join(";", canonical.keySet());
        creq.append('\n').append(signedHeaders).append('\n').append(payloadHash);
        final String canonicalRequest = creq.toString();

        final byte[] creqBytes = utf8(canonicalRequest);
        final String scope = day + '/' + region + '/' + service + "/aws4_request";
        final String stringToSign = ALGORITHM + '\n' + amzDate + '\n' + scope + '\n' + sha256Hex(creqBytes, 0, creqBytes.length);
        final String signature = HEX.formatHex(hmac(signingKey(day), utf8(stringToSign)));
        final String[] mine = last.get();
        mine[0] = sessionToken == null ? canonicalRequest : canonicalRequest.replace(TOKEN + ':' + sessionToken + '\n', TOKEN + ":<redacted>\n");
        mine[1] = stringToSign;

        final LinkedHashMap<String, String> add = new LinkedHashMap<>();
        add.put(DATE, amzDate);
        if (sessionToken != null) add.put(TOKEN, sessionToken);
        add.put("Authorization", ALGORITHM + " Credential=" + accessKeyId + '/' + scope + ", SignedHeaders=" + signedHeaders
            + ", Signature=" + signature);
        return add;
    }

    /** The canonical request and the string to sign of the last sign() on this thread, for debugging a
     *  SignatureDoesNotMatch (S3 returns its own in the error body). Null before the first. The session token's value
     *  is replaced by "&lt;redacted&gt;" in the canonical request, so it may be logged; that one line differs from S3's. */
    public String lastCanonicalRequest() {
        return last.get()[0];
    }

    public String lastStringToSign() {
        return last.get()[1];
    }

    /** Hex SHA-256 of bytes (for x-amz-content-sha256 of small bodies). */
    public static String sha256Hex(byte[] data, int offset, int length) {
        Objects.checkFromIndexSize(offset, length, data.length);
        final MessageDigest md = DIGESTS.get();
        md.update(data, offset, length);
        return HEX.formatHex(md.digest());
    }

    @Override
    public String toString() {
        return "SigV4[" + accessKeyId + ", " + region + ", " + service + (sessionToken == null ? "" : ", with session token") + "]";
    }

    private byte[] signingKey(String day) {
        // The volatile read pairs with the volatile write below: a thread that sees a DatedKey sees its array complete.
        // The array is never written after publication. Threads signing different days may replace each other's key;
        // each compares the day of the one record it read, so the cost is a re-derivation, never a wrong key.
        final DatedKey k = datedKey;
        if (k != null && k.day.equals(day)) return k.key;
        byte[] key = hmac(kSecret, utf8(day));
        key = hmac(key, utf8(region));
        key = hmac(key, utf8(service));
        key = hmac(key, utf8("aws4_request"));
        datedKey = new DatedKey(day, key);
        return key;
    }

    /** S3: no normalisation, empty segments kept; each segment's %XX decoded and the bytes encoded once. */
    private static String s3Path(String rawPath) {
        if (rawPath == null || rawPath.isEmpty()) return "/";
        final StringBuilder out = new StringBuilder(rawPath.length() + 16);
        final String[] segments = rawPath.split("/", -1);
        for (int i = 0; i < segments.length; i++) {
            if (i > 0) out.append('/');
            encode(percentDecode(segments[i]), out);
        }
        return out.toString();
    }

    /** Other services: "." and ".." resolved, empty segments dropped, trailing '/' kept; the raw path (already encoded
     *  once for the wire) is encoded again, so "%20" signs as "%2520" (the test suite's "double encoding"). */
    private static String normalisedPath(String rawPath) {
        if (rawPath == null || rawPath.isEmpty()) return "/";
        final List<String> kept = new ArrayList<>();
        for (String s : rawPath.split("/")) {
            if (s.equals("..")) {
                if (!kept.isEmpty()) kept.removeLast();
            } else if (!s.isEmpty() && !s.equals(".")) {
                kept.add(s);
            }
        }
        final StringBuilder out = new StringBuilder(rawPath.length() + 16);
        for (String s : kept) encode(utf8(s), out.append('/'));
        if (kept.isEmpty() || rawPath.endsWith("/")) out.append('/');
        return out.toString();
    }

    private static String canonicalQuery(String rawQuery) {
        if (rawQuery == null || rawQuery.isEmpty()) return "";
        final List<String[]> params = new ArrayList<>();
        for (String p : rawQuery.split("&")) {
            if (p.isEmpty()) continue;
            final int eq = p.indexOf('=');
            final String name = eq < 0 ? p : p.substring(0, eq);
            final String value = eq < 0 ? "" : p.substring(eq + 1);
            params.add(new String[] {encode(percentDecode(name), new StringBuilder()).toString(),
                encode(percentDecode(value), new StringBuilder()).toString()});
        }
        // Encoded forms are ASCII, so String order is the byte order AWS sorts by.
        params.sort((a, b) -> a[0].equals(b[0]) ? a[1].compareTo(b[1]) : a[0].compareTo(b[0]));
        final StringBuilder out = new StringBuilder(rawQuery.length() + 16);
        for (String[] p : params) out.append(out.isEmpty() ? "" : "&").append(p[0]).append('=').append(p[1]);
        return out.toString();
    }

    /** %XX escapes to their bytes, everything else to its UTF-8; a '%' not followed by two hex digits is kept as is. */
    private static byte[] percentDecode(String s) {
        if (s.indexOf('%') < 0) return utf8(s);
        final ByteArrayOutputStream out = new ByteArrayOutputStream(s.length());
        int plain = 0;
        for (int i = 0; i < s.length(); i++) {
            if (s.charAt(i) == '%' && i + 2 < s.length() && HexFormat.isHexDigit(s.charAt(i + 1)) && HexFormat.isHexDigit(s.charAt(i + 2))) {
                out.writeBytes(utf8(s.substring(plain, i)));
                out.write(HexFormat.fromHexDigits(s, i + 1, i + 3));
                i += 2;
                plain = i + 1;
            }
        }
        out.writeBytes(utf8(s.substring(plain)));
        return out.toByteArray();
    }

    /** AWS UriEncode: A-Za-z0-9-._~ kept, every other byte %XX with upper-case hex. */
    private static StringBuilder encode(byte[] bytes, StringBuilder out) {
        for (byte b : bytes) {
            final int c = b & 0xff;
            if (c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
                out.append((char) c);
            } else {
                out.append('%').append(UPPER_HEX.toHexDigits((byte) c));
            }
        }
        return out;
    }

    /** Trimmed, each inner run of spaces and tabs one space (RFC 9110 whitespace; AWS's "sequential spaces"). */
    private static String collapseSpaces(String v) {
        return v.strip().replaceAll("[ \t]+", " ");
    }

    /** No CR, LF or other control character but tab: they would forge lines of the canonical request. */
    private static boolean printable(String s) {
        for (int i = 0; i < s.length(); i++) {
            final char c = s.charAt(i);
            if (c < ' ' && c != '\t' || c == 0x7f) return false;
        }
        return true;
    }

    private static String scopePart(String what, String v) {
        if (v == null || !v.matches("[A-Za-z0-9._-]+")) throw new IllegalArgumentException(what + " must be non-empty letters, digits, '.', '_' or '-'");
        return v;
    }

    private static byte[] hmac(byte[] key, byte[] data) {
        final Mac mac = MACS.get();
        return jca(() -> {
            mac.init(new SecretKeySpec(key, HMAC)); // cannot refuse: the key is never empty
            return mac.doFinal(data);
        });
    }

    private interface Jca<T> {
        T get() throws GeneralSecurityException;
    }

    /** Every JDK has HmacSHA256 and SHA-256; without them there is nothing to sign with. */
    private static <T> T jca(Jca<T> call) {
        try {
            return call.get();
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("the JDK cannot do " + HMAC + "/SHA-256", e);
        }
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }
}
