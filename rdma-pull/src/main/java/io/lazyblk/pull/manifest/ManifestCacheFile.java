package io.lazyblk.pull.manifest;

import io.lazyblk.pagemap.Manifest;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.zip.CRC32C;

/**
 * A cached manifest on disk, little endian: magic "LZBC" u32, version u32, then the {@link ImageStamp} it was built
 * from (image size u64, mtime ns u64, inode u64), page size u32, manifest length u32, the manifest's own encoding,
 * and a CRC32C of everything before it. Written to a temporary file and renamed, so readers never see half a file.
 */
final class ManifestCacheFile {
    static final int MAGIC = 0x43425a4c; // "LZBC" little endian
    static final int VERSION = 2; // 2: manifests with SHA-256 page hashes
    static final int MAGIC_OFFSET = 0;
    static final int VERSION_OFFSET = 4;
    static final int IMAGE_SIZE_OFFSET = 8;
    static final int MTIME_OFFSET = 16;
    static final int INODE_OFFSET = 24;
    static final int PAGE_SIZE_OFFSET = 32;
    static final int MANIFEST_LENGTH_OFFSET = 36;
    static final int MANIFEST_OFFSET = 40;
    static final int TRAILER_BYTES = 4;

    private ManifestCacheFile() {
    }

    /** Why a cache file was not used, or null with the manifest; never throws for damaged content. */
    record Lookup(Manifest manifest, String miss) {
    }

    static Lookup read(final Path file, final ImageStamp stamp, final int pageSize) {
        final ByteBuffer b;
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            final long size = ch.size();
            if (size < MANIFEST_OFFSET + TRAILER_BYTES || size > MANIFEST_OFFSET + maxManifestBytes() + TRAILER_BYTES) {
                return new Lookup(null, "cache file of " + size + " bytes");
            }
            b = ByteBuffer.allocate((int) size).order(ByteOrder.LITTLE_ENDIAN);
            while (b.hasRemaining() && ch.read(b) >= 0) {
                // read the whole (small) file
            }
        } catch (final NoSuchFileException e) {
            return new Lookup(null, "no cache file");
        } catch (final IOException e) {
            return new Lookup(null, "cannot read the cache file: " + e);
        }
        if (b.hasRemaining()) {
            return new Lookup(null, "cache file shrank while reading");
        }
        final int end = b.capacity() - TRAILER_BYTES;
        final CRC32C crc = new CRC32C();
        crc.update(b.array(), 0, end);
        if ((int) crc.getValue() != b.getInt(end)) {
            return new Lookup(null, "cache file checksum mismatch (damaged)");
        }
        if (b.getInt(MAGIC_OFFSET) != MAGIC || b.getInt(VERSION_OFFSET) != VERSION) {
            return new Lookup(null, "not a version " + VERSION + " manifest cache file");
        }
        final ImageStamp cached = new ImageStamp(b.getLong(IMAGE_SIZE_OFFSET), b.getLong(MTIME_OFFSET), b.getLong(INODE_OFFSET));
        if (!cached.equals(stamp)) {
            return new Lookup(null, "image changed since the cache was written (" + cached + " then, " + stamp + " now)");
        }
        if (b.getInt(PAGE_SIZE_OFFSET) != pageSize) {
            return new Lookup(null, "cached for page size " + b.getInt(PAGE_SIZE_OFFSET) + ", not " + pageSize);
        }
        if (b.getInt(MANIFEST_LENGTH_OFFSET) != end - MANIFEST_OFFSET) {
            return new Lookup(null, "manifest length field disagrees with the file size (damaged)");
        }
        try {
            final Manifest m = Manifest.decode(b.slice(MANIFEST_OFFSET, end - MANIFEST_OFFSET));
            if (m.size() != stamp.size() || m.pageSize() != pageSize) {
                return new Lookup(null, "cached manifest describes another size or page size (damaged)");
            }
            if (m.isLive()) {
                // Never written here (the builder hashes every page): served, it would have clients take pages unchecked.
                return new Lookup(null, "cached manifest is a live one, without page hashes (not written by this builder)");
            }
            return new Lookup(m, null);
        } catch (final IllegalArgumentException e) {
            return new Lookup(null, "cached manifest does not decode: " + e.getMessage());
        }
    }

    /** Writes atomically (temp file, fsync, rename); throws if the directory is not writable. */
    static void write(final Path file, final ImageStamp stamp, final Manifest manifest) throws IOException {
        final ByteBuffer encoded = manifest.encode();
        final ByteBuffer b = ByteBuffer.allocate(MANIFEST_OFFSET + encoded.remaining() + TRAILER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(MAGIC_OFFSET, MAGIC).putInt(VERSION_OFFSET, VERSION).putLong(IMAGE_SIZE_OFFSET, stamp.size())
            .putLong(MTIME_OFFSET, stamp.mtimeNanos()).putLong(INODE_OFFSET, stamp.inode())
            .putInt(PAGE_SIZE_OFFSET, manifest.pageSize()).putInt(MANIFEST_LENGTH_OFFSET, encoded.remaining())
            .put(MANIFEST_OFFSET, encoded, 0, encoded.remaining());
        final int end = b.capacity() - TRAILER_BYTES;
        final CRC32C crc = new CRC32C();
        crc.update(b.array(), 0, end);
        b.putInt(end, (int) crc.getValue());
        AtomicFile.write(file, b, false); // a cache: a crash that loses the rename only costs a rebuild
    }

    private static long maxManifestBytes() {
        return Manifest.HEADER_BYTES + (long) Manifest.HASH_BYTES * Manifest.MAX_PAGES;
    }
}
