package io.lazyblk.pagemap;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.HexFormat;

/**
 * What an image provider says about one image: its size, page size and a SHA-256 of every page. The engine verifies
 * every fetched page against its hash before the page becomes visible. A page hash holds against a forger (finding
 * other bytes with the same SHA-256 is out of reach), so a page that passes is the image's, whoever sent it.
 *
 * <p>The manifest's identity is {@link #digest()}: the SHA-256 of its wire form, which covers the size, the page size
 * and every page hash. It is computed here from the bytes received, never taken from a sender, so two manifests with
 * one digest describe the same bytes. The engine pins the digest of the image it fills (from the seed, its last
 * source) and refuses any other source whose manifest has another. Immutable; thread-safe.
 *
 * <p>Zero pages: a provider page whose hash is the SHA-256 of that many zero bytes holds only zeros (no other bytes have
 * that hash within reach of a forger), so the manifest marks zero pages without a flag anyone could get wrong:
 * {@link #isZeroSourcePage} and {@link #isZeroPage} are derived here from the hashes. An engine never fetches such a
 * page, leaves it a hole in its local file and answers reads of it with zeros.
 *
 * <p>Wire form (little endian): magic "LZBM", version u32 = 2, size u64, page size u32, page count u32, then page count
 * x 32-byte SHA-256. {@link #decode} checks all of it: it comes from the network.
 *
 * <p>Live manifests ({@link #live}): a disk that is still being written (a running engine exporting its local file to
 * the destination of a live migration) has no fixed page hashes. Its pages are trusted because they come from the
 * export the access token authenticates, as a seed's manifest is trusted today; nothing checks them page by page.
 * Its identity is a 32-byte digest the export gives (not computed from hashes), and it has no zero pages. Wire form:
 * the same header with version u32 = {@link #LIVE_VERSION} (3), then the 32-byte digest and nothing else. A new
 * version number, not a flag, so that a client that predates live manifests refuses one ("manifest version 3, this
 * engine reads version 2") instead of reading its digest as the hash of a one-page image.
 */
public final class Manifest {
    public static final int MAGIC = 0x4d425a4c; // "LZBM" little endian
    public static final int VERSION = 2;
    /** Wire version of a {@link #live} manifest: the header, then its 32-byte digest (see the class comment). */
    public static final int LIVE_VERSION = 3;
    public static final int HEADER_BYTES = 4 + 4 + 8 + 4 + 4;
    public static final int HASH_BYTES = 32;
    /** Largest manifest accepted: 16 M pages (64 GiB at 4 KiB pages); 512 MiB of hashes. */
    public static final int MAX_PAGES = 1 << 24;
    /**
     * Largest image served: 1 TiB. The engine keeps a bit per 512-byte sector of what the guest wrote, in three copies
     * (in flight, done, recorded): 256 MiB each at 1 TiB. A size a manifest claims beyond this is refused, not allocated.
     */
    public static final long MAX_IMAGE_BYTES = 1L << 40;

    /** One SHA-256 state and one output buffer per verifying thread: no allocation per page. */
    private static final ThreadLocal<MessageDigest> SHA = ThreadLocal.withInitial(Manifest::sha256);
    private static final ThreadLocal<byte[]> OUT = ThreadLocal.withInitial(() -> new byte[HASH_BYTES]);
    /**
     * Per verifying thread, the heap chunk native bytes are hashed from: the SHA-256 intrinsic works on arrays, and a
     * direct buffer is copied through a 4 KiB array inside the JDK anyway; this copies in 16 KiB steps, allocating nothing.
     */
    private static final int CHUNK = 16 << 10;
    private static final ThreadLocal<byte[]> CHUNKS = ThreadLocal.withInitial(() -> new byte[CHUNK]);

