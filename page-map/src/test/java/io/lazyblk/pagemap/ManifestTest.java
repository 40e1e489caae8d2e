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
        final int pages = (SIZE + BASE - 1) / BASE;
        final int[] crcs = new int[pages];
        for (int p = 0; p < pages; p++) {
            crcs[p] = Manifest.crc(ByteBuffer.wrap(image, p * BASE, Math.min(BASE, SIZE - p * BASE)));
        }
        manifest = new Manifest(SIZE, BASE, crcs, new byte[32]);
    }

    @Test
    void shouldVerifyCoarserPagesAgainstEveryProviderChecksumInThem() {
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
}
