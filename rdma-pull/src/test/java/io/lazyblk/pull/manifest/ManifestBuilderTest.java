package io.lazyblk.pull.manifest;

import io.lazyblk.pagemap.Manifest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.FileTime;
import java.security.MessageDigest;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Manifests match the image byte for byte; the cache saves the read only while it provably describes the image. */
class ManifestBuilderTest {
    private static final int PAGE = 16 << 10;
    private static final FileTime LONG_AGO = FileTime.from(Instant.parse("2026-01-01T00:00:00Z"));
    private static final FileTime LATER = FileTime.from(Instant.parse("2026-02-01T00:00:00Z"));

    @TempDir
    Path dir;

    private Path image(final String name, final long size, final long seed) throws IOException {
        final byte[] data = new byte[(int) size];
        new Random(seed).nextBytes(data);
        final Path p = dir.resolve(name);
        Files.write(p, data);
        Files.setLastModifiedTime(p, LONG_AGO); // old enough to be cached (ManifestBuilder.RACY_NANOS)
        return p;
    }

    /** The manifest computed independently of ManifestBuilder: a plain SHA-256 of each page of the file's bytes. */
    private static void assertDescribes(final Path image, final int pageSize, final Manifest m) throws Exception {
        final byte[] data = Files.readAllBytes(image);
        assertEquals(data.length, m.size());
        assertEquals(pageSize, m.pageSize());
        assertEquals((data.length + pageSize - 1) / pageSize, m.pageCount());
        for (int p = 0; p < m.pageCount(); p++) {
            final byte[] page = java.util.Arrays.copyOfRange(data, p * pageSize, Math.min((p + 1) * pageSize, data.length));
            assertArrayEquals(MessageDigest.getInstance("SHA-256").digest(page), m.pageHash(p), "page " + p);
        }
        assertArrayEquals(Manifest.of(data, pageSize).digest(), m.digest());
    }

    @Test
    void shouldBuildAManifestOfEveryPageIncludingAShortLastOneAndReportProgress() throws Exception {
        final Path img = image("a.img", 40L * PAGE + 1536, 1);
        final List<long[]> progress = new ArrayList<>();
        final Manifest m = ManifestBuilder.build(img, PAGE, (done, total) -> progress.add(new long[] {done, total}));
        assertDescribes(img, PAGE, m);
        assertEquals(41, m.pageCount());
        assertEquals(0, progress.getFirst()[0]);
        assertEquals(Files.size(img), progress.getLast()[0]);
        for (int i = 1; i < progress.size(); i++) {
            assertTrue(progress.get(i)[0] >= progress.get(i - 1)[0] && progress.get(i)[1] == Files.size(img));
        }
    }