    private final PageGeometry geometry;
    /** The provider's pages: one hash each. Equal to {@link #geometry} unless {@link #coarsened}. */
    private final PageGeometry sourceGeometry;
    /** Provider pages per page of {@link #geometry} (a power of two). */
    private final int sourcePagesPerPage;
    /** Page hashes, {@link #HASH_BYTES} each, in page order; empty for a {@link #live} manifest. */
    private final byte[] hashes;
    /** No page hashes: every page is taken as the export sends it ({@link #live}). */
    private final boolean live;
    private final byte[] digest;
    /** A bit per provider page: its hash is that of zeros. Shared by coarsened views (immutable after construction). */
    private final long[] zeroSource;
    private final int zeroSourceCount;
    /** A bit per page of {@link #geometry}: every provider page in it is zero. */
    private final long[] zeroPages;
    private final int zeroPageCount;

    /**
     * @param pageHashes the SHA-256 of each provider page, concatenated (see {@link #hashPage})
     * @throws IllegalArgumentException naming what is wrong (size, page size, number of hashes)
     */
    public Manifest(final long size, final int pageSize, final byte[] pageHashes) {
        checkSize(size);
        this.geometry = new PageGeometry(size, pageSize);
        if (pageHashes.length != (long) geometry.pageCount() * HASH_BYTES) {
            throw new IllegalArgumentException(pageHashes.length / HASH_BYTES + " page hashes for " + geometry.pageCount() + " pages");
        }
        this.sourceGeometry = geometry;
        this.sourcePagesPerPage = 1;
        this.live = false;
        this.hashes = pageHashes.clone();
        final MessageDigest sha = sha256();
        sha.update(header(size, pageSize, geometry.pageCount()));
        sha.update(hashes);
        this.digest = sha.digest();
        this.zeroSource = zeroBits(geometry, hashes);
        this.zeroSourceCount = cardinality(zeroSource);
        this.zeroPages = zeroSource;
        this.zeroPageCount = zeroSourceCount;
    }

    private Manifest(final Manifest source, final int pageSize) {
        this.geometry = new PageGeometry(source.size(), pageSize);
        this.sourceGeometry = source.sourceGeometry;
        this.sourcePagesPerPage = pageSize / source.sourceGeometry.pageSize();
        this.hashes = source.hashes; // immutable: shared
        this.live = source.live;
        this.digest = source.digest;
        this.zeroSource = source.zeroSource;
        this.zeroSourceCount = source.zeroSourceCount;
        this.zeroPages = new long[live ? 0 : (geometry.pageCount() + 63) >>> 6];
        int zeros = 0;
        for (int p = 0; p < geometry.pageCount() && !live; p++) {
            boolean all = true;
            for (int i = 0, sp = firstSourcePage(p); i < sourcePageCount(p) && all; i++, sp++) {
                all = (zeroSource[sp >>> 6] & (1L << sp)) != 0;
            }
            if (all) {
                zeroPages[p >>> 6] |= 1L << p;
                zeros++;
            }
        }
        this.zeroPageCount = zeros;
    }

    /** A live manifest: no hashes, no zero pages, the export's digest. */
    private Manifest(final PageGeometry geometry, final byte[] digest) {
        this.geometry = geometry;
        this.sourceGeometry = geometry;
        this.sourcePagesPerPage = 1;
        this.live = true;
        this.hashes = new byte[0];
        this.digest = digest.clone();
        this.zeroSource = new long[0];
        this.zeroSourceCount = 0;
        this.zeroPages = zeroSource;
        this.zeroPageCount = 0;
    }

    /**
     * The manifest of a live disk (see the class comment): {@code size} bytes in pages of {@code pageSize}, identified by
     * {@code digest}, with no page hashes. {@link #verify} and {@link #verifyPart} accept any bytes of the page's length,
     * no page is a zero page, and {@link #pageHash} throws.
     *
     * @param size a positive multiple of 512, at most {@link #MAX_IMAGE_BYTES}
     * @param pageSize a power of two from {@link PageGeometry#MIN_PAGE} to {@link PageGeometry#MAX_PAGE}, giving at most
     *     {@link #MAX_PAGES} pages (what {@link #decode} accepts)
     * @param digest the export's identity, {@link #HASH_BYTES} bytes (copied)
     * @throws IllegalArgumentException naming what is wrong
     */
    public static Manifest live(final long size, final int pageSize, final byte[] digest) {
        checkSize(size);
        if (digest.length != HASH_BYTES) {
            throw new IllegalArgumentException("a live manifest's digest of " + digest.length + " bytes; " + HASH_BYTES + " expected");
        }
        final PageGeometry g = new PageGeometry(size, pageSize);
        if (g.pageCount() > MAX_PAGES) {
            throw new IllegalArgumentException("an image of " + size + " bytes has " + g.pageCount() + " pages of " + pageSize
                + " bytes; a manifest holds at most " + MAX_PAGES + ": use larger pages");
        }
        return new Manifest(g, digest);
    }

