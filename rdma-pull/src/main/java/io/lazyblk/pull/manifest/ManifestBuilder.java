package io.lazyblk.pull.manifest;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageGeometry;
import io.lazyblk.sys.FileCalls;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.concurrent.TimeUnit;

/**
 * Builds the {@link Manifest} of a raw image by reading it once (a SHA-256 per page; holes are not read) and caches
 * it as {@code IMAGE.lzbm} next to the image, or in a fallback directory when the image's directory is not
 * writable. A cache is used only while the image's size, mtime and inode and the page size match the ones stored
 * in it; a damaged cache is rebuilt. Thread-safe (stateless apart from its configuration).
 */
public final class ManifestBuilder {
    private static final Logger LOG = LoggerFactory.getLogger(ManifestBuilder.class);

    /**
     * 64 KiB: one TCP fetch of a 64 KiB page on loopback costs about the same per byte as a bulk copy, while a boot
     * touches a few hundred MiB at most, so bigger pages mostly fetch bytes the guest never reads; smaller pages
     * multiply per-fetch overhead and the manifest (4 bytes a page: 64 KiB pages give 64 KiB of manifest per GiB).
     * A first choice to be revisited with measurements of real boots (docs/architecture.md).
     */
    public static final int DEFAULT_PAGE_SIZE = 64 << 10;
    public static final String CACHE_SUFFIX = ".lzbm";
    /** The boot profile's file, beside the manifest cache: {@code IMAGE.lzbprofile} (see io.lazyblk.pull.profile.ProfileFile). */
    public static final String PROFILE_SUFFIX = ".lzbprofile";
    /** Read the image in chunks of this many bytes (or one page, if larger): big enough that syscalls do not matter. */
    private static final int CHUNK_BYTES = 8 << 20;
    /**
     * File times tick coarsely (the kernel stamps writes with a clock that advances every few ms), so a write just
     * after the build can leave size and mtime unchanged. Like git's "racy" index entries, an image modified less than
     * this long before its build started is not cached: the next load rebuilds rather than trusting a stale cache.
     */
    static final long RACY_NANOS = 2_000_000_000L;

    /** Receives build progress from the building thread: bytes hashed so far, of {@code total}. */
    @FunctionalInterface
    public interface Progress {
        Progress NONE = (done, total) -> { };

        void update(long done, long total);
    }

    /**
     * A manifest and where it came from.
     *
     * @param fromCache true if read from a cache file, false if built by reading the image
     * @param cacheFile the cache file that holds it now, or null if it could not be cached anywhere
     */
    public record Result(Manifest manifest, boolean fromCache, Path cacheFile) {
    }

    private final Path fallbackDir;

    /** @param fallbackDir where to cache manifests of images whose directory is not writable; null for nowhere */
    public ManifestBuilder(final Path fallbackDir) {
        this.fallbackDir = fallbackDir;
    }

    /** {@code $XDG_CACHE_HOME/lazyblk/manifests}, or {@code ~/.cache/lazyblk/manifests}. */
    public static Path defaultCacheDir() {
        final String xdg = System.getenv("XDG_CACHE_HOME");
        final Path base = xdg != null && !xdg.isBlank() ? Path.of(xdg) : Path.of(System.getProperty("user.home"), ".cache");
        return base.resolve("lazyblk").resolve("manifests");
    }

    /** The manifest of {@code image} at {@code pageSize}: from a valid cache, or built (and cached) now. */
    public Result load(final Path image, final int pageSize, final Progress progress) throws IOException {
        new PageGeometry(PageGeometry.MIN_PAGE, pageSize); // checks the page size before any I/O
        final ImageStamp stamp = ImageStamp.of(image);
        final Path beside = besideImage(image);
        final Path fallback = fallbackDir == null ? null : inFallbackDir(image);
        for (final Path candidate : fallback == null ? new Path[] {beside} : new Path[] {beside, fallback}) {
            if (!Files.isRegularFile(candidate)) {
                continue;
            }
            final ManifestCacheFile.Lookup hit = ManifestCacheFile.read(candidate, stamp, pageSize);
            if (hit.manifest() != null) {
                return new Result(hit.manifest(), true, candidate);
            }
            LOG.info("manifest cache {} not used: {}; rebuilding", candidate, hit.miss());
        }
        final long startedNanos = TimeUnit.MILLISECONDS.toNanos(System.currentTimeMillis());
        final Scan scan = scan(image, pageSize, progress);
        final Manifest manifest = scan.manifest();
        if (scan.holeBytes() > 0) {
            LOG.info("built the manifest of {}: read {} bytes, skipped {} bytes of holes ({} zero pages in all)", image,
                scan.bytesRead(), scan.holeBytes(), manifest.zeroSourcePageCount());
        }
        if (stamp.mtimeNanos() > startedNanos - RACY_NANOS) {
            LOG.info("{} was modified in the last {} s: its manifest is not cached (a later write could keep the same mtime)",
                image, RACY_NANOS / 1_000_000_000L);
            return new Result(manifest, false, null);
        }
        return new Result(manifest, false, store(stamp, manifest, beside, fallback));
    }

