package io.lazyblk.pull.token;

import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.time.Instant;
import java.util.Base64;

/**
 * Access tokens for one image: {@code v1.<expiry epoch seconds>.<base64url(HMAC-SHA256(secret, image + "\n" + expiry))>}
 * (base64url without padding). The provider and whoever mints tokens share the secret; the token names no secret
 * and carries no image name, so a token minted for one image fails on every other. Stateless; thread-safe.
 */
public final class AccessToken {
    public static final String PREFIX = "v1";
    /** HMAC-SHA256 keys shorter than this are refused: 128 bits is the least a brute force cannot reach. */
    public static final int MIN_SECRET_BYTES = 16;
    /** Longest token {@link #verify} looks at; longer input is malformed without parsing (provider protocol's limit). */
    public static final int MAX_TOKEN_CHARS = 512;

    private static final String ALGORITHM = "HmacSHA256";
    private static final int MAC_BYTES = 32;
    /** Epoch seconds up to year 5138 fit in 11 digits; more is malformed rather than an overflow risk. */
    private static final int MAX_EXPIRY_DIGITS = 11;
    private static final Base64.Encoder MAC_ENCODER = Base64.getUrlEncoder().withoutPadding();

    private AccessToken() {
    }

    /** What {@link #verify} concluded about a token. */
    public enum Verdict {
        OK,
        /** Not a v1 token at all: wrong shape, version, expiry digits or MAC encoding. */
        MALFORMED,
        /** Well formed, but signed with another secret or for another image (or tampered with). */
        BAD_SIGNATURE,
        /** Signature good, expiry in the past. */
        EXPIRED
    }

    /** A token granting access to {@code image} until {@code expiry} (whole seconds; sub-second parts are dropped). */
    public static String mint(final byte[] secret, final String image, final Instant expiry) {
        checkSecret(secret);
        final String expirySeconds = Long.toString(expiry.getEpochSecond());
        if (expiry.getEpochSecond() < 0 || expirySeconds.length() > MAX_EXPIRY_DIGITS) {
            throw new IllegalArgumentException("token expiry " + expiry + " is before 1970 or too far ahead");
        }
        return PREFIX + "." + expirySeconds + "."
            + MAC_ENCODER.encodeToString(mac(secret, image, expirySeconds));
    }

    /**
     * Checks {@code token} for {@code image} at time {@code now}: first its shape, then its MAC (compared in constant
     * time), then its expiry, so a forged token never learns whether its expiry would have passed.
     */
    public static Verdict verify(final byte[] secret, final String image, final String token, final Instant now) {
        checkSecret(secret);
        if (token == null || token.length() > MAX_TOKEN_CHARS) {
            return Verdict.MALFORMED;
        }
        final int dot1 = token.indexOf('.');
        final int dot2 = dot1 < 0 ? -1 : token.indexOf('.', dot1 + 1);
        if (dot2 < 0 || !PREFIX.equals(token.substring(0, dot1)) || token.indexOf('.', dot2 + 1) >= 0) {
            return Verdict.MALFORMED;
        }
        final String expirySeconds = token.substring(dot1 + 1, dot2);
        if (expirySeconds.isEmpty() || expirySeconds.length() > MAX_EXPIRY_DIGITS || !allDigits(expirySeconds)) {
            return Verdict.MALFORMED;
        }
        final String macText = token.substring(dot2 + 1);
        final byte[] presented;
        try {
            presented = Base64.getUrlDecoder().decode(macText);
        } catch (final IllegalArgumentException e) {
            return Verdict.MALFORMED;
        }
        // Only the one spelling mint writes: the decoder ignores the unused low bits of the last character (43
        // characters carry 258 bits for 256), so without this one grant would pass under 16 token strings.
        if (presented.length != MAC_BYTES || !MAC_ENCODER.encodeToString(presented).equals(macText)) {
            return Verdict.MALFORMED;
        }
        // MessageDigest.isEqual compares every byte whatever the first difference: no timing oracle on the MAC.
        if (!MessageDigest.isEqual(mac(secret, image, expirySeconds), presented)) {
            return Verdict.BAD_SIGNATURE;
        }
        return now.getEpochSecond() >= Long.parseLong(expirySeconds) ? Verdict.EXPIRED : Verdict.OK;
    }

    /** The expiry a token claims (not verified), or null if it has none; for messages only. */
    public static Instant claimedExpiry(final String token) {
        final String[] parts = token.split("\\.", -1);
        if (parts.length != 3 || parts[1].isEmpty() || parts[1].length() > MAX_EXPIRY_DIGITS || !allDigits(parts[1])) {
            return null;
        }
        return Instant.ofEpochSecond(Long.parseLong(parts[1]));
    }

    private static boolean allDigits(final String s) {
        for (int i = 0; i < s.length(); i++) {
            final char c = s.charAt(i);
            if (c < '0' || c > '9') {
                return false;
            }
        }
        return true;
    }

    private static byte[] mac(final byte[] secret, final String image, final String expirySeconds) {
        try {
            final Mac mac = Mac.getInstance(ALGORITHM);
            mac.init(new SecretKeySpec(secret, ALGORITHM));
            return mac.doFinal((image + "\n" + expirySeconds).getBytes(StandardCharsets.UTF_8));
        } catch (final GeneralSecurityException e) {
            throw new IllegalStateException("HMAC-SHA256 is part of every JDK; this one lacks it", e);
        }
    }

    private static void checkSecret(final byte[] secret) {
        if (secret.length < MIN_SECRET_BYTES) {
            throw new IllegalArgumentException("secret of " + secret.length + " bytes; at least " + MIN_SECRET_BYTES + " are needed");
        }
    }
}
