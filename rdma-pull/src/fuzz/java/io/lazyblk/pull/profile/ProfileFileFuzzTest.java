package io.lazyblk.pull.profile;

import com.code_intelligence.jazzer.junit.FuzzTest;
import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.provider.ProviderProtocol;
import io.lazyblk.sys.fuzz.FuzzBytes;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import java.util.zip.CRC32C;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Boot profiles from outside: {@code ProfileFile.decode} (a profile file beside the manifest cache) and
 * {@code ProviderProtocol.decodeProfileAnswer} (a provider's OP_PROFILE answer).
 *
 * <p>Input: a mode byte (0: a file, 1: an answer). A file: whether to make its CRC32C right (so the checks behind it are
 * reached), the reader's page limit, then the file's bytes, decoded for a fixed 100-page manifest. An answer: the image's
 * page count, then the payload. Properties: decode never throws and says LOADED, STALE or MALFORMED with a reason;
 * what it loads passes ProfilePages.check and re-encodes to the input (cut to the limit); a STALE file names another
 * manifest than this one; the answer decoder throws only IllegalArgumentException, and what it accepts lies in the
 * image, lists no page twice and re-encodes to the payload.
 */
class ProfileFileFuzzTest {
    private static final int PAGE = 4096;
    private static final Manifest MANIFEST;

    static {
        final byte[] image = new byte[100 * PAGE];
        new Random(21).nextBytes(image);
        MANIFEST = Manifest.of(image, PAGE);
    }

    @FuzzTest
    void decode(final byte[] input) {
        final FuzzBytes in = new FuzzBytes(input);
        if (in.pick(2) == 0) {
            file(in.bool(), 1 + in.pick(PageSource.MAX_PROFILE_PAGES), in.rest());
        } else {
            answer(in.u32(), in.rest());
        }
    }

    private static void file(final boolean fixCrc, final int maxPages, final byte[] bytes) {
        if (fixCrc && bytes.length >= 4) {
            final CRC32C crc = new CRC32C();
            crc.update(bytes, 0, bytes.length - 4);
            ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).putInt(bytes.length - 4, (int) crc.getValue());
        }
        final ProfileFile.Decoded d = ProfileFile.decode(ByteBuffer.wrap(bytes), MANIFEST, maxPages);
        switch (d.kind()) {
            case LOADED -> {
                assertNull(d.why());
                assertTrue(d.pages().length <= maxPages);
                assertNull(ProfilePages.check(d.pages(), d.pages().length, 100, PageSource.MAX_PROFILE_PAGES));
                final int stored = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).getInt(ProfileFile.HEADER_BYTES - 4);
                if (stored == d.pages().length) {
                    assertArrayEquals(bytes, FuzzBytes.toArray(ProfileFile.encode(MANIFEST, d.pages(), d.pages().length)),
                        "a loaded profile re-encodes differently");
                }
            }
            case STALE -> {
                assertNotNull(d.why());
                assertEquals(0, d.pages().length);
                final byte[] digest = Arrays.copyOfRange(bytes, 16, 16 + Manifest.HASH_BYTES);
                final ByteBuffer b = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
                assertTrue(!Arrays.equals(digest, MANIFEST.digest()) || b.getInt(8) != PAGE || b.getInt(12) != 100,
                    "called stale, but it names this manifest");
            }
            case MALFORMED -> {
                assertNotNull(d.why());
                assertEquals(0, d.pages().length);
            }
        }
    }

    private static void answer(final int pageCount, final byte[] payload) {
        final int[] pages;
        try {
            pages = ProviderProtocol.decodeProfileAnswer(ByteBuffer.wrap(payload), pageCount);
        } catch (final IllegalArgumentException refused) {
            return;
        }
        assertNull(ProfilePages.check(pages, pages.length, pageCount, PageSource.MAX_PROFILE_PAGES));
        final ByteBuffer again = ProviderProtocol.encodeProfileAnswer(0, pages);
        assertArrayEquals(payload, Arrays.copyOfRange(FuzzBytes.toArray(again), ProviderProtocol.RESPONSE_HEADER_BYTES,
            again.remaining()), "an accepted answer re-encodes differently");
    }

    /** Writes the seed corpus into directory {@code args[0]} (tools/fuzz profile-file --write-seeds). */
    public static void main(final String[] args) throws IOException {
        final Path dir = Path.of(args[0]);
        Files.createDirectories(dir);
        final byte[] good = FuzzBytes.toArray(ProfileFile.encode(MANIFEST, new int[] {42, 7, 99, 0}, 4));
        Files.write(dir.resolve("file-good"), new FuzzBytes.Writer().u8(0).bool(false).u32(PageSource.MAX_PROFILE_PAGES - 1)
            .bytes(good).toByteArray());
        Files.write(dir.resolve("file-cut-to-2"), new FuzzBytes.Writer().u8(0).bool(false).u32(1).bytes(good).toByteArray());
        final byte[] dup = FuzzBytes.toArray(ProfileFile.encode(MANIFEST, new int[] {5, 6, 5}, 3));
        Files.write(dir.resolve("file-duplicate"), new FuzzBytes.Writer().u8(0).bool(false).u32(1000).bytes(dup).toByteArray());
        final byte[] other = good.clone();
        other[20] ^= 1; // another digest, with the CRC made right again
        Files.write(dir.resolve("file-stale"), new FuzzBytes.Writer().u8(0).bool(true).u32(1000).bytes(other).toByteArray());
        Files.write(dir.resolve("answer-good"), new FuzzBytes.Writer().u8(1).u32(100).u32(3).u32(1).u32(99).toByteArray());
        Files.write(dir.resolve("answer-out-of-range"), new FuzzBytes.Writer().u8(1).u32(10).u32(3).u32(10).toByteArray());
    }
}