    /** Reads {@code image} once (not its holes) and returns its manifest; no cache involved. */
    public static Manifest build(final Path image, final int pageSize, final Progress progress) throws IOException {
        return scan(image, pageSize, progress).manifest();
    }

    /**
     * A built manifest and what building it read.
     *
     * @param bytesRead bytes of the image read and checked
     * @param holeBytes bytes in pages that lie wholly in holes of the file: not read, their hash is that of zeros
     */
    public record Scan(Manifest manifest, long bytesRead, long holeBytes) {
    }

    /**
     * Reads {@code image} once and returns its manifest with what was read. Pages that lie wholly in a hole of the file
     * ({@code lseek(SEEK_DATA)}, so a sparse image's holes are never read: a 4 GiB image with 2 GiB of holes reads 2 GiB)
     * get {@link Manifest#zeroHash}, computed once per length. A page that is partly data is read as a whole; a data
     * page that holds only zeros is found by comparing it with zeros before hashing: that compare ran at 4-13 GB/s here
     * against 0.7-1.4 GB/s for SHA-256 (2-core host, SHA-NI), and on a page that is not zero it stops at the first
     * non-zero byte, so checking first is the cheaper order.
     */
    public static Scan scan(final Path image, final int pageSize, final Progress progress) throws IOException {
        try (FileChannel ch = FileChannel.open(image, StandardOpenOption.READ)) {
            final ImageStamp before = ImageStamp.of(image);
            final long size = ch.size();
            if (size == 0 || size % 512 != 0) {
                throw new IOException(image + " is " + size + " bytes; a raw disk image is a positive multiple of 512 bytes"
                    + " (pad it, e.g. truncate -s %512 " + image + ")");
            }
            if (size > Manifest.MAX_IMAGE_BYTES) {
                throw new IOException(image + " is " + size + " bytes; lazyblk serves images up to " + Manifest.MAX_IMAGE_BYTES
                    + " bytes (1 TiB)");
            }
            final PageGeometry g = new PageGeometry(size, pageSize);
            final byte[] hashes = new byte[g.pageCount() * Manifest.HASH_BYTES];
            final int chunk = Math.max(pageSize, CHUNK_BYTES / pageSize * pageSize);
            final ByteBuffer buf = ByteBuffer.allocateDirect(chunk);
            final MemorySegment bufSegment = MemorySegment.ofBuffer(buf);
            final MemorySegment zeros = Arena.ofAuto().allocate(pageSize);
            final byte[] zeroFull = Manifest.zeroHash(pageSize);
            final int last = g.pageCount() - 1;
            final byte[] zeroTail = g.pageLength(last) == pageSize ? zeroFull : Manifest.zeroHash(g.pageLength(last));
            long read = 0;
            long holes = 0;
            progress.update(0, size);
            try (Holes h = new Holes(image, size)) {
                int page = 0;
                while (page < g.pageCount()) {
                    if (h.isHole(g.pageStart(page), g.pageStart(page) + g.pageLength(page))) {
                        System.arraycopy(page == last ? zeroTail : zeroFull, 0, hashes, page * Manifest.HASH_BYTES, Manifest.HASH_BYTES);
                        holes += g.pageLength(page);
                        page++;
                        if ((page & 1023) == 0 || page == g.pageCount()) {
                            progress.update(page == g.pageCount() ? size : g.pageStart(page), size);
                        }
                        continue;
                    }
                    // A run of pages with data, up to one chunk: one positional read for them all.
                    int end = page + 1;
                    while (end < g.pageCount() && (long) (end - page) * pageSize < chunk
                        && !h.isHole(g.pageStart(end), g.pageStart(end) + g.pageLength(end))) {
                        end++;
                    }
                    final long pos = g.pageStart(page);
                    final long runEnd = end == g.pageCount() ? size : g.pageStart(end);
                    buf.clear().limit((int) (runEnd - pos));
                    while (buf.hasRemaining()) {
                        if (ch.read(buf, pos + buf.position()) < 0) {
                            throw new IOException(image + " shrank while its manifest was being built; build again once it is stable");
                        }
                    }
                    read += buf.limit();
                    for (int off = 0; page < end; off += pageSize, page++) {
                        final int len = Math.min(pageSize, buf.limit() - off);
                        if (MemorySegment.mismatch(bufSegment, off, off + len, zeros, 0, len) == -1) {
                            System.arraycopy(page == last ? zeroTail : zeroFull, 0, hashes, page * Manifest.HASH_BYTES, Manifest.HASH_BYTES);
                        } else {
                            Manifest.hashPage(buf.slice(off, len), hashes, page * Manifest.HASH_BYTES);
                        }
                    }
                    progress.update(runEnd, size);
                }
            }
            if (!before.equals(ImageStamp.of(image))) {
                throw new IOException(image + " changed while its manifest was being built; build again once it is stable");
            }
            return new Scan(new Manifest(size, pageSize, hashes), read, holes);
        }
    }

