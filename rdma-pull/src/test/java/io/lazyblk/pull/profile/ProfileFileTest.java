package io.lazyblk.pull.profile;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
import org.junit.jupiter.api.Test;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Random;
import java.util.function.Consumer;
import java.util.zip.CRC32C;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** A profile file is hostile input: every malformed variant is refused with a reason, another image's is stale. */
class ProfileFileTest {
    private static final int PAGE = 4096;
    private static final Manifest MANIFEST = manifest(1);

    private static Manifest manifest(final long seed) {
        final byte[] image = new byte[100 * PAGE];
        new Random(seed).nextBytes(image);
        return Manifest.of(image, PAGE);
    }

    private static byte[] file(final int... pages) {
        final ByteBuffer b = ProfileFile.encode(MANIFEST, pages, pages.length);
        return Arrays.copyOf(b.array(), b.remaining());
    }

    /** {@code edit} applied to a valid file, its checksum then made right again (so the check behind it is reached). */
    private static byte[] edited(final byte[] f, final Consumer<ByteBuffer> edit) {
        final ByteBuffer b = ByteBuffer.wrap(f.clone()).order(ByteOrder.LITTLE_ENDIAN);
        edit.accept(b);
        final CRC32C crc = new CRC32C();
        crc.update(b.array(), 0, b.capacity() - 4);
        b.putInt(b.capacity() - 4, (int) crc.getValue());
        return b.array();
    }

    private static ProfileFile.Decoded decode(final byte[] f) {
        return ProfileFile.decode(ByteBuffer.wrap(f), MANIFEST, PageSource.MAX_PROFILE_PAGES);
    }

    @Test
    void shouldRoundTripAProfileInItsOrder() {
        final ProfileFile.Decoded d = decode(file(42, 7, 99, 0));
        assertEquals(ProfileFile.Kind.LOADED, d.kind());
        assertArrayEquals(new int[] {42, 7, 99, 0}, d.pages());
        assertEquals(ProfileFile.Kind.LOADED, decode(file()).kind(), "an empty profile is a profile");
    }

    @Test
    void shouldRefuseEveryMalformedFileSayingWhy() {
        final byte[] good = file(1, 2, 3);
        final int countAt = ProfileFile.HEADER_BYTES - 4;
        final byte[][] bad = {
            new byte[0],
            Arrays.copyOf(good, good.length - 5),                                            // truncated
            edited(good, b -> b.putInt(0, 0x12345678)),                                     // bad magic
            edited(good, b -> b.putInt(4, 2)),                                              // unknown version
            edited(good, b -> b.putInt(countAt, PageSource.MAX_PROFILE_PAGES + 1)),         // oversize count
            edited(good, b -> b.putInt(countAt, 2)),                                        // count disagrees with the length
            edited(good, b -> b.putInt(countAt, -1)),                                       // count 2^32-1
            edited(good, b -> b.putInt(ProfileFile.HEADER_BYTES + 4, 100)),                 // page past the image's end
            edited(good, b -> b.putInt(ProfileFile.HEADER_BYTES + 4, -1)),                  // page 2^32-1
            edited(good, b -> b.putInt(ProfileFile.HEADER_BYTES + 8, 1)),                   // page 1 twice
        };
        for (int i = 0; i < bad.length; i++) {
            final ProfileFile.Decoded d = decode(bad[i]);
            assertEquals(ProfileFile.Kind.MALFORMED, d.kind(), "variant " + i + ": " + d.why());
            assertEquals(0, d.pages().length);
            assertTrue(d.why() != null && !d.why().isEmpty());
        }
        final byte[] flipped = good.clone();
        flipped[ProfileFile.HEADER_BYTES] ^= 1; // the checksum no longer matches
        assertTrue(decode(flipped).why().contains("checksum"), decode(flipped).why());
    }

    @Test
    void shouldCallAProfileOfAnotherImageStale() {
        final ProfileFile.Decoded d = ProfileFile.decode(ByteBuffer.wrap(file(1, 2)), manifest(2), PageSource.MAX_PROFILE_PAGES);
        assertEquals(ProfileFile.Kind.STALE, d.kind());
        assertTrue(d.why().contains("another image"), d.why());
    }

    @Test
    void shouldKeepTheFirstPagesOfAProfileLongerThanTheLimit() {
        final ProfileFile.Decoded d = ProfileFile.decode(ByteBuffer.wrap(file(9, 8, 7, 6)), MANIFEST, 2);
        assertEquals(ProfileFile.Kind.LOADED, d.kind());
        assertArrayEquals(new int[] {9, 8}, d.pages());
    }
}
