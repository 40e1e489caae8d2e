package io.lazyblk.pull.profile;

import java.util.Arrays;

/** The one check of a boot profile's page list, wherever it comes from (a file, the wire). */
public final class ProfilePages {
    private ProfilePages() {
    }

    /**
     * Why the first {@code n} entries of {@code pages} are not a profile of an image of {@code pageCount} pages, or null
     * if they are one: at most {@code max} entries, each in {@code [0, pageCount)}, none twice.
     */
    public static String check(final int[] pages, final int n, final int pageCount, final int max) {
        if (n < 0 || n > max) {
            return n + " pages (at most " + max + ")";
        }
        for (int i = 0; i < n; i++) {
            if (pages[i] < 0 || pages[i] >= pageCount) {
                return "page " + Integer.toUnsignedString(pages[i]) + " at entry " + i + ", outside an image of " + pageCount + " pages";
            }
        }
        final int[] sorted = Arrays.copyOf(pages, n);
        Arrays.sort(sorted);
        for (int i = 1; i < n; i++) {
            if (sorted[i] == sorted[i - 1]) {
                return "page " + sorted[i] + " listed twice";
            }
        }
        return null;
    }
}
