package io.lazyblk.blk;

import io.lazyblk.vhost.ring.ChainError;
import io.lazyblk.vhost.ring.DescriptorChain;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static io.lazyblk.blk.GuestAccess.ALL;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * One virtio-blk request, preallocated and reused: the parsed header, the data buffers as a native iovec array,
 * and where the status byte goes. {@link #parse} validates everything the guest supplied; a request it refuses
 * carries its status and needs no I/O. Owned by one thread at a time: the queue agent parses it, one I/O handler
 * executes it, the queue agent completes it (hand-offs go through the Disruptor and a concurrent queue, which
 * order the accesses).
 */
public final class BlkRequest extends IoRequest {
    private static final ValueLayout.OfLong U64 = ValueLayout.JAVA_LONG_UNALIGNED;
    private static final ValueLayout.OfInt U32 = ValueLayout.JAVA_INT_UNALIGNED;

    final DescriptorChain chain;
    private final MemorySegment header;
    final BlkQueueHandler owner;

    /** Native address of the status byte, or -1 when the chain has no device-writable byte for it. */
    long statusAddr;
    byte status;
    int usedLen;
    /** When the queue took it off the ring (nanoTime, one reading per batch taken), for the latency histogram. */
    long takenNanos;

    BlkRequest(final BlkQueueHandler owner, final int maxBuffers, final Arena arena) {
        super(arena.allocate(16L * maxBuffers, 8));
        this.owner = owner;
        this.chain = new DescriptorChain(maxBuffers);
        this.header = arena.allocate(VirtioBlk.HEADER_BYTES, 8);
    }

    /**
     * Validates the chain as a virtio-blk request.
     *
     * @return true if the request needs the backend; false if it is finished already ({@link #status} set)
     */
    boolean parse(final int chainError, final BlkDeviceConfig cfg) {
        statusAddr = -1;
        usedLen = 0;
        iovCount = 0;
        dataBytes = 0;
        type = -1;
        if (chainError != ChainError.OK) {
            if (chainError == ChainError.TOO_MANY_BUFFERS && chain.writableBytes > 0) {
                // Every buffer was checked, only their number is beyond seg_max: the last byte is a sound status byte.
                statusAddr = chain.lastAddress + chain.lastLength - 1;
            }
            return finish(VirtioBlk.S_IOERR); // otherwise no trustworthy place for a status byte: used length 0
        }
        final DescriptorChain c = chain;
        if (c.writableBytes < 1) {
            return finish(VirtioBlk.S_IOERR); // the status byte must be device-writable
        }
        final int last = c.count - 1;
        statusAddr = c.address[last] + c.length[last] - 1;
        if (c.readableBytes < VirtioBlk.HEADER_BYTES) {
            return finish(VirtioBlk.S_IOERR);
        }
        gather(header, VirtioBlk.HEADER_BYTES);
        type = header.get(U32, 0);
        final long sector = header.get(U64, 8);
        switch (type) {
            case VirtioBlk.T_IN, VirtioBlk.T_OUT -> {
                final boolean in = type == VirtioBlk.T_IN;
                if (!in && cfg.readOnly) {
                    return finish(VirtioBlk.S_IOERR);
                }
                // A read's data must be device-writable and a write's device-readable. Data marked the other way is
                // not transferred; answering OK for the rest would tell the guest that bytes it never got were read.
                if (in ? c.readableBytes != VirtioBlk.HEADER_BYTES : c.writableBytes != 1) {
                    return finish(VirtioBlk.S_IOERR);
                }
                final long bytes = in ? c.writableBytes - 1 : c.readableBytes - VirtioBlk.HEADER_BYTES;
                if (!inRange(sector, bytes, cfg) || bytes % VirtioBlk.SECTOR != 0) {
                    return finish(VirtioBlk.S_IOERR);
                }
                offset = sector * VirtioBlk.SECTOR;
                dataBytes = bytes;
                if (in) {
                    buildIov(c.readable, c.count, 0, 1);
                    usedLen = (int) (bytes + 1);
                } else {
                    buildIov(0, c.readable, VirtioBlk.HEADER_BYTES, 0);
                    usedLen = 1;
                }
                return bytes > 0 || finish(VirtioBlk.S_OK);
            }
            case VirtioBlk.T_FLUSH -> {
                usedLen = 1;
                return true;
            }
            case VirtioBlk.T_GET_ID -> {
                final long room = c.writableBytes - 1;
                final int n = (int) Math.min(room, VirtioBlk.ID_BYTES);
                writeWritable(cfg.serial, n);
                usedLen = n + 1;
                return finish(VirtioBlk.S_OK);
            }
            case VirtioBlk.T_DISCARD, VirtioBlk.T_WRITE_ZEROES -> {
                return parseDiscardWriteZeroes(cfg);
            }
            default -> {
                usedLen = 1;
                return finish(VirtioBlk.S_UNSUPP);
            }
        }
    }

    private boolean parseDiscardWriteZeroes(final BlkDeviceConfig cfg) {
        usedLen = 1;
        final boolean discard = type == VirtioBlk.T_DISCARD;
        if (!(discard ? cfg.discard : cfg.writeZeroes)) {
            return finish(VirtioBlk.S_UNSUPP);
        }
        if (cfg.readOnly) {
            return finish(VirtioBlk.S_IOERR);
        }
        final long payload = chain.readableBytes - VirtioBlk.HEADER_BYTES;
        if (payload != VirtioBlk.DWZ_SEGMENT_BYTES) {
            return finish(VirtioBlk.S_UNSUPP); // we offer max_discard_seg = max_write_zeroes_seg = 1
        }
        // Copy the segment out of guest memory (reusing the header scratch) before checking it.
        gatherFrom(VirtioBlk.HEADER_BYTES, header, VirtioBlk.DWZ_SEGMENT_BYTES);
        final long sector = header.get(U64, 0);
        final long sectors = Integer.toUnsignedLong(header.get(U32, 8));
        final int flags = header.get(U32, 12);
        final long max = discard ? cfg.maxDiscardSectors : cfg.maxWriteZeroesSectors;
        if (discard ? flags != 0 : (flags & ~VirtioBlk.DWZ_F_UNMAP) != 0) {
            return finish(VirtioBlk.S_UNSUPP);
        }
        if (sectors > max || !inRange(sector, sectors * VirtioBlk.SECTOR, cfg)) {
            return finish(VirtioBlk.S_IOERR);
        }
        dwzOffset = sector * VirtioBlk.SECTOR;
        dwzLength = sectors * VirtioBlk.SECTOR;
        dwzUnmap = (flags & VirtioBlk.DWZ_F_UNMAP) != 0;
        return dwzLength > 0 || finish(VirtioBlk.S_OK);
    }

    private static boolean inRange(final long sector, final long bytes, final BlkDeviceConfig cfg) {
        final long capSectors = cfg.capacityBytes / VirtioBlk.SECTOR;
        // Unsigned: a hostile sector near 2^64 must not wrap into range.
        return Long.compareUnsigned(sector, capSectors) <= 0 && bytes >= 0
            && bytes <= (capSectors - sector) * VirtioBlk.SECTOR;
    }

    private boolean finish(final byte s) {
        status = s;
        if (s != VirtioBlk.S_OK && statusAddr >= 0) {
            // The status byte is the chain's last writable byte. A used length short of it tells a driver that
            // follows virtio 1.2 §2.7.8.2 ("no assumptions about data beyond the first len bytes") that no status
            // was written; report the whole writable part, as QEMU does.
            usedLen = (int) Math.min(chain.writableBytes, Integer.MAX_VALUE);
        }
        return false;
    }

    /** Builds the iovec over buffers {@code [from, to)}, skipping {@code skip} leading and {@code trim} trailing bytes. */
    private void buildIov(final int from, final int to, final long skip, final long trim) {
        long toSkip = skip;
        int n = 0;
        for (int i = from; i < to; i++) {
            long addr = chain.address[i];
            long len = chain.length[i];
            if (toSkip > 0) {
                final long s = Math.min(toSkip, len);
                addr += s;
                len -= s;
                toSkip -= s;
            }
            if (i == to - 1) {
                len -= trim;
            }
            if (len > 0) {
                iov.set(JAVA_LONG, 16L * n, addr);
                iov.set(JAVA_LONG, 16L * n + 8, len);
                n++;
            }
        }
        iovCount = n;
    }

    /** Copies the first {@code n} readable bytes of the chain into {@code dst}. */
    private void gather(final MemorySegment dst, final int n) {
        gatherFrom(0, dst, n);
    }

    private void gatherFrom(final long start, final MemorySegment dst, final int n) {
        long skip = start;
        int done = 0;
        for (int i = 0; i < chain.readable && done < n; i++) {
            final long len = chain.length[i];
            if (skip >= len) {
                skip -= len;
                continue;
            }
            final int take = (int) Math.min(len - skip, n - done);
            MemorySegment.copy(ALL, chain.address[i] + skip, dst, done, take);
            done += take;
            skip = 0;
        }
    }

    /** Writes {@code n} bytes of {@code src} to the start of the writable buffers (never over the status byte). */
    private void writeWritable(final byte[] src, final int n) {
        int done = 0;
        for (int i = chain.readable; i < chain.count && done < n; i++) {
            final int take = Math.min(chain.length[i], n - done);
            MemorySegment.copy(src, done, ALL, ValueLayout.JAVA_BYTE, chain.address[i], take);
            done += take;
        }
    }

    @Override
    protected boolean enter() {
        return owner.enter();
    }

    @Override
    protected void exit() {
        owner.exit();
    }

    /** A parked read finished (data in guest memory): status byte, then the used ring, from this thread. */
    @Override
    protected void completeParked(final byte s) {
        status = s;
        writeStatus();
        owner.complete(this);
    }

    /** Writes the status byte (if the chain has a place for it). */
    void writeStatus() {
        if (statusAddr >= 0) {
            ALL.set(ValueLayout.JAVA_BYTE, statusAddr, status);
        }
    }
}
