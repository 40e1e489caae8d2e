package io.lazyblk.blk;

import com.code_intelligence.jazzer.junit.FuzzTest;
import io.lazyblk.sys.LibC;
import io.lazyblk.sys.NativeException;
import io.lazyblk.sys.fuzz.FuzzBytes;
import io.lazyblk.vhost.mem.GuestMemory;
import io.lazyblk.vhost.mem.MemoryRegion;
import io.lazyblk.vhost.ring.ChainError;
import io.lazyblk.vhost.ring.DescriptorChain;
import io.lazyblk.vhost.ring.SplitVirtqueue;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * A virtio-blk request as a hostile guest builds it: the chain walk (SplitVirtqueue.readChain) then BlkRequest.parse.
 *
 * <p>Input: a config byte (read-only, the disk's capacity kind, the request's buffer capacity), the chain (up to 16
 * descriptors, each an offset into the data area, a length kind and value, and whether it is device-writable;
 * linked in order), then bytes copied into the data area (headers, DISCARD segments). Properties: parse never
 * throws and never writes guest memory outside the chain's device-writable buffers (nor the status byte: that is
 * writeStatus's, unless the guest overlapped another buffer with it); a request it sends to the backend stays within
 * the disk and whole sectors, its iovec covers exactly its data in buffers of the right direction and not the status
 * byte (again unless the guest overlapped them); a read-only disk gets no write; a
 * refused request has a known status and a used length the chain can hold.
 */
class BlkRequestFuzzTest {
    private static final long REGION = 128 << 10;
    private static final long UVA = 0x7f00_0000_0000L;
    private static final long DESC = 0x0;
    private static final long AVAIL = 0x1000;
    private static final long USED = 0x2000;
    private static final long DATA = 0x4000;
    private static final int QUEUE = 16;
    private static final long[] CAPACITY = {512, 1 << 20, 1L << 40, (Long.MAX_VALUE / 512) * 512};

    private static final MemoryRegion R;
    private static final GuestMemory MEMORY;
    private static final Arena ARENA = Arena.ofShared();
    private static final byte[] BEFORE = new byte[(int) REGION];
    /** One request per buffer capacity 1..8, reused: parse resets what it sets, and an arena never frees. */
    private static final BlkRequest[] REQUESTS = new BlkRequest[8];

    static {
        for (int i = 0; i < REQUESTS.length; i++) {
            REQUESTS[i] = new BlkRequest(null, i + 1, ARENA);
        }
    }

    static {
        try {
            final int fd = LibC.memfdCreate("fuzz-blk-guest");
            LibC.ftruncate(fd, REGION);
            R = MemoryRegion.map(fd, 0, REGION, UVA, 0);
            MEMORY = GuestMemory.of(List.of(R));
        } catch (final NativeException e) {
            throw new IllegalStateException(e);
        }
    }

    @FuzzTest
    void parse(final byte[] input) {
        final FuzzBytes in = new FuzzBytes(input);
        final int cfgByte = in.u8();
        final boolean readOnly = (cfgByte & 1) != 0;
        final long capacity = CAPACITY[(cfgByte >>> 1) & 3];
        final BlkDeviceConfig cfg = new BlkDeviceConfig(capacity, readOnly, 1, "fuzz-serial-0123456789");
        final BlkRequest req = REQUESTS[(cfgByte >>> 3) & 7];
        final MemorySegment g = R.segment;
        g.fill((byte) 0);

        final int n = in.pick(17);
        for (int i = 0; i < n; i++) {
            final long at = DESC + 16L * i;
            final long addr = (in.u16() % (REGION - DATA)) + DATA;
            final int len = switch (in.pick(6)) {
                case 0 -> 16;
                case 1 -> 1;
                case 2 -> 512 * in.pick(9);
                case 3 -> in.u16();
                case 4 -> 17 + in.pick(16); // header plus a little, DISCARD segments
                default -> in.u32();
            };
            final boolean writable = in.bool();
            g.set(JAVA_LONG_UNALIGNED, at, addr);
            g.set(JAVA_INT_UNALIGNED, at + 8, len);
            g.set(JAVA_SHORT_UNALIGNED, at + 12, (short) ((i + 1 < n ? 1 : 0) | (writable ? 2 : 0)));
            g.set(JAVA_SHORT_UNALIGNED, at + 14, (short) (i + 1));
        }
        final byte[] content = in.rest();
        MemorySegment.copy(content, 0, g, JAVA_BYTE, DATA, (int) Math.min(content.length, REGION - DATA));

        final SplitVirtqueue q = new SplitVirtqueue(0);
        q.configure(QUEUE, false, true);
        assertEquals(null, q.setAddresses(MEMORY, UVA + DESC, UVA + AVAIL, UVA + USED));
        final int err = q.readChain(0, req.chain);

        MemorySegment.copy(g, JAVA_BYTE, 0, BEFORE, 0, BEFORE.length);
        final boolean needsBackend = req.parse(err, cfg);
        final DescriptorChain c = req.chain;
        final boolean chainSound = err == ChainError.OK;
        checkWrites(c, chainSound, req.statusAddr, false);
        if (needsBackend) {
            assertTrue(chainSound, "a request from a refused chain goes to the backend");
            checkAccepted(req, cfg, c);
        } else {
            assertTrue(req.status == VirtioBlk.S_OK || req.status == VirtioBlk.S_IOERR || req.status == VirtioBlk.S_UNSUPP,
                "status " + req.status);
            assertTrue(req.usedLen >= 0 && req.usedLen <= Math.max(0, Math.min(c.writableBytes, Integer.MAX_VALUE)),
                "used length " + req.usedLen + " for " + c.writableBytes + " writable bytes");
        }
        if (req.statusAddr != -1) {
            assertTrue(req.statusAddr >= R.base && req.statusAddr < R.base + REGION, "status byte outside guest memory");
            assertEquals(c.lastAddress + c.lastLength - 1, req.statusAddr, "status byte not the chain's last byte");
            assertTrue(c.writableBytes > 0, "a status byte in a chain with no writable byte");
        }
        MemorySegment.copy(g, JAVA_BYTE, 0, BEFORE, 0, BEFORE.length);
        req.writeStatus();
        checkWrites(c, chainSound, req.statusAddr, true);
    }