    /** True for a manifest without page hashes ({@link #live}): its pages are trusted from the export that sends them. */
    public boolean isLive() {
        return live;
    }

    /** Which pages of {@code g} carry the hash of zeros: two hashes to compare against (full pages and the last one). */
    private static long[] zeroBits(final PageGeometry g, final byte[] hashes) {
        final long[] bits = new long[(g.pageCount() + 63) >>> 6];
        final byte[] full = zeroHash(g.pageSize());
        final int last = g.pageCount() - 1;
        final byte[] tail = g.pageLength(last) == g.pageSize() ? full : zeroHash(g.pageLength(last));
        for (int p = 0; p < g.pageCount(); p++) {
            final byte[] z = p == last ? tail : full;
            if (Arrays.equals(hashes, p * HASH_BYTES, (p + 1) * HASH_BYTES, z, 0, HASH_BYTES)) {
                bits[p >>> 6] |= 1L << p;
            }
        }
        return bits;
    }

    private static int cardinality(final long[] bits) {
        int n = 0;
        for (final long w : bits) {
            n += Long.bitCount(w);
        }
        return n;
    }

    /** The SHA-256 of {@code length} zero bytes: the hash a zero page carries. */
    public static byte[] zeroHash(final int length) {
        final MessageDigest sha = sha256();
        final byte[] zeros = new byte[Math.min(length, 1 << 16)];
        for (int done = 0; done < length; done += zeros.length) {
            sha.update(zeros, 0, Math.min(zeros.length, length - done));
        }
        return sha.digest();
    }

    /** The manifest of {@code image} in pages of {@code pageSize} (tests, tools; providers build theirs from files). */
    public static Manifest of(final byte[] image, final int pageSize) {
        final PageGeometry g = new PageGeometry(image.length, pageSize);
        final byte[] hashes = new byte[g.pageCount() * HASH_BYTES];
        for (int p = 0; p < g.pageCount(); p++) {
            hashPage(ByteBuffer.wrap(image, (int) g.pageStart(p), g.pageLength(p)), hashes, p * HASH_BYTES);
        }
        return new Manifest(image.length, pageSize, hashes);
    }

    private static void checkSize(final long size) {
        if (size > MAX_IMAGE_BYTES) {
            throw new IllegalArgumentException("an image of " + size + " bytes is larger than lazyblk serves ("
                + MAX_IMAGE_BYTES + " bytes, 1 TiB)");
        }
    }

    /** The SHA-256 of {@code page}'s remaining bytes into {@code out} at {@code at}; leaves its position as it was. */
    public static void hashPage(final ByteBuffer page, final byte[] out, final int at) {
        final MessageDigest sha = SHA.get();
        final int pos = page.position();
        sha.update(page);
        page.position(pos);
        try {
            sha.digest(out, at, HASH_BYTES);
        } catch (final java.security.DigestException e) {
            throw new IllegalStateException("a 32-byte SHA-256 always fits 32 bytes", e);
        }
    }

    /**
     * The same image seen in pages of {@code pageSize} bytes, each made of whole provider pages: a fetch of one such
     * page asks the provider for {@link #sourcePagesPerPage()} pages, and {@link #verify} checks each one's hash.
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
                + base + ", the smallest unit its hashes cover) to " + PageGeometry.MAX_PAGE
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

    /** Whether provider page {@code sourcePage} holds only zeros (its hash is that of zeros); never for a live manifest. */
    public boolean isZeroSourcePage(final int sourcePage) {
        return !live && (zeroSource[sourcePage >>> 6] & (1L << sourcePage)) != 0;
    }

