package io.lazyblk.blk;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageGeometry;
import io.lazyblk.persistence.LocalImage;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;

/**
 * The pages known to read as zeros: pages of the image that hold only zeros (the manifest says so from their hashes,
 * which nobody can forge: {@link Manifest#isZeroPage}) and that the guest has not written since. A zero page is never
 * fetched and never written by the engine (a hole of the local file reads as zeros); a guest read that lies wholly in
 * known-zero pages is answered by zero-filling its buffers, without touching the local file. A guest write clears the
 * bit of every page it touches before it writes (a write-zeroes leaves the pages it covers whole: they still read zeros).
 *
 * <p>At start a page is known-zero if the manifest says it is zero and no sector of it is recorded as the guest's. The
 * local file may still hold bytes there that the guest wrote before a crash and that were never recorded, so never
 * flushed (they may be lost): each run of known-zero pages is punched out first, so the file agrees with what reads
 * answer, in this life and after it (a restart from the complete file serves it as a plain file). Where the file system
 * cannot punch holes, those pages are not known-zero: their reads go to the file, which is then their truth.
 *
 * <p>Thread-safety: one bit per page, cleared by CAS only; set only in the constructor, before any other thread runs.
 */
final class ZeroPages {
    private static final Logger LOG = LoggerFactory.getLogger(ZeroPages.class);
    private static final VarHandle WORDS = MethodHandles.arrayElementVarHandle(long[].class);
    private static final int SECTOR = GuestSectors.SECTOR;

    private final PageGeometry geo;
    private final long[] known;
    /** Pages of the image that hold only zeros (whether the guest wrote them since or not). */
    private final int imageZeros;

    ZeroPages(final Manifest manifest, final GuestSectors guest, final LocalImage image) {
        this.geo = manifest.geometry();
        this.imageZeros = manifest.zeroPageCount();
        this.known = new long[(geo.pageCount() + 63) >>> 6];
        if (imageZeros == 0) {
            return;
        }
        int failedRuns = 0;
        String why = null;
        for (int p = 0; p < geo.pageCount(); ) {
            if (!manifest.isZeroPage(p) || guestWrote(guest, p)) {
                p++;
                continue;
            }
            int end = p + 1;
            while (end < geo.pageCount() && manifest.isZeroPage(end) && !guestWrote(guest, end)) {
                end++;
            }
            final long from = geo.pageStart(p);
            final long to = geo.pageStart(end - 1) + geo.pageLength(end - 1);
            // A hole already (a new file, or a zero page nobody wrote): the file system finds nothing to free.
            final int rc = image.discard(from, to - from);
            if (rc == 0) {
                for (int q = p; q < end; q++) {
                    known[q >>> 6] |= 1L << q;
                }
            } else {
                failedRuns++;
                why = "errno " + -rc;
            }
            p = end;
        }
        if (failedRuns > 0) {
            LOG.warn("{} run(s) of zero pages of {} could not be punched out ({}): their reads go to the file", failedRuns,
                image.path(), why);
        }
    }

    private boolean guestWrote(final GuestSectors guest, final int p) {
        return guest.anyClaimed(geo.pageStart(p) / SECTOR, geo.pageLength(p) / SECTOR);
    }

    /** Pages of the image that hold only zeros (never fetched). */
    int imageZeroPages() {
        return imageZeros;
    }

    /** Whether every page of {@code [first, last]} reads as zeros (and the guest has not written it). Any thread. */
    boolean allKnown(final int first, final int last) {
        if (imageZeros == 0) {
            return false;
        }
        for (int p = first; p <= last; p++) {
            // Acquire: pairs with the CAS in written(); a read that starts after a write completed sees its clear (the
            // write's completion and the read's submission are ordered through the virtqueue).
            if (((long) WORDS.getAcquire(known, p >>> 6) & (1L << p)) == 0) {
                return false;
            }
        }
        return true;
    }

    /**
     * The guest is about to write {@code [offset, offset + length)} (zeros if {@code zeroes}): the pages it touches no
     * longer read as zeros, except pages a write-zeroes covers whole. Before the write starts, so a read that sees the
     * write's bytes in the file cannot be answered with zeros afterwards. No allocation.
     */
    void written(final long offset, final long length, final boolean zeroes) {
        if (imageZeros == 0 || length <= 0) {
            return;
        }
        final int first = geo.pageOf(offset);
        final int last = geo.lastPageOf(offset, length);
        for (int p = first; p <= last; p++) {
            if (zeroes && offset <= geo.pageStart(p) && offset + length >= geo.pageStart(p) + geo.pageLength(p)) {
                continue;
            }
            final long bit = 1L << p;
            if (((long) WORDS.getAcquire(known, p >>> 6) & bit) != 0) {
                WORDS.getAndBitwiseAnd(known, p >>> 6, ~bit); // volatile: pairs with the acquire in allKnown
            }
        }
    }

    /** Pages known to read as zeros now (for tests and status; counts the bits). */
    int knownCount() {
        int n = 0;
        for (int i = 0; i < known.length; i++) {
            n += Long.bitCount((long) WORDS.getAcquire(known, i));
        }
        return n;
    }
}
