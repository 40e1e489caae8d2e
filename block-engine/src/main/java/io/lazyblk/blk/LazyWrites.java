package io.lazyblk.blk;

import io.lazyblk.pagemap.PageGeometry;
import io.lazyblk.pagemap.PageTable;
import io.lazyblk.persistence.LocalImage;

import java.util.concurrent.atomic.AtomicIntegerArray;

/**
 * The lazy store's guest writes, which never wait for a fetch: a write "enters" each page it touches (a writer count
 * the merge waits on, {@link LazyStore#writers}), claims its sectors ({@link GuestSectors}) so a merge that starts
 * later skips them, writes through to the local file, then marks them done, so the next durability round records them.
 * A write that covers every sector of a page not here yet makes the page readable without a fetch. Thread-safe: any
 * I/O thread; no allocation.
 */
final class LazyWrites {
    private static final int SECTOR = GuestSectors.SECTOR;

    private final PageGeometry geo;
    private final PageTable table;
    private final LocalImage image;
    private final GuestSectors guest;
    private final AtomicIntegerArray writers;
    private final LazyFill fill;
    private final ZeroPages zeros;

    LazyWrites(final LazyStore store, final LazyFill fill) {
        this.zeros = store.zeros;
        this.geo = store.geo;
        this.table = store.table;
        this.image = store.image;
        this.guest = store.guest;
        this.writers = store.writers;
        this.fill = fill;
    }

    /**
     * Writes {@code length} bytes at {@code offset}: {@code r}'s buffers, or zeros from the caller's scratch iovec. After
     * the switch to disk-only ({@code diskOnly}) no fetch can land: the write goes straight to the file, and its marks
     * only keep a peer export from serving what the guest wrote.
     */
    int write(final long offset, final long length, final IoRequest r, final boolean zeroes, final long scratchIov,
              final long scratchLen, final boolean diskOnly) {
        zeros.written(offset, length, zeroes); // before the write: no read may answer zeros once its bytes can be seen
        if (diskOnly) {
            final int rc = zeroes
                ? image.writeZeroes(offset, length, false, scratchIov, scratchLen)
                : image.write(r.iov.address(), r.iovCount, r.offset, r.dataBytes);
            if (rc == 0) {
                guest.markDone(offset / SECTOR, length / SECTOR);
            }
            return rc;
        }
        final int first = geo.pageOf(offset);
        final int last = geo.lastPageOf(offset, length);
        for (int p = first; p <= last; p++) {
            enter(p);
        }
        try {
            // Claim before writing: a merge that starts after we leave sees the claims and skips these sectors.
            guest.claim(offset / SECTOR, length / SECTOR);
            final int rc = zeroes
                ? image.writeZeroes(offset, length, false, scratchIov, scratchLen) // never unmap: the page map owns holes
                : image.write(r.iov.address(), r.iovCount, r.offset, r.dataBytes);
            if (rc == 0) {
                guest.markDone(offset / SECTOR, length / SECTOR);
                for (int p = first; p <= last; p++) {
                    if (!table.readable(p) && wholePageGuestWritten(p)) {
                        fill.wholePageWritten(p);
                    }
                }
            } else {
                unclaimFailedWrite(first, last, offset / SECTOR, length / SECTOR);
            }
            return rc;
        } finally {
            for (int p = first; p <= last; p++) {
                writers.decrementAndGet(p);
            }
        }
    }

    /** Registers a writer on a page; waits out a merge in progress (a few µs). */
    private void enter(final int p) {
        while (true) {
            if (table.readable(p)) {
                writers.incrementAndGet(p); // harmless on a readable page; keeps the decrement symmetric
                return;
            }
            writers.incrementAndGet(p);
            // Volatile increment, then volatile read of the state: pairs with the merge's CAS to MERGING followed by its
            // read of writers; at least one of us sees the other, so no merge runs while we write.
            if (table.state(p) != PageTable.MERGING) {
                return;
            }
            writers.decrementAndGet(p);
            while (table.state(p) == PageTable.MERGING) {
                Thread.onSpinWait();
            }
        }
    }

    /**
     * A guest write failed: its sectors hold neither its bytes nor (maybe) the image's, so they must not stay claimed,
     * or the merge would skip them and a read would return whatever is there. Unclaims the sectors no completed write
     * owns, in pages we are the only writer of (the merge waits for us, so none runs meanwhile); with a concurrent
     * writer on the same page the claims stay, as its write may need them.
     */
    private void unclaimFailedWrite(final int first, final int last, final long firstSector, final long count) {
        for (int p = first; p <= last; p++) {
            if (table.readable(p) || writers.get(p) != 1) {
                continue;
            }
            final long from = Math.max(firstSector, geo.pageStart(p) / SECTOR);
            final long to = Math.min(firstSector + count, (geo.pageStart(p) + geo.pageLength(p)) / SECTOR);
            for (long s = from; s < to; s++) {
                guest.unclaimUnlessDone(s);
            }
        }
    }

    private boolean wholePageGuestWritten(final int p) {
        final long start = geo.pageStart(p) / SECTOR;
        final long n = geo.pageLength(p) / SECTOR;
        for (long s = start; s < start + n; s++) {
            if (!guest.wrote(s)) {
                return false;
            }
        }
        return true;
    }
}
