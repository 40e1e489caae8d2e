package io.lazyblk.blk;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pagemap.PageTable;
import io.lazyblk.persistence.PageStateFile;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The pages of a learned boot profile that this engine fetches ahead of the guest ({@link LazyFill} issues them before
 * any background page), and how well that went: which of them the guest read after they were here.
 *
 * <p>The profile comes from the provider as provider pages in fetch order ({@link PageSource#bootProfile()}); here they
 * become engine pages, in the same order, each once, without zero pages (never fetched) and pages already local.
 *
 * <p>Per page one mark: {@link #WAITING} (listed, the guest has not read it yet), then on the guest's first read
 * {@link #USED} (it was readable: fetched ahead) or {@link #MISSED} (the guest came first). Counting on the data path is
 * one byte read per page a read touches, and a CAS plus a counter add once per profile page. Thread-safe.
 */
final class BootProfile {
    static final byte NONE = 0;
    static final byte WAITING = 1;
    static final byte USED = 2;
    static final byte MISSED = 3;
    private static final VarHandle MARK = MethodHandles.arrayElementVarHandle(byte[].class);

    /** Engine pages to fetch ahead, in order. */
    final int[] pages;
    /** A mark per engine page; empty when there is no profile (nothing to count). */
    private final byte[] marks;
    private final PageTable table;
    private final Manifest manifest;
    private final AtomicLong usedBytes = new AtomicLong();

    /**
     * @param providerPages the source's profile, provider pages in fetch order (checked by the source; checked again
     *     here, as a bad one must never index out of bounds)
     */
    BootProfile(final int[] providerPages, final Manifest manifest, final PageStateFile state, final PageTable table) {
        this.manifest = manifest;
        this.table = table;
        final int sourcePages = (int) ((manifest.size() + manifest.sourcePageSize() - 1) / manifest.sourcePageSize());
        final int perPage = manifest.sourcePagesPerPage();
        final byte[] m = new byte[manifest.pageCount()];
        final int[] out = new int[Math.min(providerPages.length, PageSource.MAX_PROFILE_PAGES)];
        int n = 0;
        for (int i = 0; i < out.length; i++) {
            final int sp = providerPages[i];
            if (sp < 0 || sp >= sourcePages) {
                continue;
            }
            final int p = sp / perPage;
            if (m[p] != NONE || manifest.isZeroPage(p) || state.isLocal(p)) {
                continue; // listed already (another provider page of it), never fetched, or here
            }
            m[p] = WAITING;
            out[n++] = p;
        }
        this.pages = java.util.Arrays.copyOf(out, n);
        this.marks = n == 0 ? new byte[0] : m;
    }

    /** Whether page {@code p} is in the profile. */
    boolean listed(final int p) {
        return marks.length != 0 && marks[p] != NONE;
    }

    /** Page {@code p}'s mark (tests). */
    byte mark(final int p) {
        return marks.length == 0 ? NONE : (byte) MARK.getAcquire(marks, p);
    }

    /** A guest read touches pages {@code [first, last]}: the first read of a profile page counts it used or missed. */
    void read(final int first, final int last) {
        if (marks.length == 0) {
            return;
        }
        for (int p = first; p <= last; p++) {
            // A plain read: a mark only ever leaves WAITING by the CAS below, so a stale WAITING just fails it.
            if (marks[p] == WAITING) {
                final boolean ahead = table.readable(p);
                if (MARK.compareAndSet(marks, p, WAITING, ahead ? USED : MISSED) && ahead) {
                    usedBytes.addAndGet(manifest.geometry().pageLength(p));
                }
            }
        }
    }

    /** Engine pages in the profile (after dropping zero pages and pages local at start). */
    int pageCount() {
        return pages.length;
    }

    /** Bytes of profile pages the guest read after they were here (fetched ahead and used). */
    long usedBytes() {
        return usedBytes.get();
    }

    /** Bytes of profile pages here that the guest has not read yet: fetched ahead, and not used so far. Scans the profile. */
    long wastedBytes() {
        long n = 0;
        for (final int p : pages) {
            if ((byte) MARK.getAcquire(marks, p) == WAITING && table.readable(p)) {
                n += manifest.geometry().pageLength(p);
            }
        }
        return n;
    }

    /** Bytes of profile pages that were here before the guest first read them: used plus wasted. */
    long aheadBytes() {
        // Used first: a page the guest reads meanwhile may be left out of this sum for a moment, never counted twice.
        final long used = usedBytes();
        return used + wastedBytes();
    }
}
