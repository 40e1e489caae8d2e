package io.lazyblk.tools.frontend;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * The virtio-blk config space (struct virtio_blk_config, the 60-byte layout QEMU 7.2 reads) as GET_CONFIG
 * returned it. Fields whose feature bit was not negotiated hold whatever the device put there. Immutable.
 */
public record BlkConfig(long capacity, int sizeMax, int segMax, int blkSize, int physicalBlockExp,
                        int alignmentOffset, int minIoSize, int optIoSize, int wce, int numQueues,
                        int maxDiscardSectors, int maxDiscardSeg, int discardSectorAlignment,
                        int maxWriteZeroesSectors, int maxWriteZeroesSeg, int writeZeroesMayUnmap) {
    /** Bytes of config space QEMU 7.2's vhost-user-blk reads. */
    public static final int SIZE = 60;

    public static BlkConfig parse(final byte[] config) {
        if (config.length < SIZE) {
            throw new IllegalArgumentException("virtio-blk config of " + config.length + " bytes, need " + SIZE);
        }
        final ByteBuffer b = ByteBuffer.wrap(config).order(ByteOrder.LITTLE_ENDIAN);
        return new BlkConfig(b.getLong(0), b.getInt(8), b.getInt(12), b.getInt(20), b.get(24) & 0xff,
            b.get(25) & 0xff, b.getShort(26) & 0xffff, b.getInt(28), b.get(32) & 0xff, b.getShort(34) & 0xffff,
            b.getInt(36), b.getInt(40), b.getInt(44), b.getInt(48), b.getInt(52), b.get(56) & 0xff);
    }

    /** Disk size in bytes (capacity is in 512-byte sectors whatever blk_size says). */
    public long bytes() {
        return capacity * VirtioBlk.SECTOR_SIZE;
    }
}
