package io.lazyblk.pagemap;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

class PageGeometryTest {
    @Test
    void shouldCutAnImageIntoPagesWithAShortLastPage() {
        final PageGeometry g = new PageGeometry(10 * 4096 + 512, 4096);
        assertEquals(11, g.pageCount());
        assertEquals(4096, g.pageLength(0));
        assertEquals(512, g.pageLength(10));
        assertEquals(2, g.pageOf(8192));
        assertEquals(1, g.pageOf(8191));
        assertEquals(40960, g.pageStart(10));
        assertEquals(2, g.lastPageOf(4096, 8192));
        assertEquals(1, g.lastPageOf(4096, 0));
    }

    @Test
    void shouldRefusePageSizesOutsideTheRangeOrNotPowersOfTwo() {
        assertThrows(IllegalArgumentException.class, () -> new PageGeometry(1 << 20, 2048));
        assertThrows(IllegalArgumentException.class, () -> new PageGeometry(1 << 20, 8 << 20));
        assertThrows(IllegalArgumentException.class, () -> new PageGeometry(1 << 20, 12288));
        assertThrows(IllegalArgumentException.class, () -> new PageGeometry(1000, 4096));
    }
}
