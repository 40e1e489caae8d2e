package io.lazyblk.pull.profile;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.zip.CRC32C;

/**
 * A boot profile on disk ({@code IMAGE.lzbprofile}, beside the image's manifest cache), little endian:
 *
 * <pre>
 * magic "LZBF" u32 | version u32 = 1 | page size u32 | page count u32 | manifest digest 32 bytes
 * | entry count u32 | entry count x page u32 | CRC32C u32 of everything before it
 * </pre>
 *
 * Bound to the manifest it was learned for (digest, page size, page count): a profile of another version of the image
 * is {@link Kind#STALE}. Anything else wrong (size, magic, version, count, checksum, a page out of range or listed twice)
 * is {@link Kind#MALFORMED}: a file is hostile input, like a manifest. Written atomically (temporary file, fsync,
 * rename, fsync of the directory), so a crash leaves the old profile or the new one.
 */
public final class ProfileFile {
    /** "LZBF" read as a little-endian u32. */
    public static final int MAGIC = 0x46425a4c;
    public static final int VERSION = 1;
    static final int PAGE_SIZE_OFFSET = 8;
    static final int PAGE_COUNT_OFFSET = 12;
    static final int DIGEST_OFFSET = 16;
    static final int COUNT_OFFSET = DIGEST_OFFSET + Manifest.HASH_BYTES;
    public static final int HEADER_BYTES = COUNT_OFFSET + 4;
    static final int TRAILER_BYTES = 4;
    /** The largest file a reader looks at: a full profile. */
    public static final int MAX_FILE_BYTES = HEADER_BYTES + 4 * PageSource.MAX_PROFILE_PAGES + TRAILER_BYTES;

    private ProfileFile() {
    }

    /** What a profile file holds. */
    public enum Kind { LOADED, STALE, MALFORMED }

    /**
     * The outcome of decoding a file.
     *
     * @param pages the profile (LOADED only; cut to the reader's limit if longer), else empty
     * @param why what is wrong (STALE, MALFORMED), else null
     */
    public record Decoded(Kind kind, int[] pages, String why) {
        static Decoded malformed(final String why) {
            return new Decoded(Kind.MALFORMED, new int[0], why);
        }
    }

    /** The provider pages of {@code manifest}'s image (a profile counts in them whatever the manifest's view). */
    static int sourcePages(final Manifest manifest) {
        return (int) ((manifest.size() + manifest.sourcePageSize() - 1) / manifest.sourcePageSize());
    }

    /** The file's bytes for {@code pages[0, n)} of {@code manifest}'s image. */
    public static ByteBuffer encode(final Manifest manifest, final int[] pages, final int n) {
        final ByteBuffer b = ByteBuffer.allocate(HEADER_BYTES + 4 * n + TRAILER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(MAGIC).putInt(VERSION).putInt(manifest.sourcePageSize()).putInt(sourcePages(manifest)).put(manifest.digest()).putInt(n);
        for (int i = 0; i < n; i++) {
            b.putInt(pages[i]);
        }
        final CRC32C crc = new CRC32C();
        crc.update(b.array(), 0, b.position());
        b.putInt((int) crc.getValue());
        return b.flip();
    }

    /**
     * Decodes a file's bytes for {@code manifest}'s image, keeping at most {@code maxPages} entries (the first ones: a
     * profile written under a larger limit is cut, not refused). Never throws.
     */
    public static Decoded decode(final ByteBuffer file, final Manifest manifest, final int maxPages) {
        final ByteBuffer b = file.slice().order(ByteOrder.LITTLE_ENDIAN);
        final int length = b.remaining();
        if (length < HEADER_BYTES + TRAILER_BYTES || length > MAX_FILE_BYTES) {
            return Decoded.malformed("a file of " + length + " bytes (" + (HEADER_BYTES + TRAILER_BYTES) + " to " + MAX_FILE_BYTES + ")");
        }
        if (b.getInt(0) != MAGIC) {
            return Decoded.malformed("not a boot profile (bad magic)");
        }
        if (b.getInt(4) != VERSION) {
            return Decoded.malformed("profile version " + Integer.toUnsignedString(b.getInt(4)) + ", not " + VERSION);
        }
        final long count = Integer.toUnsignedLong(b.getInt(COUNT_OFFSET));
        if (count > PageSource.MAX_PROFILE_PAGES) {
            return Decoded.malformed(count + " pages (at most " + PageSource.MAX_PROFILE_PAGES + ")");
        }
        if (length != HEADER_BYTES + 4 * count + TRAILER_BYTES) {
            return Decoded.malformed("a file of " + length + " bytes for " + count + " pages (damaged or cut short)");
        }
        final byte[] all = new byte[length];
        b.get(0, all);
        final CRC32C crc = new CRC32C();
        crc.update(all, 0, length - TRAILER_BYTES);
        if ((int) crc.getValue() != b.getInt(length - TRAILER_BYTES)) {
            return Decoded.malformed("checksum mismatch (damaged)");
        }
        final byte[] digest = Arrays.copyOfRange(all, DIGEST_OFFSET, DIGEST_OFFSET + Manifest.HASH_BYTES);
        if (b.getInt(PAGE_SIZE_OFFSET) != manifest.sourcePageSize() || b.getInt(PAGE_COUNT_OFFSET) != sourcePages(manifest)
            || !Arrays.equals(digest, manifest.digest())) {
            return new Decoded(Kind.STALE, new int[0], "learned for another image (" + Integer.toUnsignedString(b.getInt(PAGE_COUNT_OFFSET))
                + " pages of " + Integer.toUnsignedString(b.getInt(PAGE_SIZE_OFFSET)) + " bytes, digest "
                + java.util.HexFormat.of().formatHex(digest, 0, 8) + "...; the image now has digest " + manifest.digestHex().substring(0, 16)
                + "...)");
        }
        final int[] pages = new int[(int) count];
        for (int i = 0; i < pages.length; i++) {
            pages[i] = b.getInt(HEADER_BYTES + 4 * i);
        }
        final String wrong = ProfilePages.check(pages, pages.length, sourcePages(manifest), PageSource.MAX_PROFILE_PAGES);
        if (wrong != null) {
            return Decoded.malformed(wrong);
        }
        return new Decoded(Kind.LOADED, pages.length > maxPages ? Arrays.copyOf(pages, maxPages) : pages, null);
    }

    /** Reads and decodes {@code file}; null if there is none. */
    public static Decoded read(final Path file, final Manifest manifest, final int maxPages) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            final long size = ch.size();
            if (size > MAX_FILE_BYTES) {
                return Decoded.malformed("a file of " + size + " bytes (at most " + MAX_FILE_BYTES + ")");
            }
            final ByteBuffer b = ByteBuffer.allocate((int) size);
            while (b.hasRemaining() && ch.read(b) >= 0) {
                // the whole (small) file
            }
            return decode(b.flip(), manifest, maxPages);
        } catch (final NoSuchFileException e) {
            return null;
        }
    }

    /** Writes {@code pages[0, n)} atomically as {@code file}: temporary file, fsync, rename, fsync of the directory. */
    public static void write(final Path file, final Manifest manifest, final int[] pages, final int n) throws IOException {
        final ByteBuffer b = encode(manifest, pages, n);
        final Path dir = file.toAbsolutePath().getParent();
        Files.createDirectories(dir);
        // The rename is made durable too: without it a crash could bring back the old profile.
        io.lazyblk.pull.manifest.AtomicFile.write(file, b, true);
    }
}
