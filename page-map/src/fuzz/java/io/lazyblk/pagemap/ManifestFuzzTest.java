package io.lazyblk.pagemap;

import com.code_intelligence.jazzer.junit.FuzzTest;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Manifest.decode on hostile bytes (a manifest comes from the provider, or from a cache file beside the image).
 *
 * <p>Input: one byte choosing a page size to coarsen an accepted manifest to, then the manifest's bytes. Properties:
 * decode throws nothing but {@link IllegalArgumentException}; what it accepts re-encodes to exactly the bytes it
 * read; a coarsened view either is refused with {@link IllegalArgumentException} or covers the same image in whole
 * provider pages; {@link Manifest#verify} answers (never throws) for every page. A live manifest (version 3: no
 * hashes, see {@link Manifest#live}) stays live through re-encoding and coarsening, has no zero page, accepts every
 * page of the right length and refuses {@link Manifest#pageHash}. Seeds: {@link #main}.
 */
class ManifestFuzzTest {
    @FuzzTest
    void decode(final byte[] input) {
        if (input.length == 0) {
            return;
        }
        final int coarsenTo = input[0] < 0 ? input[0] & 0x7f : PageGeometry.MIN_PAGE << (input[0] % 12);
        // At an offset inside a larger buffer: decode must read from the buffer's position, not from 0.
        final ByteBuffer in = ByteBuffer.wrap(input, 1, input.length - 1);
        final Manifest m;
        try {
            m = Manifest.decode(in);
        } catch (final IllegalArgumentException refused) {
            return;
        }
        assertArrayEquals(Arrays.copyOfRange(input, 1, input.length), bytes(m.encode()), "re-encoding differs from the input");
        assertEquals(m.encodedLength(), input.length - 1);
        assertTrue(m.pageCount() >= 1 && (long) m.pageCount() * m.pageSize() >= m.size()
            && (long) (m.pageCount() - 1) * m.pageSize() < m.size(), "pages do not cover the image exactly");
        checkVerify(m);
        final Manifest c;
        try {
            c = m.coarsened(coarsenTo);
        } catch (final IllegalArgumentException refused) {
            return;
        }
        assertEquals(m.size(), c.size());
        assertEquals(m.isLive(), c.isLive(), "coarsening keeps a manifest live, or hashed");
        assertEquals(c.pageSize(), c.sourcePagesPerPage() * c.sourcePageSize());
        int sourcePages = 0;
        for (int p = 0; p < c.pageCount(); p++) {
            assertEquals(sourcePages, c.firstSourcePage(p));
            sourcePages += c.sourcePageCount(p);
        }
        assertEquals(m.pageCount(), sourcePages, "the coarse pages do not cover the provider's pages once each");
        checkVerify(c);
        assertArrayEquals(bytes(m.encode()), bytes(c.encode()), "a coarsened view encodes as the provider's manifest");
    }

    /** Verifies a zero-filled first and last page: the answer must match the page hashes, and nothing may throw. */
    private static void checkVerify(final Manifest m) {
        for (final int p : new int[] {0, m.pageCount() - 1}) {
            final int len = m.geometry().pageLength(p);
            if (len > PageGeometry.MAX_PAGE) {
                throw new AssertionError("page " + p + " of " + len + " bytes");
            }
            final ByteBuffer zeros = ByteBuffer.allocate(len);
            boolean expect = true;
            if (m.isLive()) {
                assertEquals(false, m.isZeroPage(p), "a live manifest has no zero page");
                assertEquals(0, m.zeroPageCount());
                org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class, () -> m.pageHash(0));
            }
            for (int s = m.firstSourcePage(p); s < m.firstSourcePage(p) + m.sourcePageCount(p) && !m.isLive(); s++) {
                final int sourceLen = (int) Math.min(m.sourcePageSize(), m.size() - (long) s * m.sourcePageSize());
                expect &= Arrays.equals(sha256(new byte[sourceLen]), m.pageHash(s));
            }
            assertEquals(expect, m.verify(p, zeros), "verify of a zero page " + p);
            assertEquals(0, zeros.position());
            assertEquals(false, m.verify(p, ByteBuffer.allocate(len + 1)), "a buffer longer than the page");
            try (java.lang.foreign.Arena a = java.lang.foreign.Arena.ofConfined()) {
                final java.lang.foreign.MemorySegment native0 = a.allocate(len + 8);
                assertEquals(expect, m.verify(p, native0, 8 - 8), "verify of native zeros, page " + p);
                assertEquals(false, m.verify(p, native0, 9), "native memory shorter than the page from the offset");
            }
        }
    }

    private static byte[] sha256(final byte[] b) {
        try {
            return java.security.MessageDigest.getInstance("SHA-256").digest(b);
        } catch (final java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Page hashes for {@code pages} pages: zero pages' real hashes where {@code zeroPage} is set, else arbitrary bytes. */
    private static byte[] hashes(final int pages, final int pageSize, final long size, final boolean... zeroPage) {
        final byte[] h = new byte[pages * Manifest.HASH_BYTES];
        for (int p = 0; p < pages; p++) {
            final byte[] one = p < zeroPage.length && zeroPage[p]
                ? sha256(new byte[(int) Math.min(pageSize, size - (long) p * pageSize)]) : sha256(new byte[] {(byte) p});
            System.arraycopy(one, 0, h, p * Manifest.HASH_BYTES, Manifest.HASH_BYTES);
        }
        return h;
    }

    private static byte[] bytes(final ByteBuffer b) {
        final byte[] out = new byte[b.remaining()];
        b.duplicate().get(out);
        return out;
    }

    /** Writes the seed corpus into directory {@code args[0]} (tools/fuzz manifest --write-seeds). */
    public static void main(final String[] args) throws IOException {
        final Path dir = Path.of(args[0]);
        Files.createDirectories(dir);
        // Three 4 KiB pages, two of them zeros: hashes that verify zero pages.
        write(dir, "three-pages", 0, new Manifest(3 * 4096, 4096, hashes(3, 4096, 3 * 4096, true, true)).encode());
        // A short last page, coarsened to 16 KiB (4096 << 2).
        write(dir, "short-last-page-coarsen-16k", 2, new Manifest(5 * 4096 + 512, 4096, hashes(6, 4096, 5 * 4096 + 512)).encode());
        // One 512-byte image in a 64 KiB page, a zero one.
        write(dir, "one-sector-64k-page", 4, new Manifest(512, 64 << 10, hashes(1, 64 << 10, 512, true)).encode());
        // Largest page size, coarsening refused (to a smaller size).
        write(dir, "4m-page", 0, new Manifest(8L << 20, 4 << 20, hashes(2, 4 << 20, 8L << 20)).encode());
        final ByteBuffer ok = new Manifest(2 * 4096, 4096, hashes(2, 4096, 2 * 4096)).encode();
        final byte[] okBytes = bytes(ok);
        write(dir, "truncated-checksums", 0, ByteBuffer.wrap(okBytes, 0, okBytes.length - 2));
        write(dir, "header-only", 0, ByteBuffer.wrap(okBytes, 0, Manifest.HEADER_BYTES));
        final ByteBuffer badCount = ByteBuffer.wrap(okBytes.clone()).order(ByteOrder.LITTLE_ENDIAN);
        badCount.putInt(20, 0x7fff_ffff);
        write(dir, "huge-page-count", 0, badCount);
        final ByteBuffer badSize = ByteBuffer.wrap(okBytes.clone()).order(ByteOrder.LITTLE_ENDIAN);
        badSize.putLong(8, Long.MAX_VALUE - 511);
        write(dir, "huge-size", 0, badSize);
        final ByteBuffer overOneTib = ByteBuffer.wrap(okBytes.clone()).order(ByteOrder.LITTLE_ENDIAN);
        overOneTib.putLong(8, (1L << 40) + 4096).putInt(16, 4 << 20);
        write(dir, "over-one-tebibyte", 0, overOneTib);
        final ByteBuffer v1 = ByteBuffer.wrap(okBytes.clone()).order(ByteOrder.LITTLE_ENDIAN);
        v1.putInt(4, 1);
        write(dir, "version-1", 0, v1);
        // Live manifests (version 3): a digest instead of hashes; coarsened to 64 KiB (4096 << 4).
        final byte[] digest = sha256(new byte[] {42});
        write(dir, "live-coarsen-64k", 4, Manifest.live(10 * 4096 + 512, 4096, digest).encode());
        final byte[] live = bytes(Manifest.live(3 * 4096, 4096, digest).encode());
        write(dir, "live-truncated-digest", 0, ByteBuffer.wrap(live, 0, live.length - 1));
        final ByteBuffer liveWithHashes = ByteBuffer.wrap(okBytes.clone()).order(ByteOrder.LITTLE_ENDIAN);
        liveWithHashes.putInt(4, Manifest.LIVE_VERSION);
        write(dir, "live-with-hashes", 0, liveWithHashes);
        final ByteBuffer liveWrongCount = ByteBuffer.wrap(live.clone()).order(ByteOrder.LITTLE_ENDIAN);
        liveWrongCount.putInt(20, 4);
        write(dir, "live-wrong-page-count", 0, liveWrongCount);
        final ByteBuffer liveHuge = ByteBuffer.wrap(live.clone()).order(ByteOrder.LITTLE_ENDIAN);
        liveHuge.putLong(8, 1L << 40).putInt(16, 4096).putInt(20, 1 << 28);
        write(dir, "live-too-many-pages", 0, liveHuge);
    }

    private static void write(final Path dir, final String name, final int coarsen, final ByteBuffer manifest) throws IOException {
        final byte[] m = bytes(manifest);
        final byte[] input = new byte[1 + m.length];
        input[0] = (byte) coarsen;
        System.arraycopy(m, 0, input, 1, m.length);
        Files.write(dir.resolve(name), input);
    }
}