    private static void checkAccepted(final BlkRequest req, final BlkDeviceConfig cfg, final DescriptorChain c) {
        switch (req.type) {
            case VirtioBlk.T_IN, VirtioBlk.T_OUT -> {
                final boolean read = req.type == VirtioBlk.T_IN;
                assertTrue(read || !cfg.readOnly, "a write to a read-only disk goes to the backend");
                assertTrue(req.dataBytes > 0 && req.dataBytes % 512 == 0 && req.offset % 512 == 0 && req.offset >= 0,
                    "offset " + req.offset + ", " + req.dataBytes + " bytes");
                assertTrue(req.dataBytes <= cfg.capacityBytes - req.offset, "past the end of the disk");
                long total = 0;
                for (int i = 0; i < req.iovCount; i++) {
                    final long a = req.iov.get(JAVA_LONG, 16L * i);
                    final long len = req.iov.get(JAVA_LONG, 16L * i + 8);
                    assertTrue(len > 0, "empty iovec entry");
                    assertTrue(inBuffer(c, a, len, read), "iovec entry " + i + " is not inside a " + (read ? "writable" : "readable")
                        + " buffer of the chain");
                    assertTrue(!read || req.statusAddr < a || req.statusAddr >= a + len || inOtherBuffer(c, req.statusAddr),
                        "a read's data covers its status byte");
                    total += len;
                }
                assertEquals(req.dataBytes, total, "the iovec does not cover exactly the data");
                assertEquals(read ? req.dataBytes + 1 : 1, req.usedLen);
            }
            case VirtioBlk.T_FLUSH -> assertEquals(1, req.usedLen);
            case VirtioBlk.T_DISCARD, VirtioBlk.T_WRITE_ZEROES -> {
                assertTrue(!cfg.readOnly, "discard or write-zeroes on a read-only disk goes to the backend");
                assertTrue(req.dwzLength > 0 && req.dwzLength % 512 == 0 && req.dwzOffset % 512 == 0 && req.dwzOffset >= 0
                    && req.dwzLength <= (long) BlkDeviceConfig.MAX_DWZ_SECTORS * 512 && req.dwzLength <= cfg.capacityBytes - req.dwzOffset,
                    "segment at " + req.dwzOffset + " of " + req.dwzLength + " bytes");
            }
            default -> fail("request type " + req.type + " goes to the backend");
        }
    }

    /**
     * True if {@code addr} (the status byte) also lies in a buffer before the chain's last: a guest may overlap its
     * buffers, and then data written there lands on the status byte's address legitimately (the status comes last).
     */
    private static boolean inOtherBuffer(final DescriptorChain c, final long addr) {
        for (int i = 0; i < c.count - 1; i++) {
            if (addr >= c.address[i] && addr - c.address[i] < Integer.toUnsignedLong(c.length[i])) {
                return true;
            }
        }
        return false;
    }

    /** True if {@code [a, a+len)} lies in one chain buffer of the given direction. */
    private static boolean inBuffer(final DescriptorChain c, final long a, final long len, final boolean writable) {
        for (int i = writable ? c.readable : 0; i < (writable ? c.count : c.readable); i++) {
            final long b = c.address[i];
            if (a >= b && a + len <= b + Integer.toUnsignedLong(c.length[i])) {
                return true;
            }
        }
        return false;
    }