    /**
     * Where a file's holes are, asked in increasing offsets: caches the data extent around the last question, so a
     * question costs a syscall only when it passes that extent.
     */
    private static final class Holes implements AutoCloseable {
        private final int fd;
        private final long size;
        /** The data extent [dataStart, dataEnd) found last; dataStart == size once no data follows. */
        private long dataStart = -1;
        private long dataEnd = -1;

        Holes(final Path image, final long size) throws IOException {
            this.fd = FileCalls.open(image.toString(), FileCalls.O_RDONLY, 0);
            this.size = size;
        }

        /** Whether [from, to) holds no data; {@code from} never decreases between calls. */
        boolean isHole(final long from, final long to) throws IOException {
            if (dataStart < 0 || from >= dataEnd && dataStart < size) {
                final long d = FileCalls.seekData(fd, from);
                dataStart = d < 0 ? size : d;
                final long e = dataStart >= size ? -1 : FileCalls.seekHole(fd, dataStart);
                dataEnd = e < 0 ? size : e;
            }
            return dataStart >= to;
        }

        @Override
        public void close() {
            FileCalls.close(fd);
        }
    }

    /**
     * Where the boot profile of {@code image} is kept: beside the manifest cache file that {@code loaded} came from or
     * went to ({@code IMAGE.lzbprofile} beside the image, or the same name as the cache in the fallback directory).
     * When the manifest was not cached (the image was modified just now), beside the image if its directory is
     * writable, else in the fallback directory; null if there is no such place.
     */
    public Path profileFile(final Path image, final Result loaded) {
        if (loaded.cacheFile() != null) {
            final String name = loaded.cacheFile().getFileName().toString();
            return loaded.cacheFile().resolveSibling(name.substring(0, name.length() - CACHE_SUFFIX.length()) + PROFILE_SUFFIX);
        }
        final Path dir = image.toAbsolutePath().getParent();
        if (dir != null && Files.isWritable(dir)) {
            return image.resolveSibling(image.getFileName() + PROFILE_SUFFIX);
        }
        if (fallbackDir == null) {
            return null;
        }
        final String cache = inFallbackDir(image).getFileName().toString();
        return fallbackDir.resolve(cache.substring(0, cache.length() - CACHE_SUFFIX.length()) + PROFILE_SUFFIX);
    }

    static Path besideImage(final Path image) {
        return image.resolveSibling(image.getFileName() + CACHE_SUFFIX);
    }

    /** Images with the same file name in different directories get different cache files: the name carries a hash of the path. */
    Path inFallbackDir(final Path image) {
        final String abs = image.toAbsolutePath().normalize().toString();
        final String tag = HexFormat.of().formatHex(sha256().digest(abs.getBytes(StandardCharsets.UTF_8)), 0, 8);
        return fallbackDir.resolve(image.getFileName() + "-" + tag + CACHE_SUFFIX);
    }

    private Path store(final ImageStamp stamp, final Manifest manifest, final Path beside, final Path fallback) {
        try {
            ManifestCacheFile.write(beside, stamp, manifest);
            return beside;
        } catch (final IOException e) {
            if (fallback == null) {
                LOG.warn("cannot cache the manifest as {} ({}) and no cache directory is configured: it will be rebuilt next time",
                    beside, e.toString());
                return null;
            }
            LOG.debug("cannot cache the manifest beside the image as {} ({}); using {}", beside, e, fallback);
        }
        try {
            Files.createDirectories(fallback.getParent());
            ManifestCacheFile.write(fallback, stamp, manifest);
            return fallback;
        } catch (final IOException e) {
            LOG.warn("cannot cache the manifest as {} nor as {} ({}): it will be rebuilt next time", beside, fallback, e.toString());
            return null;
        }
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (final NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is part of every JDK; this one lacks it", e);
        }
    }
}
