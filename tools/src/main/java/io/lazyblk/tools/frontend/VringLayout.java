package io.lazyblk.tools.frontend;

/**
 * Byte offsets and flags of a virtio 1.x split virtqueue (virtio spec 2.7), named once so ring code reads
 * as the spec does. All fields are little endian. Stateless.
 */
public final class VringLayout {
    /** struct virtq_desc: le64 addr, le32 len, le16 flags, le16 next. */
    public static final int DESC_SIZE = 16;
    public static final int DESC_ADDR = 0;
    public static final int DESC_LEN = 8;
    public static final int DESC_FLAGS = 12;
    public static final int DESC_NEXT = 14;
    public static final int DESC_ALIGN = 16;

    public static final int VIRTQ_DESC_F_NEXT = 1;
    public static final int VIRTQ_DESC_F_WRITE = 2;
    public static final int VIRTQ_DESC_F_INDIRECT = 4;

    /** struct virtq_avail: le16 flags, le16 idx, le16 ring[size], le16 used_event. */
    public static final int AVAIL_FLAGS = 0;
    public static final int AVAIL_IDX = 2;
    public static final int AVAIL_RING = 4;
    public static final int AVAIL_ALIGN = 2;
    public static final int VIRTQ_AVAIL_F_NO_INTERRUPT = 1;

    /** struct virtq_used: le16 flags, le16 idx, {le32 id, le32 len} ring[size], le16 avail_event. */
    public static final int USED_FLAGS = 0;
    public static final int USED_IDX = 2;
    public static final int USED_RING = 4;
    public static final int USED_ELEM_SIZE = 8;
    public static final int USED_ALIGN = 4;
    public static final int VIRTQ_USED_F_NO_NOTIFY = 1;

    /** Largest split queue the virtio spec allows (queue size is a 16-bit power of two up to 32768). */
    public static final int MAX_QUEUE_SIZE = 32768;

    private VringLayout() {
    }

    public static long descTableBytes(final int size) {
        return (long) DESC_SIZE * size;
    }

    /** Includes the trailing used_event word (present whether or not EVENT_IDX is negotiated). */
    public static long availBytes(final int size) {
        return AVAIL_RING + 2L * size + 2;
    }

    /** Includes the trailing avail_event word. */
    public static long usedBytes(final int size) {
        return USED_RING + (long) USED_ELEM_SIZE * size + 2;
    }

    /** Offset of used_event inside the avail ring. */
    public static long usedEventOffset(final int size) {
        return AVAIL_RING + 2L * size;
    }

    /** Offset of avail_event inside the used ring. */
    public static long availEventOffset(final int size) {
        return USED_RING + (long) USED_ELEM_SIZE * size;
    }

    /**
     * The spec's {@code vring_need_event}: true when moving an index from {@code oldIdx} to {@code newIdx}
     * (free-running 16-bit counters) passes {@code eventIdx}, i.e. {@code eventIdx} lies in {@code [oldIdx, newIdx)}.
     */
    public static boolean needEvent(final int eventIdx, final int newIdx, final int oldIdx) {
        return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
    }

    /** Writes descriptor {@code i} of any table (a ring's own or an indirect one), fields as given. */
    public static void writeDescriptor(final java.lang.foreign.MemorySegment table, final long i, final long addr,
                                       final int len, final int flags, final int next) {
        final long off = i * DESC_SIZE;
        table.set(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, off + DESC_ADDR, addr);
        table.set(java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED, off + DESC_LEN, len);
        table.set(java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED, off + DESC_FLAGS, (short) flags);
        table.set(java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED, off + DESC_NEXT, (short) next);
    }

    public static boolean validSize(final int size) {
        return size > 0 && size <= MAX_QUEUE_SIZE && (size & (size - 1)) == 0;
    }
}