    /**
     * Whether page {@code page} holds only zeros: every provider page in it does. Never fetched by an engine. Never for
     * a live manifest: its pages have no hashes to say so.
     */
    public boolean isZeroPage(final int page) {
        return !live && (zeroPages[page >>> 6] & (1L << page)) != 0;
    }

    /** Pages ({@link #pageSize()}) that hold only zeros. */
    public int zeroPageCount() {
        return zeroPageCount;
    }

    /** Provider pages that hold only zeros. */
    public int zeroSourcePageCount() {
        return zeroSourceCount;
    }

    /**
     * The SHA-256 of provider page {@code sourcePage} (a page of {@link #sourcePageSize()}); a copy.
     *
     * @throws IllegalStateException for a {@link #live} manifest, which has no page hashes
     */
    public byte[] pageHash(final int sourcePage) {
        if (live) {
            throw new IllegalStateException("a live manifest has no page hashes: its pages are trusted from the export");
        }
        return Arrays.copyOfRange(hashes, sourcePage * HASH_BYTES, (sourcePage + 1) * HASH_BYTES);
    }

    /**
     * The manifest's identity: SHA-256 of its wire form (size, page size, every page hash); for a {@link #live}
     * manifest, the digest the export gave. A copy.
     */
    public byte[] digest() {
        return digest.clone();
    }

    public String digestHex() {
        return HexFormat.of().formatHex(digest);
    }

    /**
     * True if {@code data} (the page's bytes, position to limit) matches the manifest: every provider page in it
     * matches its hash. Leaves {@code data}'s position and limit as they were. No allocation. For a {@link #live}
     * manifest, true for any bytes of the page's length (there is no hash to check them against).
     */
    public boolean verify(final int page, final ByteBuffer data) {
        // A segment over the buffer's bytes (heap or direct) leaves the buffer's position and limit alone.
        return data.remaining() == geometry.pageLength(page)
            && verify(page, java.lang.foreign.MemorySegment.ofBuffer(data), 0);
    }

    /**
     * As {@link #verify(int, ByteBuffer)}, for the page's bytes at {@code offset} in native memory {@code data}. No
     * allocation: for the data path.
     */
    public boolean verify(final int page, final java.lang.foreign.MemorySegment data, final long offset) {
        if (offset < 0 || data.byteSize() - offset < geometry.pageLength(page)) {
            return false;
        }
        long at = offset;
        for (int i = 0; i < sourcePageCount(page); i++) {
            if (!verifyPart(page, i, data, at)) {
                return false;
            }
            at += sourceGeometry.pageLength(firstSourcePage(page) + i);
        }
        return true;
    }

    /**
     * Checks one provider page of page {@code page}: its {@code part}-th ({@code 0 <= part < }{@link #sourcePageCount}),
     * whose bytes are at {@code offset} in {@code data}. No allocation. Lets a reader be answered once the provider pages
     * it needs are checked, before the rest of a coarse page is. For a {@link #live} manifest, true for any bytes that
     * fit (no hash to check them against); false still for a part or range outside the page or {@code data}.
     */
    public boolean verifyPart(final int page, final int part, final java.lang.foreign.MemorySegment data, final long offset) {
        final int sp = firstSourcePage(page) + part;
        if (part < 0 || part >= sourcePageCount(page)) {
            return false;
        }
        final int len = sourceGeometry.pageLength(sp);
        if (offset < 0 || data.byteSize() - offset < len) {
            return false;
        }
        if (live) {
            return true;
        }
        final MessageDigest sha = SHA.get();
        final byte[] chunk = CHUNKS.get();
        final byte[] out = OUT.get();
        for (int done = 0; done < len; ) {
            final int step = Math.min(CHUNK, len - done);
            java.lang.foreign.MemorySegment.copy(data, java.lang.foreign.ValueLayout.JAVA_BYTE, offset + done, chunk, 0, step);
            sha.update(chunk, 0, step);
            done += step;
        }
        try {
            sha.digest(out, 0, HASH_BYTES);
        } catch (final java.security.DigestException e) {
            throw new IllegalStateException("a 32-byte SHA-256 always fits 32 bytes", e);
        }
        return Arrays.equals(out, 0, HASH_BYTES, hashes, sp * HASH_BYTES, (sp + 1) * HASH_BYTES);
    }

