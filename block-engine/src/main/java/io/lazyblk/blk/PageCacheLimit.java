package io.lazyblk.blk;

import io.lazyblk.pagemap.PageGeometry;
import io.lazyblk.persistence.LocalImage;

/**
 * Bounds what the background fill leaves in the host's page cache: durable background-filled pages are remembered
 * oldest first in a ring; beyond its capacity (half the memory budget) the oldest are dropped from the cache
 * ({@code POSIX_FADV_DONTNEED}), so a fill that streams a whole image through the host does not push the guest's
 * pages, or other VMs', out of RAM. Pages a guest asked for or wrote are never dropped. Not thread-safe: called by
 * the persister only (under {@link Durability}'s monitor).
 */
final class PageCacheLimit {
    private final LocalImage image;
    private final PageGeometry geo;
    private final int[] ring;
    private int head;
    private int count;

    PageCacheLimit(final LocalImage image, final PageGeometry geo, final int capacity) {
        this.image = image;
        this.geo = geo;
        this.ring = new int[capacity];
    }

    /** Background page {@code p} is durable; drops the oldest such pages beyond the ring's capacity. */
    void durable(final int p) {
        if (count == ring.length) {
            int first = ring[head];
            int last = first;
            int dropped = 0;
            // Drop an eighth of the ring at once, merging consecutive pages into one call (the fill runs in order).
            while (count > 0 && dropped < Math.max(1, ring.length / 8)) {
                final int q = ring[head];
                if (q != last + 1 && dropped > 0) {
                    drop(first, last);
                    first = q;
                }
                last = q;
                head = (head + 1) % ring.length;
                count--;
                dropped++;
            }
            drop(first, last);
        }
        ring[(head + count) % ring.length] = p;
        count++;
    }

    private void drop(final int first, final int last) {
        final long start = geo.pageStart(first);
        image.dropCache(start, geo.pageStart(last) + geo.pageLength(last) - start); // advisory: failure is harmless
    }
}
