package io.lazyblk.pull.manifest;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageGeometry;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
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
 * Builds the {@link Manifest} of a raw image by reading it once (a SHA-256 per page) and caches
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
        final Manifest manifest = build(image, pageSize, progress);
        if (stamp.mtimeNanos() > startedNanos - RACY_NANOS) {
            LOG.info("{} was modified in the last {} s: its manifest is not cached (a later write could keep the same mtime)",
                image, RACY_NANOS / 1_000_000_000L);
            return new Result(manifest, false, null);
        }
        return new Result(manifest, false, store(stamp, manifest, beside, fallback));
    }

    /** Reads {@code image} once and returns its manifest; no cache involved. */
    public static Manifest build(final Path image, final int pageSize, final Progress progress) throws IOException {
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
            long pos = 0;
            int page = 0;
            progress.update(0, size);
            while (pos < size) {
                buf.clear().limit((int) Math.min(chunk, size - pos));
                while (buf.hasRemaining()) {
                    if (ch.read(buf, pos + buf.position()) < 0) {
                        throw new IOException(image + " shrank while its manifest was being built; build again once it is stable");
                    }
                }
                buf.flip();
                for (int off = 0; off < buf.limit(); off += pageSize, page++) {
                    Manifest.hashPage(buf.slice(off, Math.min(pageSize, buf.limit() - off)), hashes, page * Manifest.HASH_BYTES);
                }
                pos += buf.limit();
                progress.update(pos, size);
            }
            if (!before.equals(ImageStamp.of(image))) {
                throw new IOException(image + " changed while its manifest was being built; build again once it is stable");
            }
            return new Manifest(size, pageSize, hashes);
        }
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
