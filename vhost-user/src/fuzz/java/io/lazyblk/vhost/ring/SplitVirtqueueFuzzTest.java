package io.lazyblk.vhost.ring;

import com.code_intelligence.jazzer.junit.FuzzTest;
import io.lazyblk.sys.LibC;
import io.lazyblk.sys.NativeException;
import io.lazyblk.sys.fuzz.FuzzBytes;
import io.lazyblk.vhost.mem.GuestMemory;
import io.lazyblk.vhost.mem.MemoryRegion;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The descriptor-chain walk (SplitVirtqueue.readChain, with pending and pop) over guest memory a hostile driver filled.
 *
 * <p>Guest memory is two adjacent memfd regions (a buffer across their border is in no one region). Input: a config
 * byte (queue size 2^0..2^10, EVENT_IDX, INDIRECT_DESC), the chain capacity, the avail index and the head it names,
 * then descriptors for the table and for an indirect table area, each as an address kind and value, a length kind
 * and value, flags and next. Properties: the walk ends, never throws, returns a known code; a chain it accepts (or
 * finds sound but too long) lies in guest memory buffer by buffer, fits its capacity, and its byte counts add up;
 * pending() never reports more than the queue size. The old random test's edge biases became the address kinds.
 */
class SplitVirtqueueFuzzTest {
    static final long R0_SIZE = 256 << 10;
    static final long R1_SIZE = 64 << 10;
    static final long R0_UVA = 0x7f00_0000_0000L;
    static final long R1_UVA = 0x7f10_0000_0000L;
    static final long DESC = 0x0;
    static final long AVAIL = 0x4000;
    static final long USED = 0x5000;
    static final long INDIRECT = 0x8000;
    static final int INDIRECT_ENTRIES = 64;
    static final long DATA = 0x10000;

    private static final MemoryRegion R0;
    private static final MemoryRegion R1;
    private static final GuestMemory MEMORY;

    static {
        try {
            R0 = region(0, R0_SIZE, R0_UVA);
            R1 = region(R0_SIZE, R1_SIZE, R1_UVA); // adjacent in guest physical space
            MEMORY = GuestMemory.of(List.of(R0, R1));
        } catch (final NativeException e) {
            throw new IllegalStateException(e);
        }
    }

    private static MemoryRegion region(final long gpa, final long size, final long uva) throws NativeException {
        final int fd = LibC.memfdCreate("fuzz-guest");
        LibC.ftruncate(fd, size);
        return MemoryRegion.map(fd, gpa, size, uva, 0);
    }

    @FuzzTest
    void readChain(final byte[] input) {
        final FuzzBytes in = new FuzzBytes(input);
        final int cfg = in.u8();
        final int size = 1 << (cfg % 11);
        final SplitVirtqueue q = new SplitVirtqueue(0);
        q.configure(size, (cfg & 0x10) != 0, (cfg & 0x20) != 0);
        final String err = q.setAddresses(MEMORY, R0_UVA + DESC, R0_UVA + AVAIL, R0_UVA + USED);
        assertEquals(null, err);
        final DescriptorChain chain = new DescriptorChain(1 + in.pick(16));
        final int base = in.u16();
        final int availIdx = in.u16();
        final int head = in.u16();
        final MemorySegment g = R0.segment;
        g.asSlice(0, DATA).fill((byte) 0);
        q.setBase(base);
        g.set(JAVA_SHORT_UNALIGNED, AVAIL + 2, (short) availIdx);
        g.set(JAVA_SHORT_UNALIGNED, AVAIL + 4 + 2L * (base & (size - 1)), (short) head);
        final int tableEntries = Math.min(size, in.u8());
        for (int i = 0; i < tableEntries; i++) {
            descriptor(in, g, DESC + 16L * i);
        }
        final int indirectEntries = in.pick(INDIRECT_ENTRIES + 1);
        for (int i = 0; i < indirectEntries; i++) {
            descriptor(in, g, INDIRECT + 16L * i);
        }

        final int pending = q.pending();
        assertTrue(pending >= 0 && pending <= size, "pending " + pending + " on a queue of " + size);
        assertEquals(((availIdx - base) & 0xffff) > size, q.isBroken(), "broken iff the avail index runs ahead of the ring");
        if (pending > 0) {
            final int popped = q.pop();
            assertEquals(head, popped);
            check(q.readChain(popped, chain), chain);
            q.pushUsed(popped, 1);
            q.publishUsed(); // no call fd: reads avail flags / used_event, signals nothing
            q.enableNotifications();
            q.disableNotifications();
        } else {
            check(q.readChain(head, chain), chain);
        }
    }

    /** Writes one descriptor at {@code at}: address and length by kind (the edges a hostile driver picks), flags, next. */
    private static void descriptor(final FuzzBytes in, final MemorySegment g, final long at) {
        final long addr = switch (in.pick(7)) {
            case 0 -> in.u64();
            case 1 -> DATA + Integer.toUnsignedLong(in.u32()) % (R0_SIZE - DATA); // inside region 0
            case 2 -> R0_SIZE - 1 - in.u8(); // straddles into region 1, or ends at the border
            case 3 -> INDIRECT + 16L * in.pick(INDIRECT_ENTRIES); // an indirect table
            case 4 -> R0_SIZE + R1_SIZE - 1 - in.u16(); // near the end of guest memory
            case 5 -> -1L - in.u16(); // wraps 2^64
            default -> R0_SIZE + in.u16(); // inside region 1
        };
        final int len = switch (in.pick(5)) {
            case 0 -> in.u32();
            case 1 -> in.u16();
            case 2 -> 16 * in.u8(); // indirect-table sizes
            case 3 -> -1 - in.u8(); // 4 GiB less a little
            default -> 0;
        };
        g.set(JAVA_LONG_UNALIGNED, at, addr);
        g.set(JAVA_INT_UNALIGNED, at + 8, len);
        g.set(JAVA_SHORT_UNALIGNED, at + 12, (short) in.u16());
        g.set(JAVA_SHORT_UNALIGNED, at + 14, (short) in.u16());
    }

