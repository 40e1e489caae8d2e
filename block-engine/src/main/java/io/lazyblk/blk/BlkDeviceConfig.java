package io.lazyblk.blk;

import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED;

/**
 * The virtio-blk device's fixed geometry and limits, and its one mutable setting, the write cache mode.
 * Immutable apart from {@link #writeback}, which the control thread writes and I/O threads read (volatile).
 */
public final class BlkDeviceConfig {
    /** Data buffers per request we accept: QEMU's default queue size (128) less header and status. */
    public static final int SEG_MAX = 126;
    /** Largest single data buffer the driver should use (size_max); Linux caps its segments to this. */
    public static final int SIZE_MAX = 1 << 20;
    /** DISCARD / WRITE_ZEROES limit per request: 2 GiB, keeps one fallocate call bounded. */
    public static final int MAX_DWZ_SECTORS = 1 << 22;
    /** Physical block 4 KiB (2^3 logical blocks): steers the guest to page-aligned I/O, which the page map wants. */
    public static final int PHYS_BLOCK_EXP = 3;

    final long capacityBytes;
    final boolean readOnly;
    final boolean discard;
    final boolean writeZeroes;
    final long maxDiscardSectors = MAX_DWZ_SECTORS;
    final long maxWriteZeroesSectors = MAX_DWZ_SECTORS;
    final int numQueues;
    final byte[] serial = new byte[VirtioBlk.ID_BYTES];
    /** Guest-visible cache mode: true = writeback (FLUSH makes writes durable), false = each write durable at once. */
    volatile boolean writeback = true;
    /** A live migration's export, told of every range the guest changes; null when none runs. */
    volatile WriteWatch watch;
    /**
     * Whether requests are timed for the latency histogram (two clock readings per batch, about 6 % at QD1 here):
     * only while someone scrapes metrics. Read once per batch by the queue's thread.
     */
    volatile boolean timed;
    /** Whether the driver acked FLUSH; without it the device must be write-through. */
    volatile boolean flushAcked;

    public BlkDeviceConfig(final long capacityBytes, final boolean readOnly, final int numQueues, final String serial) {
        this.capacityBytes = capacityBytes;
        this.readOnly = readOnly;
        this.discard = !readOnly;
        this.writeZeroes = !readOnly;
        this.numQueues = numQueues;
        final byte[] s = serial.getBytes(StandardCharsets.US_ASCII);
        System.arraycopy(s, 0, this.serial, 0, Math.min(s.length, this.serial.length));
    }

    /** True when every acknowledged write must already be durable (no volatile cache from the guest's view). */
    boolean writeThrough() {
        return !writeback || !flushAcked;
    }

    public long features() {
        long f = (1L << VirtioBlk.F_SIZE_MAX) | (1L << VirtioBlk.F_SEG_MAX) | (1L << VirtioBlk.F_BLK_SIZE)
            | (1L << VirtioBlk.F_FLUSH) | (1L << VirtioBlk.F_TOPOLOGY) | (1L << VirtioBlk.F_CONFIG_WCE) | (1L << VirtioBlk.F_MQ);
        if (readOnly) {
            f |= 1L << VirtioBlk.F_RO;
        }
        if (discard) {
            f |= 1L << VirtioBlk.F_DISCARD;
        }
        if (writeZeroes) {
            f |= 1L << VirtioBlk.F_WRITE_ZEROES;
        }
        return f;
    }

    /** Renders struct virtio_blk_config. */
    void render(final MemorySegment cfg) {
        cfg.fill((byte) 0);
        cfg.set(JAVA_LONG_UNALIGNED, VirtioBlk.CFG_CAPACITY, capacityBytes / VirtioBlk.SECTOR);
        cfg.set(JAVA_INT_UNALIGNED, VirtioBlk.CFG_SIZE_MAX, SIZE_MAX);
        cfg.set(JAVA_INT_UNALIGNED, VirtioBlk.CFG_SEG_MAX, SEG_MAX);
        cfg.set(JAVA_INT_UNALIGNED, VirtioBlk.CFG_BLK_SIZE, VirtioBlk.SECTOR);
        cfg.set(JAVA_BYTE, VirtioBlk.CFG_PHYS_BLOCK_EXP, (byte) PHYS_BLOCK_EXP);
        cfg.set(JAVA_SHORT_UNALIGNED, VirtioBlk.CFG_MIN_IO_SIZE, (short) (1 << PHYS_BLOCK_EXP));
        cfg.set(JAVA_BYTE, VirtioBlk.CFG_WRITEBACK, (byte) (writeback ? 1 : 0));
        cfg.set(JAVA_SHORT_UNALIGNED, VirtioBlk.CFG_NUM_QUEUES, (short) numQueues);
        if (discard) {
            cfg.set(JAVA_INT_UNALIGNED, VirtioBlk.CFG_MAX_DISCARD_SECTORS, (int) maxDiscardSectors);
            cfg.set(JAVA_INT_UNALIGNED, VirtioBlk.CFG_MAX_DISCARD_SEG, 1);
            cfg.set(JAVA_INT_UNALIGNED, VirtioBlk.CFG_DISCARD_ALIGNMENT, 1 << PHYS_BLOCK_EXP);
        }
        if (writeZeroes) {
            cfg.set(JAVA_INT_UNALIGNED, VirtioBlk.CFG_MAX_WRITE_ZEROES_SECTORS, (int) maxWriteZeroesSectors);
            cfg.set(JAVA_INT_UNALIGNED, VirtioBlk.CFG_MAX_WRITE_ZEROES_SEG, 1);
            cfg.set(JAVA_BYTE, VirtioBlk.CFG_WRITE_ZEROES_MAY_UNMAP, (byte) 1);
        }
    }
}
