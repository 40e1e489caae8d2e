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
    /** One checksum state per verifying thread (transports, the filler, requesting threads): no allocation per page. */
    private static final ThreadLocal<CRC32C> CRC = ThreadLocal.withInitial(CRC32C::new);
    public static final int MAGIC = 0x4d425a4c; // "LZBM" little endian
    public static final int VERSION = 1;
    public static final int HEADER_BYTES = 4 + 4 + 8 + 4 + 4 + 32;
    /** Largest manifest accepted: 16 M pages (64 GiB at 4 KiB, 64 TiB at 4 MiB). */
    public static final int MAX_PAGES = 1 << 24;

    private final PageGeometry geometry;
    /** The provider's pages: one checksum each. Equal to {@link #geometry} unless {@link #coarsened}. */
    private final PageGeometry sourceGeometry;
    /** Provider pages per page of {@link #geometry} (a power of two). */
    private final int sourcePagesPerPage;
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
        this.sourceGeometry = geometry;
        this.sourcePagesPerPage = 1;
        this.checksums = checksums.clone();
        this.digest = digest.clone();
    }

    private Manifest(final Manifest source, final int pageSize) {
        this.geometry = new PageGeometry(source.size(), pageSize);
        this.sourceGeometry = source.sourceGeometry;
        this.sourcePagesPerPage = pageSize / source.sourceGeometry.pageSize();
        this.checksums = source.checksums; // immutable: shared
        this.digest = source.digest;
    }

    /**
     * The same image seen in pages of {@code pageSize} bytes, each made of whole provider pages: a fetch of one such
     * page asks the provider for {@link #sourcePagesPerPage()} pages, and {@link #verify} checks each one's checksum.
     * The provider's page is the smallest unit it can vouch for, so a page never gets smaller than it.
     *
     * @throws IllegalArgumentException naming the allowed sizes if {@code pageSize} is not a power of two from the
     *     provider's page size to {@link PageGeometry#MAX_PAGE}
     */
    public Manifest coarsened(final int pageSize) {
        final int base = sourceGeometry.pageSize();
        if (pageSize == geometry.pageSize()) {
            return this;
        }
        if (Integer.bitCount(pageSize) != 1 || pageSize < base || pageSize > PageGeometry.MAX_PAGE) {
            throw new IllegalArgumentException("page size " + pageSize + " must be a power of two from the provider's page size ("
                + base + ", the smallest unit its checksums cover) to " + PageGeometry.MAX_PAGE
                + "; for smaller pages, restart the provider with a smaller --page-size");
        }
        return new Manifest(this, pageSize);
    }

    /** Provider pages per page: 1 unless {@link #coarsened}. */
    public int sourcePagesPerPage() {
        return sourcePagesPerPage;
    }

    /** The provider's page size: what a {@link PageSource} fetch counts in. */
    public int sourcePageSize() {
        return sourceGeometry.pageSize();
    }

    /** The first provider page of page {@code page}. */
    public int firstSourcePage(final int page) {
        return page * sourcePagesPerPage;
    }

    /** How many provider pages make up page {@code page} (fewer for the image's last page). */
    public int sourcePageCount(final int page) {
        return Math.min(sourcePagesPerPage, sourceGeometry.pageCount() - page * sourcePagesPerPage);
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

    /** The checksum of provider page {@code sourcePage} (a page of {@link #sourcePageSize()}). */
    public int checksum(final int sourcePage) {
        return checksums[sourcePage];
    }

    public byte[] digest() {
        return digest.clone();
    }

    public String digestHex() {
        return HexFormat.of().formatHex(digest);
    }

    /** CRC32C of {@code length} bytes of {@code page} (a buffer positioned at the page start). */
    public static int crc(final ByteBuffer page) {
        final CRC32C c = CRC.get();
        c.reset();
        c.update(page);
        return (int) c.getValue();
    }

    /**
     * True if {@code data} (the page's bytes, position to limit) matches the manifest: every provider page in it
     * matches its checksum. Leaves {@code data}'s position and limit as they were.
     */
    public boolean verify(final int page, final ByteBuffer data) {
        if (data.remaining() != geometry.pageLength(page)) {
            return false;
        }
        if (sourcePagesPerPage == 1) {
            final int pos = data.position();
            final boolean ok = crc(data) == checksums[page];
            data.position(pos);
            return ok;
        }
        final int pos = data.position();
        final int limit = data.limit();
        final CRC32C c = CRC.get();
        try {
            final int first = firstSourcePage(page);
            final int n = sourcePageCount(page);
            int at = pos;
            for (int i = 0; i < n; i++) {
                final int len = sourceGeometry.pageLength(first + i);
                data.limit(at + len).position(at);
                c.reset();
                c.update(data);
                if ((int) c.getValue() != checksums[first + i]) {
                    return false;
                }
                at += len;
            }
            return true;
        } finally {
            data.limit(limit).position(pos);
        }
    }

    /** Same image in the same pages: size, page size and digest all equal. */
    public boolean sameImage(final Manifest o) {
        return size() == o.size() && pageSize() == o.pageSize() && Arrays.equals(digest, o.digest);
    }

    public int encodedLength() {
        return HEADER_BYTES + 4 * checksums.length;
    }

    /** The provider's form: its page size and one checksum per provider page, also for a {@link #coarsened} view. */
    public ByteBuffer encode() {
        final ByteBuffer b = ByteBuffer.allocate(encodedLength()).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(MAGIC).putInt(VERSION).putLong(size()).putInt(sourceGeometry.pageSize()).putInt(checksums.length).put(digest);
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
