package io.lazyblk.pull.profile;

import java.util.Arrays;

/**
 * One connection's boot, as its demand-marked requests show it: the provider pages asked for, in first-asked order
 * (repeats are dropped at the merge), from its first demand request until its learning window ends, its page limit
 * is reached, or the connection ends; then merged into the image's {@link BootProfile}. The window ends at the first
 * demand request after it passed, or at the close: a connection that falls silent is merged when it closes (its
 * idle timeout at the latest).
 *
 * <p>Confined to the connection's thread. On its data path {@link #demand} costs a clock read and an array append;
 * the array starts at {@link #INITIAL_PAGES} and doubles, up to the profile's limit, so it grows a few times per boot.
 */
public final class BootRecorder {
    /** 256 pages (1 KiB): a boot of small reads grows it a few times; an idle connection costs little. */
    static final int INITIAL_PAGES = 256;

    private final BootProfile profile;
    private final long windowNanos;
    private final int maxPages;
    private final int pageCount;
    private int[] pages = new int[INITIAL_PAGES];
    private int n;
    private boolean started;
    private long startNanos;
    private boolean done;

    BootRecorder(final BootProfile profile, final long windowNanos, final int maxPages, final int pageCount) {
        this.profile = profile;
        this.windowNanos = windowNanos;
        this.maxPages = maxPages;
        this.pageCount = pageCount;
    }

    /** A demand request for {@code [first, first + count)} (checked against the image by the caller). */
    public void demand(final int first, final int count) {
        if (done) {
            return;
        }
        final long now = System.nanoTime();
        if (!started) {
            started = true;
            startNanos = now;
        } else if (now - startNanos > windowNanos) {
            finish();
            return;
        }
        for (int p = first; p < first + count && p < pageCount; p++) {
            if (n == pages.length) {
                pages = Arrays.copyOf(pages, Math.min(maxPages, pages.length * 2));
            }
            pages[n++] = p;
            if (n == maxPages) {
                finish();
                return;
            }
        }
    }

    /** Ends the boot: merges what was recorded (once; later demands are ignored). */
    public void finish() {
        if (done) {
            return;
        }
        done = true;
        if (n > 0) {
            profile.merge(pages, n);
        }
        pages = null;
    }

    /** Whether this boot has been merged (its window, its limit, or {@link #finish}). */
    public boolean finished() {
        return done;
    }
}