    /**
     * A sparse image of 256 MiB + 1536 bytes with data at a few places only: a page of random bytes, a range straddling
     * two pages (partly hole, partly data), a data page written as zeros (allocated, so not a hole), and the short last
     * page. The manifest equals the plain SHA-256 of every page, and the build read only the pages holding data.
     */
    @Test
    void shouldHashHolesAsZerosWithoutReadingThemAndMatchAPlainHashOfEveryPage() throws Exception {
        final int page = 64 << 10;
        final long size = (256L << 20) + 1536;
        final Path img = dir.resolve("sparse.img");
        final Random r = new Random(5);
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            ch.truncate(0);
            ch.write(ByteBuffer.allocate(1).put(0, (byte) 0), size - 1); // extends the file: the last byte, data, 0
            final byte[] random = new byte[page];
            r.nextBytes(random);
            ch.write(ByteBuffer.wrap(random), 7L * page);                   // page 7: random bytes
            final byte[] straddle = new byte[8192];
            r.nextBytes(straddle);
            ch.write(ByteBuffer.wrap(straddle), 1000L * page - 4096);      // the end of page 999 and the start of page 1000
            ch.write(ByteBuffer.allocate(page), 2000L * page);              // page 2000: written zeros (allocated, not a hole)
            final byte[] tail = new byte[1536];
            r.nextBytes(tail);
            ch.write(ByteBuffer.wrap(tail), size - 1536);                   // the short last page
        }
        Files.setLastModifiedTime(img, LONG_AGO);
        final ManifestBuilder.Scan scan = ManifestBuilder.scan(img, page, ManifestBuilder.Progress.NONE);
        final Manifest m = scan.manifest();
        // The expected manifest, from every page read through the file (holes read as zeros).
        final byte[] expected = new byte[m.pageCount() * Manifest.HASH_BYTES];
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.READ)) {
            final ByteBuffer b = ByteBuffer.allocate(page);
            for (int p = 0; p < m.pageCount(); p++) {
                b.clear().limit((int) Math.min(page, size - (long) p * page));
                while (b.hasRemaining() && ch.read(b, (long) p * page + b.position()) >= 0) {
                    // whole page
                }
                Manifest.hashPage(b.flip(), expected, p * Manifest.HASH_BYTES);
            }
        }
        assertArrayEquals(new Manifest(size, page, expected).digest(), m.digest(), "same manifest as a plain hash of every page");
        assertTrue(m.isZeroSourcePage(0) && m.isZeroSourcePage(2000) && !m.isZeroSourcePage(7) && !m.isZeroSourcePage(999)
            && !m.isZeroSourcePage(1000) && !m.isZeroSourcePage(m.pageCount() - 1));
        assertEquals(m.pageCount() - 4, m.zeroSourcePageCount(), "all but pages 7, 999, 1000 and the last are zero");
        // Read: pages 7, 999, 1000, 2000 and the short last page (ext4 allocates in 4 KiB blocks: no other page has data).
        assertEquals(4L * page + 1536, scan.bytesRead(), "only the pages holding data were read");
        assertEquals(size - scan.bytesRead(), scan.holeBytes());
    }

    @Test
    void shouldReuseTheCacheBesideTheImageAndRebuildWhenTheImageChanges() throws Exception {
        final Path img = image("b.img", 10L * PAGE, 2);
        final ManifestBuilder builder = new ManifestBuilder(null);
        final ManifestBuilder.Result first = builder.load(img, PAGE, ManifestBuilder.Progress.NONE);
        assertFalse(first.fromCache());
        assertEquals(dir.resolve("b.img.lzbm"), first.cacheFile());

        final ManifestBuilder.Result again = builder.load(img, PAGE, (d, t) -> {
            throw new AssertionError("a valid cache must not read the image");
        });
        assertTrue(again.fromCache());
        assertTrue(again.manifest().sameImage(first.manifest()));

        // Same size, new content, mtime moved: rebuilt and describing the new bytes.
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.wrap(new byte[] {1, 2, 3}), 3L * PAGE + 7);
        }
        Files.setLastModifiedTime(img, LATER);
        final ManifestBuilder.Result changed = builder.load(img, PAGE, ManifestBuilder.Progress.NONE);
        assertFalse(changed.fromCache());
        assertDescribes(img, PAGE, changed.manifest());
        assertFalse(java.util.Arrays.equals(first.manifest().pageHash(3), changed.manifest().pageHash(3)));

        // Grown, with the mtime the cache recorded: the size alone invalidates it.
        Files.write(img, new byte[512], StandardOpenOption.APPEND);
        Files.setLastModifiedTime(img, LATER);
        final ManifestBuilder.Result grown = builder.load(img, PAGE, ManifestBuilder.Progress.NONE);
        assertFalse(grown.fromCache());
        assertEquals(11, grown.manifest().pageCount());
        assertDescribes(img, PAGE, grown.manifest());
    }

    @Test
    void shouldNotCacheAnImageModifiedMomentsAgoBecauseItsMtimeMightNotMoveAgain() throws Exception {
        final Path img = image("fresh.img", 4L * PAGE, 3);
        Files.setLastModifiedTime(img, FileTime.from(Instant.now()));
        final ManifestBuilder.Result r = new ManifestBuilder(null).load(img, PAGE, ManifestBuilder.Progress.NONE);
        assertNull(r.cacheFile());
        assertFalse(Files.exists(dir.resolve("fresh.img.lzbm")));
        assertDescribes(img, PAGE, r.manifest());
    }

    @Test
    void shouldRebuildForAnotherPageSize() throws Exception {
        final Path img = image("c.img", 8L * PAGE, 4);
        final ManifestBuilder builder = new ManifestBuilder(null);
        builder.load(img, PAGE, ManifestBuilder.Progress.NONE);
        final ManifestBuilder.Result bigger = builder.load(img, 2 * PAGE, ManifestBuilder.Progress.NONE);
        assertFalse(bigger.fromCache());
        assertDescribes(img, 2 * PAGE, bigger.manifest());
        assertTrue(builder.load(img, 2 * PAGE, ManifestBuilder.Progress.NONE).fromCache());
    }

    @Test
    void shouldRebuildADamagedCache() throws Exception {
        final Path img = image("d.img", 6L * PAGE + 512, 5);
        final ManifestBuilder builder = new ManifestBuilder(null);
        final Path cache = builder.load(img, PAGE, ManifestBuilder.Progress.NONE).cacheFile();
        final byte[] good = Files.readAllBytes(cache);

        final byte[] flipped = good.clone();
        flipped[ManifestCacheFile.MANIFEST_OFFSET + 60] ^= 0x10; // inside a page checksum
        final byte[] truncated = java.util.Arrays.copyOf(good, good.length - 9);
        for (final byte[] damaged : new byte[][] {flipped, truncated, "not a cache".getBytes(), new byte[0]}) {
            Files.write(cache, damaged);
            final ManifestBuilder.Result r = builder.load(img, PAGE, ManifestBuilder.Progress.NONE);
            assertFalse(r.fromCache());
            assertDescribes(img, PAGE, r.manifest());
            assertArrayEquals(good, Files.readAllBytes(cache), "the rebuilt cache replaces the damaged one");
        }
    }

    @Test
    void shouldRebuildACacheHoldingALiveManifestRatherThanServeAGoldenImageUnhashed() throws Exception {
        // A live manifest (no page hashes) is never what the builder caches: one in the cache file, whatever put it there,
        // would have every client take this image's pages unchecked.
        final Path img = image("live.img", 4L * PAGE, 7);
        final ManifestBuilder builder = new ManifestBuilder(null);
        final Path cache = builder.load(img, PAGE, ManifestBuilder.Progress.NONE).cacheFile();
        ManifestCacheFile.write(cache, ImageStamp.of(img), io.lazyblk.pagemap.Manifest.live(4L * PAGE, PAGE, new byte[32]));
        final ManifestBuilder.Result r = builder.load(img, PAGE, ManifestBuilder.Progress.NONE);
        assertFalse(r.fromCache());
        assertFalse(r.manifest().isLive());
        assertDescribes(img, PAGE, r.manifest());
    }

    @Test
    void shouldCacheInTheFallbackDirectoryWhenItCannotWriteBesideTheImage() throws Exception {
        final Path img = image("e.img", 3L * PAGE, 6);
        // A directory where the cache file would go: writing there fails even for root (these tests may run as root,
        // for whom a read-only directory is writable).
        Files.createDirectories(dir.resolve("e.img.lzbm").resolve("occupied"));
        final Path fallback = dir.resolve("cache");
        final ManifestBuilder builder = new ManifestBuilder(fallback);
        final ManifestBuilder.Result r = builder.load(img, PAGE, ManifestBuilder.Progress.NONE);
        assertFalse(r.fromCache());
        assertEquals(fallback, r.cacheFile().getParent());
        assertTrue(r.cacheFile().getFileName().toString().startsWith("e.img-"));
        final ManifestBuilder.Result again = builder.load(img, PAGE, ManifestBuilder.Progress.NONE);
        assertTrue(again.fromCache());
        assertEquals(r.cacheFile(), again.cacheFile());

        // Another image with the same file name elsewhere gets its own cache file.
        Files.createDirectories(dir.resolve("other"));
        final Path twin = Files.copy(img, dir.resolve("other").resolve("e.img"));
        assertNotEquals(r.cacheFile(), builder.inFallbackDir(twin));
    }

    @Test
    void shouldRefuseAnImageThatIsNotWholeSectorsSayingHowToFixIt() throws Exception {
        final Path img = image("f.img", 3L * PAGE + 100, 7);
        final IOException e = assertThrows(IOException.class, () -> new ManifestBuilder(null).load(img, PAGE, ManifestBuilder.Progress.NONE));
        assertTrue(e.getMessage().contains("multiple of 512") && e.getMessage().contains("truncate"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new ManifestBuilder(null).load(img, 3000, ManifestBuilder.Progress.NONE));
    }
}
