package io.lazyblk.tools.frontend;

/** virtio-blk constants (virtio spec 5.2) a driver needs: feature bits, request types, status, header layout. */
public final class VirtioBlk {
    // Feature bits.
    public static final int F_SIZE_MAX = 1;
    public static final int F_SEG_MAX = 2;
    public static final int F_GEOMETRY = 4;
    public static final int F_RO = 5;
    public static final int F_BLK_SIZE = 6;
    public static final int F_FLUSH = 9;
    public static final int F_TOPOLOGY = 10;
    public static final int F_CONFIG_WCE = 11;
    public static final int F_MQ = 12;
    public static final int F_DISCARD = 13;
    public static final int F_WRITE_ZEROES = 14;
    /** Every device-specific bit a driver may accept. */
    public static final long DEVICE_FEATURES = bits(F_SIZE_MAX, F_SEG_MAX, F_GEOMETRY, F_RO, F_BLK_SIZE, F_FLUSH,
        F_TOPOLOGY, F_CONFIG_WCE, F_MQ, F_DISCARD, F_WRITE_ZEROES);

    // Request types.
    public static final int T_IN = 0;
    public static final int T_OUT = 1;
    public static final int T_FLUSH = 4;
    public static final int T_GET_ID = 8;
    public static final int T_DISCARD = 11;
    public static final int T_WRITE_ZEROES = 13;

    // Status byte values.
    public static final int S_OK = 0;
    public static final int S_IOERR = 1;
    public static final int S_UNSUPP = 2;

    /** struct virtio_blk_outhdr: le32 type, le32 reserved, le64 sector. */
    public static final int HEADER_SIZE = 16;
    public static final int HEADER_TYPE = 0;
    public static final int HEADER_SECTOR = 8;
    /** struct virtio_blk_discard_write_zeroes: le64 sector, le32 num_sectors, le32 flags (bit 0 unmap). */
    public static final int SEGMENT_SIZE = 16;
    public static final int WRITE_ZEROES_FLAG_UNMAP = 1;
    public static final int ID_BYTES = 20;
    public static final int SECTOR_SIZE = 512;

    private VirtioBlk() {
    }

    public static long bits(final int... bits) {
        long v = 0;
        for (final int b : bits) {
            v |= 1L << b;
        }
        return v;
    }

    public static String statusName(final int status) {
        return switch (status) {
            case S_OK -> "OK";
            case S_IOERR -> "IOERR";
            case S_UNSUPP -> "UNSUPP";
            default -> "status " + status;
        };
    }
}
