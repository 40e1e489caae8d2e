package io.lazyblk.vhost.proto;

/** Constants of the vhost-user wire format and of the virtio features the transport itself negotiates. */
public final class Protocol {
    /** Header: request u32, flags u32, size u32 (all little endian). */
    public static final int HEADER_SIZE = 12;
    public static final int HDR_REQUEST = 0;
    public static final int HDR_FLAGS = 4;
    public static final int HDR_SIZE = 8;
    /**
     * Largest payload we accept: SET_MEM_TABLE with 8 regions is 8 + 8 * 32 = 264 bytes, a config message is
     * 12 + 256; anything longer is a broken or hostile front end.
     */
    public static final int MAX_PAYLOAD = 4096;

    public static final int VERSION = 0x1;
    public static final int VERSION_MASK = 0x3;
    public static final int FLAG_REPLY = 0x4;
    public static final int FLAG_NEED_REPLY = 0x8;

    // Protocol feature bits (GET/SET_PROTOCOL_FEATURES).
    public static final int PF_MQ = 0;
    public static final int PF_LOG_SHMFD = 1;
    public static final int PF_REPLY_ACK = 3;
    public static final int PF_CONFIG = 9;
    public static final int PF_INFLIGHT_SHMFD = 12;
    public static final int PF_RESET_DEVICE = 13;
    public static final int PF_CONFIGURE_MEM_SLOTS = 15;

    /** Virtio feature bit vhost-user borrows to say "protocol features are available". */
    public static final int F_PROTOCOL_FEATURES = 30;

    // Virtio transport features the virtqueue implementation supports.
    /** VHOST_F_LOG_ALL: the front end asks the device to log every guest page it writes (live migration). */
    public static final int F_LOG_ALL = 26;
    public static final int F_INDIRECT_DESC = 28;
    public static final int F_EVENT_IDX = 29;
    public static final int F_VERSION_1 = 32;

    /** Memory regions per SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS) and memory slots we offer. */
    public static final int MAX_REGIONS = 8;
    public static final int MAX_MEM_SLOTS = 32;
    /** struct vhost_user_memory_region: guest_phys_addr, memory_size, userspace_addr, mmap_offset. */
    public static final int REGION_SIZE = 32;

    /** SET_VRING_KICK/CALL/ERR payload: bits 0..7 queue index, bit 8 "no fd" (polling). */
    public static final long VRING_IDX_MASK = 0xff;
    public static final long VRING_NOFD_MASK = 0x100;

    /** SET_VRING_ADDR flags: VHOST_VRING_F_LOG, log the used ring's writes at the message's log address. */
    public static final int VRING_F_LOG = 1;
    /** SET_LOG_BASE payload (vhost-user "log description"): u64 mmap_size, u64 mmap_offset. */
    public static final int LOG_BASE_SIZE = 16;

    /** Largest config space a GET/SET_CONFIG may address (VHOST_USER_MAX_CONFIG_SIZE). */
    public static final int MAX_CONFIG_SIZE = 256;
    public static final int CONFIG_HEADER = 12;

    /**
     * GET/SET_INFLIGHT_FD payload, QEMU's {@code VhostUserInflight}: u64 mmap_size, u64 mmap_offset, u16 num_queues,
     * u16 queue_size, padded to 8 bytes (24).
     */
    public static final int INFLIGHT_SIZE = 24;
    public static final int INFLIGHT_MMAP_SIZE = 0;
    public static final int INFLIGHT_MMAP_OFFSET = 8;
    public static final int INFLIGHT_NUM_QUEUES = 16;
    public static final int INFLIGHT_QUEUE_SIZE = 18;

    private Protocol() {
    }

    public static boolean has(final long features, final int bit) {
        return (features & (1L << bit)) != 0;
    }
}
