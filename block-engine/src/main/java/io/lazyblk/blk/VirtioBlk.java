package io.lazyblk.blk;

/** virtio-blk constants (virtio 1.2 §5.2): feature bits, request types, status codes, config-space offsets. */
public final class VirtioBlk {
    public static final int F_SIZE_MAX = 1;
    public static final int F_SEG_MAX = 2;
    public static final int F_RO = 5;
    public static final int F_BLK_SIZE = 6;
    public static final int F_FLUSH = 9;
    public static final int F_TOPOLOGY = 10;
    public static final int F_CONFIG_WCE = 11;
    public static final int F_MQ = 12;
    public static final int F_DISCARD = 13;
    public static final int F_WRITE_ZEROES = 14;

    public static final int T_IN = 0;
    public static final int T_OUT = 1;
    public static final int T_FLUSH = 4;
    public static final int T_GET_ID = 8;
    public static final int T_DISCARD = 11;
    public static final int T_WRITE_ZEROES = 13;

    public static final byte S_OK = 0;
    public static final byte S_IOERR = 1;
    public static final byte S_UNSUPP = 2;

    public static final int SECTOR = 512;
    public static final int HEADER_BYTES = 16;
    public static final int ID_BYTES = 20;
    /** struct virtio_blk_discard_write_zeroes: sector u64, num_sectors u32, flags u32. */
    public static final int DWZ_SEGMENT_BYTES = 16;
    public static final int DWZ_F_UNMAP = 1;

    // struct virtio_blk_config offsets.
    public static final int CFG_CAPACITY = 0;
    public static final int CFG_SIZE_MAX = 8;
    public static final int CFG_SEG_MAX = 12;
    public static final int CFG_BLK_SIZE = 20;
    public static final int CFG_PHYS_BLOCK_EXP = 24;
    public static final int CFG_ALIGNMENT_OFFSET = 25;
    public static final int CFG_MIN_IO_SIZE = 26;
    public static final int CFG_OPT_IO_SIZE = 28;
    public static final int CFG_WRITEBACK = 32;
    public static final int CFG_NUM_QUEUES = 34;
    public static final int CFG_MAX_DISCARD_SECTORS = 36;
    public static final int CFG_MAX_DISCARD_SEG = 40;
    public static final int CFG_DISCARD_ALIGNMENT = 44;
    public static final int CFG_MAX_WRITE_ZEROES_SECTORS = 48;
    public static final int CFG_MAX_WRITE_ZEROES_SEG = 52;
    public static final int CFG_WRITE_ZEROES_MAY_UNMAP = 56;
    /** Config bytes through write_zeroes_may_unmap and its padding (what QEMU 7.2 reads). */
    public static final int CONFIG_SIZE = 60;

    private VirtioBlk() {
    }
}