    /**
     * Compares guest memory with {@link #BEFORE}: parse may write only into the chain's writable buffers, and not the
     * status byte; writeStatus only the status byte.
     */
    private static void checkWrites(final DescriptorChain c, final boolean chainSound, final long statusAddr, final boolean statusOnly) {
        final MemorySegment g = R.segment;
        final MemorySegment before = MemorySegment.ofArray(BEFORE);
        long from = 0;
        long rel;
        while (from < REGION && (rel = MemorySegment.mismatch(g, from, REGION, before, from, REGION)) >= 0) {
            final long b = from + rel; // mismatch gives the offset from `from`
            final long addr = R.base + b;
            if (statusOnly) {
                assertEquals(statusAddr, addr, "writeStatus wrote guest byte 0x" + Long.toHexString(b) + ", not the status byte");
            } else {
                assertTrue(chainSound && (addr != statusAddr || inOtherBuffer(c, addr)) && inBuffer(c, addr, 1, true),
                    "parse wrote guest byte 0x" + Long.toHexString(b) + ", outside the chain's writable buffers or on the status byte");
            }
            from = b + 1;
        }
    }

    /** Writes the seed corpus into directory {@code args[0]} (tools/fuzz blk-request --write-seeds). */
    public static void main(final String[] args) throws IOException {
        final Path dir = Path.of(args[0]);
        Files.createDirectories(dir);
        // cfg: writable, 1 MiB disk (kind 1 << 1), 8 buffers (7 << 3). Chains over offsets of the data area.
        final int cfg = (1 << 1) | (7 << 3);
        // A 4 KiB read of sector 8: header at +0 (16, readable), data at +0x1000 (8 x 512, writable), status at +0x3000.
        Files.write(dir.resolve("read"), new FuzzBytes.Writer().u8(cfg).u8(3)
            .u16(0).u8(0).u8(0).u16(0x1000).u8(2).u8(8).u8(1).u16(0x3000).u8(1).u8(1)
            .u32(VirtioBlk.T_IN).u32(0).u64(8).toByteArray());
        // A 1 KiB write of sector 0: header and data in one readable buffer (16 + 1024 = u16 length), status.
        Files.write(dir.resolve("write"), new FuzzBytes.Writer().u8(cfg).u8(2)
            .u16(0).u8(3).u16(16 + 1024).u8(0).u16(0x3000).u8(1).u8(1)
            .u32(VirtioBlk.T_OUT).u32(0).u64(0).toByteArray());
        Files.write(dir.resolve("write-read-only"), new FuzzBytes.Writer().u8(cfg | 1).u8(2)
            .u16(0).u8(3).u16(16 + 512).u8(0).u16(0x3000).u8(1).u8(1)
            .u32(VirtioBlk.T_OUT).u32(0).u64(0).toByteArray());
        Files.write(dir.resolve("flush"), new FuzzBytes.Writer().u8(cfg).u8(2)
            .u16(0).u8(0).u8(0).u16(0x3000).u8(1).u8(1).u32(VirtioBlk.T_FLUSH).u32(0).u64(0).toByteArray());
        // GET_ID into a 20-byte buffer and the status byte.
        Files.write(dir.resolve("get-id"), new FuzzBytes.Writer().u8(cfg).u8(3)
            .u16(0).u8(0).u8(0).u16(0x1000).u8(4).u8(3).u8(1).u16(0x3000).u8(1).u8(1)
            .u32(VirtioBlk.T_GET_ID).u32(0).u64(0).toByteArray());
        // DISCARD: header + 16-byte segment (32 readable = 17 + 15), status. Segment: sector 8, 16 sectors, flags 0.
        Files.write(dir.resolve("discard"), new FuzzBytes.Writer().u8(cfg).u8(2)
            .u16(0).u8(4).u8(15).u8(0).u16(0x3000).u8(1).u8(1)
            .u32(VirtioBlk.T_DISCARD).u32(0).u64(0).u64(8).u32(16).u32(0).toByteArray());
        Files.write(dir.resolve("write-zeroes-unmap"), new FuzzBytes.Writer().u8(cfg).u8(2)
            .u16(0).u8(4).u8(15).u8(0).u16(0x3000).u8(1).u8(1)
            .u32(VirtioBlk.T_WRITE_ZEROES).u32(0).u64(0).u64(2040).u32(8).u32(1).toByteArray());
        // A read past the end of a 512-byte disk (kind 0), and one with more buffers than the request holds (1).
        Files.write(dir.resolve("read-past-end"), new FuzzBytes.Writer().u8(7 << 3).u8(3)
            .u16(0).u8(0).u8(0).u16(0x1000).u8(2).u8(2).u8(1).u16(0x3000).u8(1).u8(1)
            .u32(VirtioBlk.T_IN).u32(0).u64(0).toByteArray());
        Files.write(dir.resolve("too-many-buffers"), new FuzzBytes.Writer().u8(1 << 1).u8(4)
            .u16(0).u8(0).u8(0).u16(0x1000).u8(2).u8(1).u8(1).u16(0x2000).u8(2).u8(1).u8(1).u16(0x3000).u8(1).u8(1)
            .u32(VirtioBlk.T_IN).u32(0).u64(0).toByteArray());
    }
}