    /**
     * Same image in the same pages: one digest (so the same size, provider page size and page hashes) and page size.
     * A live manifest is never the same image as one with hashes, whatever digest its export claims: its digest is
     * given, not computed, and must not pass for a hashed image's, whose pages are then checked against nothing.
     */
    public boolean sameImage(final Manifest o) {
        return pageSize() == o.pageSize() && live == o.live && Arrays.equals(digest, o.digest);
    }

    public int encodedLength() {
        return HEADER_BYTES + (live ? HASH_BYTES : hashes.length);
    }

    private static ByteBuffer header(final int version, final long size, final int pageSize, final int pages) {
        return ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN)
            .putInt(MAGIC).putInt(version).putLong(size).putInt(pageSize).putInt(pages).flip();
    }

    private static ByteBuffer header(final long size, final int pageSize, final int pages) {
        return header(VERSION, size, pageSize, pages);
    }

    /**
     * The provider's form: its page size and one hash per provider page, also for a {@link #coarsened} view; for a
     * {@link #live} manifest, version {@link #LIVE_VERSION} and the digest.
     */
    public ByteBuffer encode() {
        final ByteBuffer b = ByteBuffer.allocate(encodedLength()).order(ByteOrder.LITTLE_ENDIAN);
        b.put(header(live ? LIVE_VERSION : VERSION, size(), sourceGeometry.pageSize(), sourceGeometry.pageCount()));
        b.put(live ? digest : hashes);
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
        if (version != VERSION && version != LIVE_VERSION) {
            throw new IllegalArgumentException("manifest version " + Integer.toUnsignedString(version) + ", this engine reads versions "
                + VERSION + " and " + LIVE_VERSION + " (live)"
                + (version == 1 ? " (a provider of an older lazyblk, with CRC32C page checks: upgrade it)" : ""));
        }
        final long size = b.getLong();
        final int pageSize = b.getInt();
        final int pages = b.getInt();
        if (pages < 1 || pages > MAX_PAGES) {
            throw new IllegalArgumentException("manifest with " + Integer.toUnsignedString(pages) + " pages (at most " + MAX_PAGES + ")");
        }
        if (size < 0 || size > MAX_IMAGE_BYTES) {
            throw new IllegalArgumentException("manifest claims an image of " + Long.toUnsignedString(size)
                + " bytes; lazyblk serves images up to " + MAX_IMAGE_BYTES + " bytes (1 TiB)");
        }
        if (version == LIVE_VERSION) {
            if (b.remaining() != HASH_BYTES) {
                throw new IllegalArgumentException("live manifest with " + b.remaining() + " bytes after its header ("
                    + HASH_BYTES + ", its digest, expected)");
            }
            final byte[] digest = new byte[HASH_BYTES];
            b.get(digest);
            final PageGeometry g = new PageGeometry(size, pageSize); // checks size and page size
            if (g.pageCount() != pages) {
                throw new IllegalArgumentException("live manifest says " + pages + " pages; " + size + " bytes in pages of "
                    + pageSize + " are " + g.pageCount());
            }
            return new Manifest(g, digest);
        }
        if (b.remaining() != (long) HASH_BYTES * pages) {
            throw new IllegalArgumentException("manifest says " + pages + " pages but carries " + b.remaining() + " hash bytes");
        }
        final byte[] hashes = new byte[HASH_BYTES * pages];
        b.get(hashes);
        return new Manifest(size, pageSize, hashes); // PageGeometry checks size and page size agree with pages
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (final NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is part of every JDK; this one lacks it", e);
        }
    }
}
