package io.lazyblk.pagemap;

/**
 * How an image is cut into fixed pages: a power of two from 4 KiB to 4 MiB; the last page may be short.
 * Immutable; thread-safe.
 */
public final class PageGeometry {
    public static final int MIN_PAGE = 4 << 10;
    public static final int MAX_PAGE = 4 << 20;

    private final long imageSize;
    private final int pageSize;
    private final int shift;
    private final long pageCount;

    public PageGeometry(final long imageSize, final int pageSize) {
        if (pageSize < MIN_PAGE || pageSize > MAX_PAGE || Integer.bitCount(pageSize) != 1) {
            throw new IllegalArgumentException("page size " + pageSize + " is not a power of two from 4 KiB to 4 MiB");
        }
        if (imageSize <= 0 || imageSize % 512 != 0) {
            throw new IllegalArgumentException("image size " + imageSize + " is not a positive multiple of 512");
        }
        final long pages = (imageSize + pageSize - 1) / pageSize;
        if (pages > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("image of " + imageSize + " bytes has too many " + pageSize + "-byte pages; use larger pages");
        }
        this.imageSize = imageSize;
        this.pageSize = pageSize;
        this.shift = Integer.numberOfTrailingZeros(pageSize);
        this.pageCount = pages;
    }

    public long imageSize() {
        return imageSize;
    }

    public int pageSize() {
        return pageSize;
    }

    public int pageCount() {
        return (int) pageCount;
    }

    /** The page holding byte {@code offset} (which must lie in the image). */
    public int pageOf(final long offset) {
        return (int) (offset >>> shift);
    }

    public long pageStart(final int page) {
        return (long) page << shift;
    }

    /** Bytes in {@code page}: {@link #pageSize()} except for a short last page. */
    public int pageLength(final int page) {
        return (int) Math.min(pageSize, imageSize - pageStart(page));
    }

    /** Pages touched by the byte range {@code [offset, offset + length)}, as {@code first} and {@code last} inclusive. */
    public int lastPageOf(final long offset, final long length) {
        return pageOf(offset + Math.max(length, 1) - 1);
    }
}
