package io.lazyblk.pagemap;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.zip.CRC32C;

/**
 * What an image provider says about one image: its size, page size, a CRC32C per page, and a SHA-256 digest of
 * the whole image. The engine verifies every fetched page against its checksum before the page becomes visible,
 * and identifies a local file's image by ({@link #size()}, {@link #digest()}). Immutable; thread-safe.
 *
 * <p>Wire form (little endian): magic "LZBM", version u32 = 1, size u64, page size u32, page count u32,
 * digest[32], then page count x u32 checksums. {@link #decode} checks all of it: it comes from the network.
 */
public final class Manifest {
    public static final int MAGIC = 0x4d425a4c; // "LZBM" little endian
    public static final int VERSION = 1;
    public static final int HEADER_BYTES = 4 + 4 + 8 + 4 + 4 + 32;
    /** Largest manifest accepted: 16 M pages (64 GiB at 4 KiB, 64 TiB at 4 MiB). */
    public static final int MAX_PAGES = 1 << 24;

    private final PageGeometry geometry;
    private final int[] checksums;
    private final byte[] digest;

    public Manifest(final long size, final int pageSize, final int[] checksums, final byte[] digest) {
        this.geometry = new PageGeometry(size, pageSize);
        if (checksums.length != geometry.pageCount()) {
            throw new IllegalArgumentException(checksums.length + " checksums for " + geometry.pageCount() + " pages");
        }
        if (digest.length != 32) {
            throw new IllegalArgumentException("digest must be 32 bytes (SHA-256), not " + digest.length);
        }
        this.checksums = checksums.clone();
        this.digest = digest.clone();
    }

    public PageGeometry geometry() {
        return geometry;
    }

    public long size() {
        return geometry.imageSize();
    }

    public int pageSize() {
        return geometry.pageSize();
    }

    public int pageCount() {
        return geometry.pageCount();
    }

    public int checksum(final int page) {
        return checksums[page];
    }

    public byte[] digest() {
        return digest.clone();
    }

    public String digestHex() {
        return HexFormat.of().formatHex(digest);
    }

    /** CRC32C of {@code length} bytes of {@code page} (a buffer positioned at the page start). */
    public static int crc(final ByteBuffer page) {
        final CRC32C c = new CRC32C();
        c.update(page);
        return (int) c.getValue();
    }

    /** True if {@code data} (the page's bytes, position to limit) matches the manifest. */
    public boolean verify(final int page, final ByteBuffer data) {
        return data.remaining() == geometry.pageLength(page) && crc(data) == checksums[page];
    }

    /** Same image: size, page size and digest all equal. */
    public boolean sameImage(final Manifest o) {
        return size() == o.size() && pageSize() == o.pageSize() && Arrays.equals(digest, o.digest);
    }

    public int encodedLength() {
        return HEADER_BYTES + 4 * checksums.length;
    }

    public ByteBuffer encode() {
        final ByteBuffer b = ByteBuffer.allocate(encodedLength()).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(MAGIC).putInt(VERSION).putLong(size()).putInt(pageSize()).putInt(pageCount()).put(digest);
        for (final int c : checksums) {
            b.putInt(c);
        }
        return b.flip();
    }

    /** Parses a manifest; throws {@link IllegalArgumentException} naming what is wrong with hostile or damaged input. */
    public static Manifest decode(final ByteBuffer in) {
        final ByteBuffer b = in.slice().order(ByteOrder.LITTLE_ENDIAN);
        if (b.remaining() < HEADER_BYTES) {
            throw new IllegalArgumentException("manifest of " + b.remaining() + " bytes is shorter than its header");
        }
        if (b.getInt() != MAGIC) {
            throw new IllegalArgumentException("not a lazyblk manifest (bad magic)");
        }
        final int version = b.getInt();
        if (version != VERSION) {
            throw new IllegalArgumentException("manifest version " + version + ", this engine reads version " + VERSION);
        }
        final long size = b.getLong();
        final int pageSize = b.getInt();
        final int pages = b.getInt();
        if (pages < 1 || pages > MAX_PAGES) {
            throw new IllegalArgumentException("manifest with " + Integer.toUnsignedString(pages) + " pages");
        }
        final byte[] digest = new byte[32];
        b.get(digest);
        if (b.remaining() != 4L * pages) {
            throw new IllegalArgumentException("manifest says " + pages + " pages but carries " + b.remaining() + " checksum bytes");
        }
        final int[] crcs = new int[pages];
        for (int i = 0; i < pages; i++) {
            crcs[i] = b.getInt();
        }
        return new Manifest(size, pageSize, crcs, digest); // PageGeometry checks size and page size agree with pages
    }
}
