package io.lazyblk.vhost.inflight;

/**
 * Offsets of the split-ring in-flight region of vhost-user's INFLIGHT_SHMFD feature (QEMU
 * {@code docs/interop/vhost-user.rst}, "Inflight I/O tracking"): per queue a 16-byte header, then one 16-byte entry
 * per descriptor. All fields little endian (the host's order; vhost-user is host-local).
 *
 * <pre>
 * header: u64 features | u16 version | u16 desc_num | u16 last_batch_head | u16 used_idx
 * entry:  u8 inflight | u8 padding[5] | u16 next | u64 counter
 * </pre>
 */
public final class InflightLayout {
    public static final int FEATURES = 0;
    public static final int VERSION = 8;
    public static final int DESC_NUM = 10;
    public static final int LAST_BATCH_HEAD = 12;
    public static final int USED_IDX = 14;
    public static final int HEADER_SIZE = 16;

    public static final int ENTRY_SIZE = 16;
    public static final int ENTRY_INFLIGHT = 0;
    public static final int ENTRY_NEXT = 6;
    public static final int ENTRY_COUNTER = 8;

    /** The one version the spec defines; 0 means a region nobody has initialised yet. */
    public static final int VERSION_1 = 1;
    /**
     * Queue regions are laid out back to back, each rounded up to 64 bytes: what libvhost-user and DPDK allocate
     * ({@code ALIGN_UP(16 * queue_size + header, 64)}), so a region one of them wrote reads the same here.
     */
    public static final int QUEUE_ALIGNMENT = 64;

    private InflightLayout() {
    }

    /** Bytes of one queue's region for a ring of {@code queueSize} descriptors. */
    public static long queueRegionSize(final int queueSize) {
        final long raw = HEADER_SIZE + (long) ENTRY_SIZE * queueSize;
        return (raw + QUEUE_ALIGNMENT - 1) & -QUEUE_ALIGNMENT;
    }

    /** Offset of descriptor {@code head}'s entry in a queue region. */
    public static long entry(final int head) {
        return HEADER_SIZE + (long) ENTRY_SIZE * head;
    }
}
