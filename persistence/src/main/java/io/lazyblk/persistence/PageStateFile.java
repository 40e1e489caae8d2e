package io.lazyblk.persistence;

import io.lazyblk.sys.FileCalls;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.zip.CRC32C;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The durable record of what a local image file already holds, kept beside it: which pages are local (their
 * data is durable in the image file), which sectors of not-yet-local pages the guest wrote (those bytes must
 * never be overwritten by a fetch, before or after a crash), and whether the engine switched to disk-only.
 *
 * <p>Layout, 4 KiB blocks: block 0 the identity header (magic, version, image size, page size, page count,
 * manifest digest, CRC32C), block 1 the disk-only flag, then the page bitmap, then the guest-sector bitmap.
 * Bits only ever go from 0 to 1, so a torn block write can only forget progress (pages get refetched), never
 * invent it. Callers order durability: image data {@code fdatasync} first, then {@link #commit()}.
 *
 * <p>Thread-safety: every method is serialized by this object's monitor. It is meant to have one caller, the
 * engine's persistence agent, which batches marks between commits; the data path keeps its own lock-free copy
 * of page states and never calls in here per request.
 */
public final class PageStateFile implements AutoCloseable {
    private static final int MAGIC = 0x53425a4c; // "LZBS"
    private static final int VERSION = 1;
    private static final int BLOCK = 4096;
    private static final int SECTOR = 512;
    private static final long DISK_ONLY_MAGIC = 0x594c4e4f4b534944L; // "DISKONLY"
    /**
     * Largest image a state file describes: 1 TiB, as the manifest allows (page-map's Manifest.MAX_IMAGE_BYTES). Its
     * guest-sector bitmap is then 256 MiB; a header claiming more is damaged or hostile and is refused before anything
     * is allocated from it.
     */
    public static final long MAX_IMAGE_BYTES = 1L << 40;
    private static final int MAX_PAGE_BYTES = 4 << 20;
    /** The identity header: magic, version, image size, page size, page count, digest, CRC32C of what precedes it. */
    private static final int HEADER_BYTES = 4 + 4 + 8 + 4 + 4 + 32 + 4;

    /** Bytes moved per native call when loading or writing (bitmaps reach 16 MiB for a 64 GiB image). */
    private static final int CHUNK = 1 << 20;

    private final Path path;
    private final FileIo ch;
    /**
     * Native scratch for every transfer (at most {@link #CHUNK} bytes: less for a small file) and its one-entry iovec;
     * guarded by this monitor.
     */
    private final Arena arena = Arena.ofShared();
    private final MemorySegment scratch;
    private final MemorySegment iov = arena.allocate(16, 8);
    private final long imageSize;
    private final int pageSize;
    private final int pageCount;
    private final byte[] digest;
    private final long[] local;
    private final long[] guestSectors;
    private final long pageBitmapOffset;
    private final long sectorBitmapOffset;
    private final boolean[] dirtyPageBlocks;
    private final boolean[] dirtySectorBlocks;
    private volatile boolean diskOnly;
    private int localCount;
    /** The first failed write or sync (guarded by this monitor); sticky, see {@link #commit()}. */
    private String failure;

    private PageStateFile(final Path path, final FileIo ch, final long imageSize, final int pageSize, final byte[] digest)
        throws IOException {
        if (imageSize <= 0 || imageSize > MAX_IMAGE_BYTES || imageSize % SECTOR != 0 || Integer.bitCount(pageSize) != 1
            || pageSize < 4096 || pageSize > MAX_PAGE_BYTES) {
            throw new IOException(path + " describes an image of " + imageSize + " bytes in pages of " + pageSize
                + " bytes; a state file describes at most " + MAX_IMAGE_BYTES + " bytes (1 TiB) in pages of 4 KiB to 4 MiB."
                + " It is damaged: move it away (the image beside it will then be treated as empty and refetched)");
        }
        this.path = path;
        this.ch = ch;
        this.scratch = arena.allocate(Math.min(CHUNK, roundUp(layoutBytes(imageSize, pageSize))), 4096);
        this.imageSize = imageSize;
        this.pageSize = pageSize;
        this.pageCount = (int) ((imageSize + pageSize - 1) / pageSize);
        this.digest = digest.clone();
        this.local = new long[(pageCount + 63) / 64];
        this.guestSectors = new long[(int) ((imageSize / SECTOR + 63) / 64)];
        this.pageBitmapOffset = 2L * BLOCK;
        this.sectorBitmapOffset = pageBitmapOffset + roundUp(local.length * 8L);
        this.dirtyPageBlocks = new boolean[(int) (roundUp(local.length * 8L) / BLOCK)];
        this.dirtySectorBlocks = new boolean[(int) (roundUp(guestSectors.length * 8L) / BLOCK)];
    }

    private static long roundUp(final long n) {
        return Math.max(BLOCK, (n + BLOCK - 1) / BLOCK * BLOCK);
    }

    /** The state file that belongs to local image {@code image}. */
    public static Path beside(final Path image) {
        return image.resolveSibling(image.getFileName() + ".lzbstate");
    }

    /**
     * Opens the state file at {@code path}, creating it (all pages absent) if missing. An existing file must
     * describe the same image (size, page size, manifest digest) or this throws an IOException that says so.
     */
    public static PageStateFile openOrCreate(final Path path, final long imageSize, final int pageSize, final byte[] digest)
        throws IOException {
        return openOrCreate(path, imageSize, pageSize, digest, FileIo.NATIVE);
    }

    /** As {@link #openOrCreate(Path, long, int, byte[])}, through {@code files} (tests put a simulated disk there). */
    public static PageStateFile openOrCreate(final Path path, final long imageSize, final int pageSize, final byte[] digest,
                                             final FileIo.Opener files) throws IOException {
        if (digest.length != 32) {
            throw new IllegalArgumentException("digest must be 32 bytes");
        }
        final FileIo ch = files.open(path, false, true);
        PageStateFile s = null;
        try {
            s = new PageStateFile(path, ch, imageSize, pageSize, digest);
            if (ch.size() > 0) {
                s.load();
            } else {
                s.format();
            }
            return s;
        } catch (final IOException | RuntimeException e) {
            if (s != null) {
                s.arena.close();
            }
            ch.close();
            throw e;
        }
    }

    private ByteBuffer header() {
        final ByteBuffer b = ByteBuffer.allocate(BLOCK).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(MAGIC).putInt(VERSION).putLong(imageSize).putInt(pageSize).putInt(pageCount).put(digest);
        final CRC32C crc = new CRC32C();
        crc.update(b.array(), 0, b.position());
        b.putInt((int) crc.getValue());
        b.clear();
        return b;
    }

    private void format() throws IOException {
        check("ftruncate", ch.truncate(0));
        writeFully(header(), 0);
        writeFully(ByteBuffer.allocate(BLOCK), BLOCK);
        writeFully(ByteBuffer.allocate((int) (sectorBitmapOffset - pageBitmapOffset)), pageBitmapOffset);
        writeFully(ByteBuffer.allocate(dirtySectorBlocks.length * BLOCK), sectorBitmapOffset);
        check("fdatasync", ch.fdatasync());
        // The new file's directory entry must be durable too, or a crash could lose the file but keep the data.
        syncDirectory(path.toAbsolutePath().getParent());
    }

    private static void syncDirectory(final Path dir) {
        try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
            d.force(true);
        } catch (final IOException ignored) {
            // Some file systems refuse to fsync a directory; the file itself is durable.
        }
    }

    private void load() throws IOException {
        final ByteBuffer h = ByteBuffer.allocate(BLOCK).order(ByteOrder.LITTLE_ENDIAN);
        readFully(h, 0);
        h.flip();
        final int magic = h.getInt();
        final int version = h.getInt();
        final long size = h.getLong();
        final int ps = h.getInt();
        final int pages = h.getInt();
        final byte[] d = new byte[32];
        h.get(d);
        final int stored = h.getInt();
        final CRC32C crc = new CRC32C();
        crc.update(h.array(), 0, h.position() - 4);
        if (magic != MAGIC || version != VERSION || stored != (int) crc.getValue()) {
            throw new IOException(path + " is not a lazyblk state file or is damaged; move it away (the image beside it "
                + "will then be treated as empty and refetched)");
        }
        if (size != imageSize || ps != pageSize || pages != pageCount || !Arrays.equals(d, digest)) {
            throw new IOException("the local file belongs to another image: " + path + " records size " + size + ", page size " + ps
                + ", digest " + HexFormat.of().formatHex(d) + "; the source image has size " + imageSize + ", page size " + pageSize
                + ", digest " + HexFormat.of().formatHex(digest) + ". Use another --local path, or delete both files to start over");
        }
        final ByteBuffer flag = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
        readFully(flag, BLOCK);
        diskOnly = flag.flip().getLong() == DISK_ONLY_MAGIC;
        readBits(local, pageBitmapOffset);
        readBits(guestSectors, sectorBitmapOffset);
        // Bits past the end (a damaged tail) are ignored: mask the last word.
        if (pageCount % 64 != 0) {
            local[local.length - 1] &= (1L << (pageCount % 64)) - 1;
        }
        for (final long w : local) {
            localCount += Long.bitCount(w);
        }
    }

    /** Reads a bitmap in {@link #CHUNK}-byte steps: no second copy of a bitmap of up to 256 MiB on the heap. */
    private void readBits(final long[] bits, final long offset) throws IOException {
        final ByteBuffer b = ByteBuffer.allocate((int) scratch.byteSize()).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < bits.length; ) {
            final int words = Math.min(b.capacity() / 8, bits.length - i);
            b.clear().limit(words * 8);
            readFully(b, offset + i * 8L);
            b.flip();
            for (int k = 0; k < words; k++) {
                bits[i++] = b.getLong();
            }
        }
    }

    /**
     * The fewest bytes a state file for this image holds: header and flag blocks, the page bitmap's blocks, and the
     * guest-sector bitmap's words (what {@link #load()} reads).
     */
    static long layoutBytes(final long imageSize, final int pageSize) {
        final long pageWords = ((imageSize + pageSize - 1) / pageSize + 63) / 64;
        final long sectorWords = (imageSize / SECTOR + 63) / 64;
        return 2L * BLOCK + roundUp(pageWords * 8) + sectorWords * 8;
    }

    /** Reads {@code b}'s remaining bytes from {@code off} (through the native scratch); position moves to the limit. */
    private void readFully(final ByteBuffer b, final long off) throws IOException {
        while (b.hasRemaining()) {
            final int want = (int) Math.min(scratch.byteSize(), b.remaining());
            iov.set(JAVA_LONG, 0, scratch.address());
            iov.set(JAVA_LONG, 8, want);
            final long n = ch.preadv(iov.address(), 1, off + b.position());
            if (n == -FileCalls.EINTR) {
                continue;
            }
            if (n < 0) {
                throw FileCalls.failure("reading " + path, (int) -n);
            }
            if (n == 0) {
                throw new IOException(path + " is truncated; move it away to start the image over");
            }
            MemorySegment.copy(scratch, JAVA_BYTE, 0, b.array(), b.arrayOffset() + b.position(), (int) n);
            b.position(b.position() + (int) n);
        }
    }

    /** Writes {@code b}'s remaining bytes at {@code off} (through the native scratch); position moves to the limit. */
    private void writeFully(final ByteBuffer b, final long off) throws IOException {
        while (b.hasRemaining()) {
            final int want = (int) Math.min(scratch.byteSize(), b.remaining());
            MemorySegment.copy(b.array(), b.arrayOffset() + b.position(), scratch, JAVA_BYTE, 0, want);
            iov.set(JAVA_LONG, 0, scratch.address());
            iov.set(JAVA_LONG, 8, want);
            final long n = ch.pwritev(iov.address(), 1, off + b.position());
            if (n == -FileCalls.EINTR) {
                continue;
            }
            if (n <= 0) {
                throw FileCalls.failure("writing " + path, n == 0 ? 5 : (int) -n);
            }
            b.position(b.position() + (int) n);
        }
    }

    private void check(final String call, final int rc) throws IOException {
        if (rc != 0) {
            throw FileCalls.failure(call + " of " + path, -rc);
        }
    }

    public int pageCount() {
        return pageCount;
    }

    public int pageSize() {
        return pageSize;
    }

    public synchronized int localCount() {
        return localCount;
    }

    public synchronized boolean isLocal(final int page) {
        return (local[page >>> 6] & (1L << page)) != 0;
    }

    public synchronized boolean allLocal() {
        return localCount == pageCount;
    }

    public boolean diskOnly() {
        return diskOnly;
    }

    /** Records that {@code page}'s data is durable in the image file; durable itself after {@link #commit()}. */
    public synchronized void markLocal(final int page) {
        final long bit = 1L << page;
        if ((local[page >>> 6] & bit) == 0) {
            local[page >>> 6] |= bit;
            localCount++;
            dirtyPageBlocks[(page >>> 6) * 8 / BLOCK] = true;
        }
    }

    /**
     * Records that {@code page} must be fetched again (its source changed it after this copy got it: a live migration's
     * final set); durable after {@link #commit()}. Sectors the guest wrote stay recorded, so the refetch keeps them.
     */
    public synchronized void markAbsent(final int page) {
        final long bit = 1L << page;
        if ((local[page >>> 6] & bit) != 0) {
            local[page >>> 6] &= ~bit;
            localCount--;
            dirtyPageBlocks[(page >>> 6) * 8 / BLOCK] = true;
        }
    }

    /** Records that the guest wrote sectors {@code [sector, sector + count)}; durable after {@link #commit()}. */
    public synchronized void markGuestWritten(final long sector, final long count) {
        for (long s = sector; s < sector + count; s++) {
            guestSectors[(int) (s >>> 6)] |= 1L << s;
            dirtySectorBlocks[(int) ((s >>> 6) * 8 / BLOCK)] = true;
        }
    }

    /** Words of the guest-sector bitmap (64 sectors each), for loading it into the engine's lock-free copy. */
    public int guestWordCount() {
        return guestSectors.length;
    }

    public synchronized long guestWord(final int index) {
        return guestSectors[index];
    }

    /** ORs {@code bits} into guest-sector word {@code index}; durable after {@link #commit()}. */
    public synchronized void orGuestWord(final int index, final long bits) {
        final long merged = guestSectors[index] | bits;
        if (merged != guestSectors[index]) {
            guestSectors[index] = merged;
            dirtySectorBlocks[index * 8 / BLOCK] = true;
        }
    }

    /**
     * The image name recorded with a finished switch to disk-only in the state file at {@code path}, read without
     * knowing the image (so a restart can serve from disk without contacting the provider); empty if the file is
     * absent, unreadable, or the fill is not finished.
     */
    /** What a state file records, read once: for an image server exporting an engine's local file as a peer. */
    public record Snapshot(long imageSize, int pageSize, int pageCount, byte[] digest, long[] local, long[] guestSectors,
                           boolean diskOnly) {
        public boolean isLocal(final int page) {
            return (local[page >>> 6] & (1L << page)) != 0;
        }

        /** Whether any sector in {@code [offset, offset + length)} was written by the guest. */
        public boolean guestWroteAny(final long offset, final long length) {
            for (long s = offset / SECTOR; s < (offset + length + SECTOR - 1) / SECTOR; s++) {
                if ((guestSectors[(int) (s >>> 6)] & (1L << s)) != 0) {
                    return true;
                }
            }
            return false;
        }
    }

    /**
     * Reads the state file at {@code path} without changing it (the engine that owns it may be running: bits only go
     * from 0 to 1 there, so a snapshot can only be behind, never claim a page that is not durable).
     *
     * @throws IOException if it is not a lazyblk state file or is damaged
     */
    public static Snapshot snapshot(final Path path) throws IOException {
        final Identity id = identity(path);
        try (FileIo io = FileIo.NATIVE.open(path, true, false)) {
            // Before anything is sized from the header: a file shorter than the bitmaps its header claims is damaged (or
            // hostile), and is refused without allocating what it claims.
            if (io.size() < layoutBytes(id.imageSize(), id.pageSize())) {
                throw new IOException(path + " is truncated (" + io.size() + " bytes, its header needs "
                    + layoutBytes(id.imageSize(), id.pageSize()) + "); move it away to start the image over");
            }
            final PageStateFile s = new PageStateFile(path, io, id.imageSize(), id.pageSize(), id.digest());
            try {
                s.load(); // reads both bitmaps
                return new Snapshot(id.imageSize(), id.pageSize(), s.pageCount, id.digest(), s.local.clone(), s.guestSectors.clone(),
                    s.diskOnly);
            } finally {
                s.arena.close();
            }
        }
    }

    /** What a state file says it describes, from its header alone: a restart that needs only this reads no bitmap. */
    public record Identity(long imageSize, int pageSize, byte[] digest) {
    }

    /**
     * Reads the identity header of the state file at {@code path}, checked (magic, version, CRC, bounds).
     *
     * @throws IOException if it is not a lazyblk state file or is damaged, saying what to do
     */
    public static Identity identity(final Path path) throws IOException {
        final ByteBuffer h = ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        try (FileChannel c = FileChannel.open(path, StandardOpenOption.READ)) {
            while (h.hasRemaining() && c.read(h, h.position()) > 0) {
                // read the identity header
            }
        }
        h.flip();
        final int magic = h.remaining() == HEADER_BYTES ? h.getInt() : 0;
        final int version = magic == MAGIC ? h.getInt() : 0;
        final long size = magic == MAGIC ? h.getLong() : 0;
        final int ps = magic == MAGIC ? h.getInt() : 0;
        final int pages = magic == MAGIC ? h.getInt() : 0;
        final byte[] digest = new byte[32];
        if (magic == MAGIC) {
            h.get(digest);
        }
        final CRC32C crc = new CRC32C();
        crc.update(h.array(), 0, HEADER_BYTES - 4);
        if (magic != MAGIC || version != VERSION || h.getInt(HEADER_BYTES - 4) != (int) crc.getValue()) {
            throw new IOException(path + " is not a lazyblk state file or is damaged; move it away (the image beside it "
                + "will then be treated as empty and refetched)");
        }
        if (size <= 0 || size > MAX_IMAGE_BYTES || size % SECTOR != 0 || Integer.bitCount(ps) != 1 || ps < 4096
            || ps > MAX_PAGE_BYTES || pages != (size + ps - 1) / ps) {
            throw new IOException(path + " describes an image of " + size + " bytes in " + pages + " pages of " + ps
                + " bytes; a state file describes at most " + MAX_IMAGE_BYTES + " bytes (1 TiB) in pages of 4 KiB to 4 MiB."
                + " It is damaged: move it away (the image beside it will then be treated as empty and refetched)");
        }
        return new Identity(size, ps, digest);
    }

    /**
     * The page size recorded in the state file at {@code path}, if it is one (magic checked; the rest is checked when
     * it is opened): a restart resumes in the pages it was filled in.
     */
    public static java.util.OptionalInt recordedPageSize(final Path path) {
        if (!Files.isRegularFile(path)) {
            return java.util.OptionalInt.empty();
        }
        try (FileChannel c = FileChannel.open(path, StandardOpenOption.READ)) {
            final ByteBuffer h = ByteBuffer.allocate(20).order(ByteOrder.LITTLE_ENDIAN);
            c.read(h, 0);
            h.flip();
            if (h.remaining() < 20 || h.getInt() != MAGIC) {
                return java.util.OptionalInt.empty();
            }
            h.getInt(); // version
            h.getLong(); // image size
            return java.util.OptionalInt.of(h.getInt());
        } catch (final IOException e) {
            return java.util.OptionalInt.empty();
        }
    }

    public static java.util.Optional<String> diskOnlyImage(final Path path) {
        if (!Files.isRegularFile(path)) {
            return java.util.Optional.empty();
        }
        try (FileChannel c = FileChannel.open(path, StandardOpenOption.READ)) {
            final ByteBuffer h = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            final ByteBuffer f = ByteBuffer.allocate(10 + 1024).order(ByteOrder.LITTLE_ENDIAN);
            c.read(h, 0);
            c.read(f, BLOCK);
            h.flip();
            f.flip();
            if (h.remaining() < 8 || h.getInt() != MAGIC || f.remaining() < 10 || f.getLong() != DISK_ONLY_MAGIC) {
                return java.util.Optional.empty();
            }
            final int len = Short.toUnsignedInt(f.getShort());
            if (len > f.remaining()) {
                return java.util.Optional.empty();
            }
            final byte[] name = new byte[len];
            f.get(name);
            return java.util.Optional.of(new String(name, java.nio.charset.StandardCharsets.UTF_8));
        } catch (final IOException e) {
            return java.util.Optional.empty();
        }
    }

    public synchronized boolean guestWrote(final long sector) {
        return (guestSectors[(int) (sector >>> 6)] & (1L << sector)) != 0;
    }

    /**
     * Writes every changed bitmap block and makes it durable ({@code fdatasync}). A block counts as written only once
     * the sync that covers it succeeded; a failure is sticky: this and every later commit throw, because after a
     * failed sync the kernel may have dropped the blocks and a later sync could succeed without them.
     */
    public synchronized void commit() throws IOException {
        checkHealthy();
        try {
            boolean wrote = flushBlocks(local, dirtyPageBlocks, pageBitmapOffset);
            wrote |= flushBlocks(guestSectors, dirtySectorBlocks, sectorBitmapOffset);
            if (wrote) {
                check("fdatasync", ch.fdatasync());
            }
        } catch (final IOException e) {
            failure = e.getMessage();
            throw e;
        }
        // Only now: the sync covered every block written above.
        java.util.Arrays.fill(dirtyPageBlocks, false);
        java.util.Arrays.fill(dirtySectorBlocks, false);
    }

    /** The first failed write or sync of this file, or null while there was none. */
    public synchronized String failure() {
        return failure;
    }

    private void checkHealthy() throws IOException {
        if (failure != null) {
            throw new IOException(path + " failed earlier (" + failure + "); nothing more is recorded in it until the engine restarts");
        }
    }

    private boolean flushBlocks(final long[] bits, final boolean[] dirty, final long base) throws IOException {
        boolean wrote = false;
        final ByteBuffer b = ByteBuffer.allocate(BLOCK).order(ByteOrder.LITTLE_ENDIAN);
        for (int blk = 0; blk < dirty.length; blk++) {
            if (!dirty[blk]) {
                continue;
            }
            b.clear();
            final int first = blk * (BLOCK / 8);
            for (int i = first; i < Math.min(bits.length, first + BLOCK / 8); i++) {
                b.putLong(bits[i]);
            }
            while (b.hasRemaining()) {
                b.put((byte) 0);
            }
            b.flip();
            writeFully(b, base + (long) blk * BLOCK);
            wrote = true;
        }
        return wrote;
    }

    /**
     * Records, durably, that every page is local and the engine serves from disk alone from now on, naming the
     * image it was filled from so a later start with another image's name is refused.
     */
    public synchronized void markDiskOnly(final String imageName) throws IOException {
        if (localCount != pageCount) {
            throw new IllegalStateException(localCount + " of " + pageCount + " pages are local; cannot switch to disk-only");
        }
        final byte[] name = imageName.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        if (name.length > 1024) {
            throw new IllegalArgumentException("image name longer than 1024 bytes");
        }
        commit();
        final ByteBuffer b = ByteBuffer.allocate(10 + name.length).order(ByteOrder.LITTLE_ENDIAN)
            .putLong(DISK_ONLY_MAGIC).putShort((short) name.length).put(name).flip();
        try {
            writeFully(b, BLOCK);
            check("fdatasync", ch.fdatasync());
        } catch (final IOException e) {
            failure = e.getMessage();
            throw e;
        }
        diskOnly = true;
    }

    @Override
    public synchronized void close() throws IOException {
        ch.close();
        arena.close();
    }
}