    private static void check(final int err, final DescriptorChain c) {
        assertTrue(err >= ChainError.OK && err <= ChainError.TOO_MANY_BUFFERS, "unknown chain error " + err);
        if (err != ChainError.OK && err != ChainError.TOO_MANY_BUFFERS) {
            return;
        }
        assertTrue(c.count >= 0 && c.count <= c.capacity() && c.readable >= 0 && c.readable <= c.count,
            c.count + " buffers, " + c.readable + " readable, capacity " + c.capacity());
        if (err == ChainError.TOO_MANY_BUFFERS) {
            assertEquals(c.capacity(), c.count, "too many buffers, but the chain is not full");
        }
        long readable = 0;
        long writable = 0;
        for (int i = 0; i < c.count; i++) {
            final long len = Integer.toUnsignedLong(c.length[i]);
            assertTrue(len > 0 && len < (1L << 31), "buffer " + i + " of " + len + " bytes");
            assertTrue(inOneRegion(c.address[i], len), "buffer " + i + " at 0x" + Long.toHexString(c.address[i]) + " of " + len
                + " bytes is outside guest memory");
            if (i < c.readable) {
                readable += len;
            } else {
                writable += len;
            }
        }
        if (c.lastLength != 0) {
            assertTrue(inOneRegion(c.lastAddress, Integer.toUnsignedLong(c.lastLength)), "the last buffer is outside guest memory");
        }
        if (err == ChainError.OK) {
            assertEquals(c.readableBytes, readable, "readable bytes");
            assertEquals(c.writableBytes, writable, "writable bytes");
        } else {
            assertTrue(c.readableBytes >= readable && c.writableBytes >= writable, "byte counts below what the buffers hold");
        }
    }

    private static boolean inOneRegion(final long address, final long len) {
        for (final MemoryRegion r : List.of(R0, R1)) {
            if (address >= r.base && address - r.base < r.size && len <= r.size - (address - r.base)) {
                return true;
            }
        }
        return false;
    }

    /** Writes the seed corpus into directory {@code args[0]} (tools/fuzz split-virtqueue --write-seeds). */
    public static void main(final String[] args) throws IOException {
        final Path dir = Path.of(args[0]);
        Files.createDirectories(dir);
        // size 128 (2^7), EVENT_IDX and INDIRECT_DESC; capacity 8; base 0; one entry available, head 0.
        final int cfg = 7 | 0x10 | 0x20;
        // A read: header (16 readable), 4 KiB data, status byte, chained 0 -> 1 -> 2.
        Files.write(dir.resolve("direct-read-chain"), new FuzzBytes.Writer().u8(cfg).u8(7).u16(0).u16(1).u16(0).u8(3)
            .u8(1).u32(0).u8(1).u16(16).u16(1).u16(1)
            .u8(1).u32(0x1000).u8(1).u16(4096).u16(1 | 2).u16(2)
            .u8(1).u32(0x3000).u8(1).u16(1).u16(2).u16(0)
            .u8(0).toByteArray());
        // The head points at an indirect table of three entries (48 bytes) holding the same chain.
        Files.write(dir.resolve("indirect-table"), new FuzzBytes.Writer().u8(cfg).u8(7).u16(0).u16(1).u16(0).u8(1)
            .u8(3).u8(0).u8(2).u8(3).u16(4).u16(0)
            .u8(3)
            .u8(1).u32(0).u8(1).u16(16).u16(1).u16(1)
            .u8(1).u32(0x1000).u8(1).u16(4096).u16(1 | 2).u16(2)
            .u8(1).u32(0x3000).u8(1).u16(1).u16(2).u16(0).toByteArray());
        // A chain that loops 0 -> 1 -> 0.
        Files.write(dir.resolve("loop"), new FuzzBytes.Writer().u8(cfg).u8(7).u16(0).u16(1).u16(0).u8(2)
            .u8(1).u32(0).u8(1).u16(16).u16(1).u16(1)
            .u8(1).u32(0x100).u8(1).u16(16).u16(1).u16(0).u8(0).toByteArray());
        // A buffer across the border of the two regions, and the avail index far ahead (a broken ring).
        Files.write(dir.resolve("across-regions"), new FuzzBytes.Writer().u8(cfg).u8(7).u16(0).u16(1).u16(0).u8(1)
            .u8(2).u8(15).u8(1).u16(64).u16(2).u16(0).u8(0).toByteArray());
        Files.write(dir.resolve("broken-avail-index"), new FuzzBytes.Writer().u8(cfg).u8(7).u16(5).u16(0x8000).u16(0).u8(0).u8(0)
            .toByteArray());
        // More buffers than the capacity (2): a sound chain of 4 one-byte writable buffers.
        final FuzzBytes.Writer many = new FuzzBytes.Writer().u8(cfg).u8(1).u16(0).u16(1).u16(0).u8(4);
        for (int i = 0; i < 4; i++) {
            many.u8(1).u32(0x100 * i).u8(1).u16(1).u16(i < 3 ? 1 | 2 : 2).u16(i + 1);
        }
        Files.write(dir.resolve("too-many-buffers"), many.u8(0).toByteArray());
    }
}
