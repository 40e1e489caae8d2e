package io.lazyblk.pull.token;

import com.code_intelligence.jazzer.junit.FuzzTest;
import io.lazyblk.sys.fuzz.FuzzBytes;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Access tokens as a client presents them: AccessToken.verify and claimedExpiry on any string.
 *
 * <p>Input: expiry u64, "now" u64, a one-byte position, a one-byte image-name length, the image name, then the
 * presented token (ISO-8859-1, as the provider reads it off the wire). Properties: verify never throws and
 * claimedExpiry never throws; a token verify does not call MALFORMED has a claimed expiry on the right side of now;
 * one whose MAC is good is exactly what mint writes for that image and expiry (one spelling per grant); a token
 * minted for the image and expiry verifies OK before it and EXPIRED from it on, and changing any one character of it
 * makes it fail. SecretFile is not a target: it takes the file's bytes as they are, checking sizes.
 */
class AccessTokenFuzzTest {
    private static final byte[] SECRET = "0123456789abcdef0123456789abcdef".getBytes(StandardCharsets.US_ASCII);
    /** Epoch seconds of 11 digits at most, as mint accepts. */
    private static final long MAX_EXPIRY = 99_999_999_999L;

    @FuzzTest
    void verify(final byte[] input) {
        final FuzzBytes in = new FuzzBytes(input);
        final long expiry = Long.remainderUnsigned(in.u64(), MAX_EXPIRY + 1);
        final long now = Long.remainderUnsigned(in.u64(), MAX_EXPIRY + 2);
        final int position = in.u8();
        final String image = new String(in.bytes(in.u8()), StandardCharsets.UTF_8);
        final String presented = new String(in.rest(), StandardCharsets.ISO_8859_1);

        final AccessToken.Verdict v = AccessToken.verify(SECRET, image, presented, Instant.ofEpochSecond(now));
        final Instant claimed = AccessToken.claimedExpiry(presented);
        if (v != AccessToken.Verdict.MALFORMED) {
            assertNotNull(claimed, "a well-formed token without a claimed expiry: " + presented);
            if (v == AccessToken.Verdict.OK) {
                assertTrue(claimed.getEpochSecond() > now, "OK past its expiry");
            } else if (v == AccessToken.Verdict.EXPIRED) {
                assertTrue(claimed.getEpochSecond() <= now, "EXPIRED before its expiry");
            }
        }
        if (v == AccessToken.Verdict.OK || v == AccessToken.Verdict.EXPIRED) {
            // A good MAC: the token must be exactly what mint writes for its grant, or one grant has several spellings.
            assertEquals(AccessToken.mint(SECRET, image, claimed), presented, "a token that is not mint's spelling of its grant verifies");
        }

        final String minted = AccessToken.mint(SECRET, image, Instant.ofEpochSecond(expiry));
        assertEquals(expiry, AccessToken.claimedExpiry(minted).getEpochSecond());
        assertEquals(AccessToken.Verdict.OK, AccessToken.verify(SECRET, image, minted, Instant.ofEpochSecond(expiry - 1)));
        assertEquals(AccessToken.Verdict.EXPIRED, AccessToken.verify(SECRET, image, minted, Instant.ofEpochSecond(expiry)));
        // One character changed, anywhere: no other string may carry the same grant.
        final int at = position % minted.length();
        for (final char c : new char[] {(char) (minted.charAt(at) ^ 1), (char) (minted.charAt(at) + 1), (char) (position & 0x7f)}) {
            if (c == minted.charAt(at)) {
                continue;
            }
            final String changed = minted.substring(0, at) + c + minted.substring(at + 1);
            assertNotEquals(AccessToken.Verdict.OK, AccessToken.verify(SECRET, image, changed, Instant.ofEpochSecond(expiry - 1)),
                "token " + minted + " with character " + at + " changed to '" + c + "' still verifies");
        }
    }

    /** Writes the seed corpus into directory {@code args[0]} (tools/fuzz access-token --write-seeds). */
    public static void main(final String[] args) throws IOException {
        final Path dir = Path.of(args[0]);
        Files.createDirectories(dir);
        final long expiry = 1_900_000_000L;
        final String good = AccessToken.mint(SECRET, "golden", Instant.ofEpochSecond(expiry));
        seed(dir, "valid", expiry, expiry - 10, 3, "golden", good);
        seed(dir, "expired", expiry, expiry + 10, 50, "golden", good);
        seed(dir, "other-image", expiry, 0, 7, "silver", good);
        seed(dir, "no-mac", expiry, 0, 0, "golden", "v1.1900000000.");
        seed(dir, "v2", expiry, 0, 0, "golden", "v2" + good.substring(2));
        seed(dir, "leading-zero-expiry", expiry, 0, 0, "golden", "v1.01900000000" + good.substring(good.lastIndexOf('.')));
        seed(dir, "too-many-digits", 99_999_999_999L, 0, 1, "golden", "v1.123456789012.AAAA");
        seed(dir, "empty", 0, 0, 0, "", "");
    }

    private static void seed(final Path dir, final String name, final long expiry, final long now, final int position,
                             final String image, final String token) throws IOException {
        final byte[] img = image.getBytes(StandardCharsets.UTF_8);
        Files.write(dir.resolve(name), new FuzzBytes.Writer().u64(expiry).u64(now).u8(position).u8(img.length).bytes(img)
            .bytes(token.getBytes(StandardCharsets.ISO_8859_1)).toByteArray());
    }
}
