package io.lazyblk.pagemap;

import org.junit.jupiter.api.Test;

import java.nio.ByteBuffer;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ManifestTest {
    private static final int BASE = 4096;
    /** 10 provider pages and a short one of 1 KiB. */
    private static final int SIZE = 10 * BASE + 1024;

    private final byte[] image = new byte[SIZE];
    private final Manifest manifest;

    ManifestTest() {
        new Random(5).nextBytes(image);
        manifest = Manifest.of(image, BASE);
    }

    @Test
    void shouldMarkZeroPagesFromTheirHashesIncludingAShortLastPageAndCoarsePages() {
        final byte[] img = image.clone();
        java.util.Arrays.fill(img, 0, 4 * BASE, (byte) 0);          // provider pages 0..3: a coarse page of 4 is zero
        java.util.Arrays.fill(img, 5 * BASE, 6 * BASE, (byte) 0);   // page 5 alone: its coarse page (4..7) is not
        java.util.Arrays.fill(img, 8 * BASE, SIZE, (byte) 0);       // 8, 9 and the short last page 10
        img[5 * BASE + 77] = 0;
        final Manifest m = Manifest.of(img, BASE);
        for (int p = 0; p < m.pageCount(); p++) {
            assertEquals(p < 4 || p == 5 || p >= 8, m.isZeroSourcePage(p), "provider page " + p);
        }
        assertEquals(8, m.zeroSourcePageCount());
        final Manifest coarse = m.coarsened(4 * BASE);
        assertTrue(coarse.isZeroPage(0));
        assertFalse(coarse.isZeroPage(1), "one zero provider page of four does not make the page zero");
        assertTrue(coarse.isZeroPage(2), "the last coarse page (8, 9 and the short 10) is zero");
        assertEquals(2, coarse.zeroPageCount());
        assertEquals(0, manifest.zeroPageCount(), "random bytes have no zero page");
        final byte[] oneByte = img.clone();
        oneByte[2 * BASE + 9] = 1;
        assertFalse(Manifest.of(oneByte, BASE).isZeroSourcePage(2), "a single non-zero byte is not a zero page");
        assertTrue(Manifest.decode(m.encode()).isZeroSourcePage(10), "the receiver derives the marks from the hashes it got");
    }

    @Test
    void shouldVerifyCoarserPagesAgainstEveryProviderHashInThem() {
        final Manifest m = manifest.coarsened(4 * BASE);
        assertEquals(3, m.pageCount(), "16 KiB pages: two whole and a short one");
        assertEquals(4, m.sourcePagesPerPage());
        assertEquals(BASE, m.sourcePageSize());
        assertEquals(8, m.firstSourcePage(2));
        assertEquals(3, m.sourcePageCount(2), "the last page holds provider pages 8, 9 and the short 10");
        assertEquals(2 * BASE + 1024, m.geometry().pageLength(2));
        for (int p = 0; p < 3; p++) {
            final ByteBuffer page = ByteBuffer.wrap(image, p * 4 * BASE, m.geometry().pageLength(p)).slice();
            assertTrue(m.verify(p, page), "page " + p);
            assertEquals(0, page.position(), "verify leaves the buffer as it was");
            assertEquals(m.geometry().pageLength(p), page.limit());
        }
        final byte[] bad = image.clone();
        bad[4 * BASE + 3 * BASE + 17] ^= 1; // in the last provider page of page 1
        assertFalse(m.verify(1, ByteBuffer.wrap(bad, 4 * BASE, 4 * BASE).slice()));
        assertTrue(m.verify(0, ByteBuffer.wrap(bad, 0, 4 * BASE).slice()));
        assertFalse(m.verify(1, ByteBuffer.wrap(image, 4 * BASE, 4 * BASE - 1).slice()), "a short buffer");
    }

    @Test
    void shouldKeepTheProvidersFormWhenEncodingACoarsenedView() {
        final Manifest m = manifest.coarsened(8 * BASE);
        final Manifest back = Manifest.decode(m.encode());
        assertEquals(BASE, back.pageSize());
        assertEquals(manifest.pageCount(), back.pageCount());
        assertTrue(back.sameImage(manifest));
        assertArrayEquals(manifest.digest(), back.digest());
        assertSame(manifest, manifest.coarsened(BASE));
    }

    @Test
    void shouldRefusePagesSmallerThanTheProvidersOrNotPowersOfTwo() {
        final IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> manifest.coarsened(2048));
        assertTrue(e.getMessage().contains("provider's page size (4096"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> manifest.coarsened(3 * BASE));
        assertThrows(IllegalArgumentException.class, () -> manifest.coarsened(8 << 20));
    }

    @Test
    void shouldRefuseAForgedPageThatKeepsItsCrc32c() {
        // CRC32C is linear: for equal lengths, crc(a ^ d) = crc(a) ^ crc(d) ^ crc(0). Any d with crc(d) = crc(0) keeps a
        // page's CRC whatever else it changes, and such a d is found by Gaussian elimination over 33 random vectors.
        final byte[] d = crcKernelVector(BASE);
        final byte[] forged = java.util.Arrays.copyOfRange(image, 0, BASE);
        for (int i = 0; i < BASE; i++) {
            forged[i] ^= d[i];
        }
        assertEquals(crc(java.util.Arrays.copyOfRange(image, 0, BASE)), crc(forged), "a forgery a CRC check would accept");
        assertFalse(java.util.Arrays.equals(forged, java.util.Arrays.copyOfRange(image, 0, BASE)));
        assertFalse(manifest.verify(0, ByteBuffer.wrap(forged)), "the page hash refuses it");
        assertTrue(manifest.verify(0, ByteBuffer.wrap(image, 0, BASE).slice()));
    }

    private static int crc(final byte[] b) {
        final java.util.zip.CRC32C c = new java.util.zip.CRC32C();
        c.update(b);
        return (int) c.getValue();
    }

    /** A nonzero vector whose CRC32C equals that of zeros of the same length. */
    private static byte[] crcKernelVector(final int length) {
        final int zero = crc(new byte[length]);
        final int[] basisValue = new int[32];
        final byte[][] basisVector = new byte[32][];
        final Random rnd = new Random(11);
        while (true) {
            byte[] v = new byte[length];
            rnd.nextBytes(v);
            int value = crc(v) ^ zero;
            for (int bit = 31; bit >= 0 && value != 0; bit--) {
                if ((value >>> bit & 1) == 0) {
                    continue;
                }
                if (basisVector[bit] == null) {
                    basisValue[bit] = value;
                    basisVector[bit] = v;
                    value = -1; // stored: not in the kernel
                    break;
                }
                value ^= basisValue[bit];
                final byte[] combined = v.clone();
                for (int i = 0; i < length; i++) {
                    combined[i] ^= basisVector[bit][i];
                }
                v = combined;
            }
            if (value == 0) {
                return v;
            }
        }
    }

    @Test
    void shouldIdentifyTheImageByTheDigestOfEveryPageHash() {
        final byte[] other = image.clone();
        other[7 * BASE + 100] ^= 1;
        final Manifest changed = Manifest.of(other, BASE);
        assertFalse(changed.sameImage(manifest), "one byte of one page changes the digest");
        assertArrayEquals(manifest.digest(), Manifest.of(image.clone(), BASE).digest(), "the digest is a function of the bytes");
        assertFalse(Manifest.of(image, 2 * BASE).sameImage(manifest), "other provider pages: another manifest");
        assertArrayEquals(manifest.digest(), Manifest.decode(manifest.encode()).digest(), "computed from what was received");
    }

    @Test
    void shouldRefuseAManifestClaimingMoreThanOneTebibyteWithoutAllocatingIt() {
        final ByteBuffer b = ByteBuffer.allocate(Manifest.HEADER_BYTES + 32).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        b.putInt(Manifest.MAGIC).putInt(Manifest.VERSION).putLong(1L << 60).putInt(4 << 20).putInt(1).put(new byte[32]).flip();
        final IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Manifest.decode(b));
        assertTrue(e.getMessage().contains("up to 1099511627776 bytes (1 TiB)"), e.getMessage());
        final ByteBuffer huge = ByteBuffer.allocate(Manifest.HEADER_BYTES + 32).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        huge.putInt(Manifest.MAGIC).putInt(Manifest.VERSION).putLong(8L << 40).putInt(4 << 20).putInt(Manifest.MAX_PAGES).flip();
        assertThrows(IllegalArgumentException.class, () -> Manifest.decode(huge), "16 M pages of 4 MiB: 64 TiB");
    }

    @Test
    void shouldSayWhatToDoWithAManifestOfAnOlderProvider() {
        final ByteBuffer b = ByteBuffer.allocate(64).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        b.putInt(Manifest.MAGIC).putInt(1).putLong(4096).putInt(4096).putInt(1).flip();
        final IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Manifest.decode(b));
        assertTrue(e.getMessage().contains("upgrade it"), e.getMessage());
    }

    private static byte[] digest(final int seed) {
        final byte[] d = new byte[Manifest.HASH_BYTES];
        new Random(seed).nextBytes(d);
        return d;
    }

    @Test
    void shouldTrustEveryPageOfALiveManifestWithoutHashesOrZeroPages() {
        final Manifest live = Manifest.live(SIZE, BASE, digest(1));
        assertTrue(live.isLive());
        assertFalse(manifest.isLive());
        assertEquals(11, live.pageCount());
        assertArrayEquals(digest(1), live.digest(), "the export's digest, not one computed here");
        final ByteBuffer zeros = ByteBuffer.allocate(BASE);
        for (int p = 0; p < live.pageCount(); p++) {
            assertFalse(live.isZeroPage(p), "page " + p + " of a live disk is no zero page, though the bytes may be zeros");
            assertFalse(live.isZeroSourcePage(p));
            final ByteBuffer page = ByteBuffer.wrap(image, p * BASE, live.geometry().pageLength(p)).slice();
            assertTrue(live.verify(p, page), "page " + p);
        }
        assertEquals(0, live.zeroPageCount());
        assertEquals(0, live.zeroSourcePageCount());
        assertTrue(live.verify(0, zeros), "any bytes of the page's length");
        assertFalse(live.verify(10, zeros), "not bytes of another length: the last page is 1 KiB");
        try (java.lang.foreign.Arena a = java.lang.foreign.Arena.ofConfined()) {
            final java.lang.foreign.MemorySegment seg = a.allocate(BASE);
            assertTrue(live.verifyPart(0, 0, seg, 0));
            assertFalse(live.verifyPart(0, 1, seg, 0), "a part outside the page");
            assertFalse(live.verify(0, seg, 1), "memory shorter than the page from the offset");
        }
        final IllegalStateException e = assertThrows(IllegalStateException.class, () -> live.pageHash(0));
        assertTrue(e.getMessage().contains("no page hashes"), e.getMessage());
    }

    @Test
    void shouldCoarsenALiveManifestIntoALiveOne() {
        final Manifest live = Manifest.live(SIZE, BASE, digest(1));
        final Manifest coarse = live.coarsened(4 * BASE);
        assertTrue(coarse.isLive());
        assertEquals(3, coarse.pageCount());
        assertEquals(4, coarse.sourcePagesPerPage());
        assertEquals(3, coarse.sourcePageCount(2));
        assertFalse(coarse.isZeroPage(0));
        assertTrue(coarse.verify(2, ByteBuffer.allocate(2 * BASE + 1024)));
        assertTrue(coarse.sameImage(live.coarsened(4 * BASE)));
        assertArrayEquals(digest(1), coarse.digest());
        assertThrows(IllegalArgumentException.class, () -> live.coarsened(2048), "never smaller than the export's pages");
    }

    @Test
    void shouldRoundTripALiveManifestAsVersionThreeWithItsDigestAndNoHashes() {
        final Manifest live = Manifest.live(SIZE, BASE, digest(2)).coarsened(2 * BASE);
        final ByteBuffer wire = live.encode();
        assertEquals(Manifest.HEADER_BYTES + Manifest.HASH_BYTES, wire.remaining());
        assertEquals(live.encodedLength(), wire.remaining());
        assertEquals(Manifest.LIVE_VERSION, wire.duplicate().order(java.nio.ByteOrder.LITTLE_ENDIAN).getInt(4));
        final Manifest back = Manifest.decode(wire);
        assertTrue(back.isLive());
        assertEquals(BASE, back.pageSize(), "the export's page size, as for a coarsened hashed manifest");
        assertEquals(SIZE, back.size());
        assertArrayEquals(digest(2), back.digest());
        assertTrue(back.sameImage(Manifest.live(SIZE, BASE, digest(2))));
        assertFalse(back.sameImage(Manifest.live(SIZE, BASE, digest(3))), "another export");
    }

    @Test
    void shouldNeverTakeALiveManifestForAHashedImageWithTheSameDigest() {
        // A live manifest's digest is whatever its export says: one claiming a golden image's digest must not pass the
        // chain's check against the seed, or that source's pages would be taken unverified.
        final Manifest forged = Manifest.live(SIZE, BASE, manifest.digest());
        assertFalse(forged.sameImage(manifest));
        assertFalse(manifest.sameImage(forged));
    }

    @Test
    void shouldRefuseABadLiveManifest() {
        assertThrows(IllegalArgumentException.class, () -> Manifest.live(SIZE, BASE, new byte[31]), "a short digest");
        assertThrows(IllegalArgumentException.class, () -> Manifest.live(0, BASE, digest(1)));
        assertThrows(IllegalArgumentException.class, () -> Manifest.live(1000, BASE, digest(1)), "not a multiple of 512");
        assertThrows(IllegalArgumentException.class, () -> Manifest.live(SIZE, 3 * BASE, digest(1)));
        assertThrows(IllegalArgumentException.class, () -> Manifest.live(Manifest.MAX_IMAGE_BYTES + 512, 4 << 20, digest(1)));
        final IllegalArgumentException tooMany = assertThrows(IllegalArgumentException.class,
            () -> Manifest.live(Manifest.MAX_IMAGE_BYTES, BASE, digest(1)), "256 Mi pages of 4 KiB: more than decode accepts");
        assertTrue(tooMany.getMessage().contains("use larger pages"), tooMany.getMessage());
        assertEquals(Manifest.MAX_PAGES, Manifest.live(Manifest.MAX_IMAGE_BYTES, 64 << 10, digest(1)).pageCount(),
            "1 TiB in 64 KiB pages: the most pages a manifest holds");
        final byte[] wire = new byte[Manifest.HEADER_BYTES + Manifest.HASH_BYTES];
        Manifest.live(3 * BASE, BASE, digest(1)).encode().get(wire);
        final ByteBuffer extra = ByteBuffer.allocate(wire.length + 32).put(wire).flip().limit(wire.length + 32);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> Manifest.decode(extra)).getMessage().contains("its digest"));
        final ByteBuffer wrongCount = ByteBuffer.wrap(wire.clone()).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        wrongCount.putInt(20, 4);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> Manifest.decode(wrongCount)).getMessage().contains("are 3"));
    }

    @Test
    void shouldNameBothVersionsWhenRefusingAnUnknownOne() {
        final ByteBuffer b = ByteBuffer.allocate(64).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        b.putInt(Manifest.MAGIC).putInt(4).putLong(4096).putInt(4096).putInt(1).flip();
        final IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Manifest.decode(b));
        assertTrue(e.getMessage().contains("manifest version 4, this engine reads versions 2 and 3"), e.getMessage());
    }
}
