package io.lazyblk.pull.token;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Instant;
import java.util.Arrays;

import static io.lazyblk.pull.token.AccessToken.Verdict.BAD_SIGNATURE;
import static io.lazyblk.pull.token.AccessToken.Verdict.EXPIRED;
import static io.lazyblk.pull.token.AccessToken.Verdict.MALFORMED;
import static io.lazyblk.pull.token.AccessToken.Verdict.OK;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Tokens grant one image until their expiry, to holders of the right secret only; secret files are checked. */
class AccessTokenTest {
    private static final byte[] SECRET = "0123456789abcdef0123456789abcdef".getBytes();
    private static final Instant NOW = Instant.parse("2026-11-01T12:00:00Z");

    @TempDir
    Path dir;

    @Test
    void shouldAcceptATokenForItsImageUntilItExpires() {
        final String t = AccessToken.mint(SECRET, "debian-12", NOW.plusSeconds(60));
        assertTrue(t.matches("v1\\.\\d+\\.[A-Za-z0-9_-]{43}"), t);
        assertEquals(OK, AccessToken.verify(SECRET, "debian-12", t, NOW));
        assertEquals(OK, AccessToken.verify(SECRET, "debian-12", t, NOW.plusSeconds(59)));
        assertEquals(EXPIRED, AccessToken.verify(SECRET, "debian-12", t, NOW.plusSeconds(60)));
    }

    @Test
    void shouldCallATokenWhoseMacIsNotInItsOneBase64FormMalformed() {
        // 32 MAC bytes are 43 base64url characters; the last carries 2 bits and 4 unused ones, which a decoder ignores:
        // 'g' (100000) and 'h' (100001) decode to the same bytes. Only the form mint writes may pass, or one grant has
        // 16 spellings (found by AccessTokenFuzzTest).
        final String t = AccessToken.mint(SECRET, "debian-12", NOW.plusSeconds(60));
        final char last = t.charAt(t.length() - 1);
        final String respelled = t.substring(0, t.length() - 1) + (char) (last + 1);
        assertArrayEquals(java.util.Base64.getUrlDecoder().decode(t.substring(t.lastIndexOf('.') + 1)),
            java.util.Base64.getUrlDecoder().decode(respelled.substring(respelled.lastIndexOf('.') + 1)), "the same MAC bytes");
        assertEquals(MALFORMED, AccessToken.verify(SECRET, "debian-12", respelled, NOW));
        assertEquals(OK, AccessToken.verify(SECRET, "debian-12", t, NOW));
    }

    @Test
    void shouldRejectATokenSignedWithAnotherSecret() {
        final byte[] other = SECRET.clone();
        other[0] ^= 1;
        assertEquals(BAD_SIGNATURE, AccessToken.verify(other, "debian-12", AccessToken.mint(SECRET, "debian-12", NOW.plusSeconds(60)), NOW));
    }

    @Test
    void shouldRejectAnotherImagesToken() {
        final String t = AccessToken.mint(SECRET, "debian-12", NOW.plusSeconds(60));
        assertEquals(BAD_SIGNATURE, AccessToken.verify(SECRET, "debian-13", t, NOW));
        assertEquals(BAD_SIGNATURE, AccessToken.verify(SECRET, "debian-1", t, NOW));
    }

    @Test
    void shouldRejectATokenWhoseExpiryWasMovedForward() {
        final String t = AccessToken.mint(SECRET, "img", NOW.minusSeconds(1));
        assertEquals(EXPIRED, AccessToken.verify(SECRET, "img", t, NOW));
        final String[] parts = t.split("\\.");
        final String extended = parts[0] + "." + (Long.parseLong(parts[1]) + 3600) + "." + parts[2];
        assertEquals(BAD_SIGNATURE, AccessToken.verify(SECRET, "img", extended, NOW), "a forged expiry is a bad signature, not an expiry");
    }

    @Test
    void shouldCallEveryMisshapenTokenMalformed() {
        final String good = AccessToken.mint(SECRET, "img", NOW.plusSeconds(60));
        final String[] parts = good.split("\\.");
        for (final String bad : new String[] {"", "v1", "v1..", "v1.123", "v2." + parts[1] + "." + parts[2],
            "v1." + parts[1] + "." + parts[2] + ".x", "v1.-5." + parts[2], "v1.12a." + parts[2], "v1.999999999999." + parts[2],
            "v1." + parts[1] + "." + parts[2].substring(1), "v1." + parts[1] + "." + parts[2] + "AA",
            "v1." + parts[1] + ".!!!!", "v1." + parts[1] + "." + "A".repeat(600)}) {
            assertEquals(MALFORMED, AccessToken.verify(SECRET, "img", bad, NOW), bad);
        }
        assertEquals(MALFORMED, AccessToken.verify(SECRET, "img", null, NOW));
    }

    @Test
    void shouldRefuseShortSecrets() {
        assertThrows(IllegalArgumentException.class, () -> AccessToken.mint(new byte[15], "img", NOW));
        assertThrows(IllegalArgumentException.class, () -> AccessToken.verify(new byte[0], "img", "v1.1.x", NOW));
    }

    @Test
    void shouldReadASecretFileAndExplainHowToMakeOneWhenMissingOrShort() throws IOException {
        final Path f = dir.resolve("secret");
        final IOException missing = assertThrows(IOException.class, () -> SecretFile.read(f));
        assertTrue(missing.getMessage().contains("head -c 32 /dev/urandom > " + f), missing.getMessage());

        Files.write(f, new byte[15]);
        final IOException shortOne = assertThrows(IOException.class, () -> SecretFile.read(f));
        assertTrue(shortOne.getMessage().contains("15 bytes") && shortOne.getMessage().contains("head -c 32 /dev/urandom"),
            shortOne.getMessage());

        Files.write(f, new byte[SecretFile.MAX_BYTES + 1]);
        assertThrows(IOException.class, () -> SecretFile.read(f));

        final byte[] secret = new byte[32];
        Arrays.fill(secret, (byte) 7);
        Files.write(f, secret);
        Files.setPosixFilePermissions(f, PosixFilePermissions.fromString("rw-r--r--")); // warned about, not refused
        assertArrayEquals(secret, SecretFile.read(f));
    }
}
