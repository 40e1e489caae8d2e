package io.lazyblk.vhost.ring;

import io.lazyblk.vhost.mem.GuestMemory;
import io.lazyblk.vhost.mem.MemoryRegion;
import io.lazyblk.sys.EventFd;
import io.lazyblk.sys.LibC;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.util.List;

import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The device side of the split ring against a real memfd "guest", with hostile descriptor tables. */
class SplitVirtqueueTest {
    private static final long MEM = 1 << 20;
    private static final long UVA = 0x7f00_0000_0000L; // the front end's address of guest physical 0
    private static final long DESC = 0x1000;
    private static final long AVAIL = 0x2000;
    private static final long USED = 0x3000;
    private static final long BUF = 0x10000;
    private static final int SIZE = 8;

    private MemoryRegion region;
    private MemorySegment g;
    private SplitVirtqueue q;
    private final DescriptorChain chain = new DescriptorChain(16);

    @BeforeEach
    void setUp() throws Exception {
        final int fd = LibC.memfdCreate("guest");
        LibC.ftruncate(fd, MEM);
        region = MemoryRegion.map(fd, 0, MEM, UVA, 0);
        g = region.segment;
        q = new SplitVirtqueue(0);
        q.configure(SIZE, true, true);
        assertNull(q.setAddresses(GuestMemory.of(List.of(region)), UVA + DESC, UVA + AVAIL, UVA + USED));
        q.setBase(0);
    }

    @AfterEach
    void tearDown() {
        region.close();
    }

    private void desc(final long table, final int i, final long addr, final int len, final int flags, final int next) {
        final long o = table + 16L * i;
        g.set(JAVA_LONG_UNALIGNED, o, addr);
        g.set(JAVA_INT_UNALIGNED, o + 8, len);
        g.set(JAVA_SHORT_UNALIGNED, o + 12, (short) flags);
        g.set(JAVA_SHORT_UNALIGNED, o + 14, (short) next);
    }

    private void offer(final int head) {
        final int idx = Short.toUnsignedInt(g.get(JAVA_SHORT_UNALIGNED, AVAIL + 2));
        g.set(JAVA_SHORT_UNALIGNED, AVAIL + 4 + 2L * (idx % SIZE), (short) head);
        g.set(JAVA_SHORT_UNALIGNED, AVAIL + 2, (short) (idx + 1));
    }

    private int popAndRead() {
        assertEquals(1, q.pending());
        return q.readChain(q.pop(), chain);
    }

    @Test
    void shouldFlattenAValidChainWithReadableThenWritableBuffers() {
        desc(DESC, 0, BUF, 16, 1, 1);
        desc(DESC, 1, BUF + 4096, 4096, 1 | 2, 2);
        desc(DESC, 2, BUF + 8192, 1, 2, 0);
        offer(0);
        assertEquals(ChainError.OK, popAndRead());
        assertEquals(3, chain.count);
        assertEquals(1, chain.readable);
        assertEquals(16, chain.readableBytes);
        assertEquals(4097, chain.writableBytes);
        assertEquals(region.base + BUF + 4096, chain.address[1]);
    }

    @Test
    void shouldRefuseHeadIndexBeyondQueue() {
        offer(SIZE);
        assertEquals(ChainError.HEAD_OUT_OF_RANGE, popAndRead());
    }

    @Test
    void shouldRefuseLoopedChain() {
        desc(DESC, 0, BUF, 16, 1, 1);
        desc(DESC, 1, BUF, 16, 1, 0);
        offer(0);
        assertEquals(ChainError.LOOP_OR_TOO_LONG, popAndRead());
    }

    @Test
    void shouldRefuseNextIndexBeyondQueue() {
        desc(DESC, 0, BUF, 16, 1, 200);
        offer(0);
        assertEquals(ChainError.NEXT_OUT_OF_RANGE, popAndRead());
    }

    @Test
    void shouldRefuseBuffersOutsideGuestMemory() {
        desc(DESC, 0, MEM - 8, 16, 0, 0); // straddles the end of the region
        offer(0);
        assertEquals(ChainError.ADDRESS_OUTSIDE_GUEST, popAndRead());
        desc(DESC, 0, -8, 16, 0, 0); // wraps around 2^64
        offer(0);
        assertEquals(ChainError.ADDRESS_OUTSIDE_GUEST, popAndRead());
        desc(DESC, 0, BUF, -1, 0, 0); // 4 GiB - 1 bytes
        offer(0);
        assertEquals(ChainError.ADDRESS_OUTSIDE_GUEST, popAndRead());
    }

    @Test
    void shouldFollowAnIndirectTable() {
        final long table = 0x5000;
        desc(table, 0, BUF, 16, 1, 1);
        desc(table, 1, BUF + 4096, 512, 1 | 2, 2);
        desc(table, 2, BUF + 8192, 1, 2, 0);
        desc(DESC, 0, table, 48, 4, 0);
        offer(0);
        assertEquals(ChainError.OK, popAndRead());
        assertEquals(3, chain.count);
        assertEquals(0, chain.head);
    }

    @Test
    void shouldRefuseIndirectTablesOutOfRangeNestedOrMisshapen() {
        desc(DESC, 0, MEM - 16, 48, 4, 0);
        offer(0);
        assertEquals(ChainError.INDIRECT_BAD_TABLE, popAndRead());

        desc(DESC, 0, 0x5000, 20, 4, 0); // not a multiple of 16
        offer(0);
        assertEquals(ChainError.INDIRECT_BAD_TABLE, popAndRead());

        desc(0x5000, 0, 0x6000, 16, 4, 0); // nested
        desc(DESC, 0, 0x5000, 16, 4, 0);
        offer(0);
        assertEquals(ChainError.INDIRECT_NESTED, popAndRead());

        desc(0x5000, 0, BUF, 16, 1, 5); // next beyond the table
        desc(DESC, 0, 0x5000, 16, 4, 0);
        offer(0);
        assertEquals(ChainError.NEXT_OUT_OF_RANGE, popAndRead());
    }

    @Test
    void shouldRefuseIndirectWhenNotNegotiated() {
        q.configure(SIZE, true, false);
        desc(DESC, 0, 0x5000, 16, 4, 0);
        offer(0);
        assertEquals(ChainError.INDIRECT_NOT_NEGOTIATED, popAndRead());
    }

    @Test
    void shouldRefuseReadableBufferAfterWritableOne() {
        desc(DESC, 0, BUF, 16, 1 | 2, 1);
        desc(DESC, 1, BUF, 16, 0, 0);
        offer(0);
        assertEquals(ChainError.READABLE_AFTER_WRITABLE, popAndRead());
    }

    @Test
    void shouldRefuseMoreBuffersThanTheRequestCanHold() {
        final long table = 0x5000;
        for (int i = 0; i < 20; i++) {
            desc(table, i, BUF, 16, i < 19 ? 1 : 0, i + 1);
        }
        desc(DESC, 0, table, 20 * 16, 4, 0);
        offer(0);
        assertEquals(ChainError.TOO_MANY_BUFFERS, popAndRead());
    }

    @Test
    void shouldMarkQueueBrokenWhenAvailIndexRunsAheadByMoreThanItsSize() {
        g.set(JAVA_SHORT_UNALIGNED, AVAIL + 2, (short) (SIZE + 1));
        assertEquals(0, q.pending());
        assertTrue(q.isBroken());
    }

    @Test
    void shouldPublishUsedEntriesAndSignalOnlyWhenUsedEventIsCrossed() throws Exception {
        final int call = LibC.eventfd(LibC.EFD_NONBLOCK);
        try {
            q.setCallFd(call);
            g.set(JAVA_SHORT_UNALIGNED, AVAIL + 4 + 2L * SIZE, (short) 1); // used_event: signal once used idx passes 1
            q.pushUsed(3, 17);
            q.publishUsed(); // used idx 0 -> 1: event 1 not crossed
            assertEquals(0, EventFd.drain(call));
            assertEquals(1, g.get(JAVA_SHORT_UNALIGNED, USED + 2));
            assertEquals(3, g.get(JAVA_INT_UNALIGNED, USED + 4));
            assertEquals(17, g.get(JAVA_INT_UNALIGNED, USED + 8));
            q.pushUsed(4, 1);
            q.publishUsed(); // 1 -> 2 crosses used_event 1
            assertEquals(1, EventFd.drain(call));
        } finally {
            LibC.close(call);
        }
    }

    @Test
    void shouldWriteAvailEventWhenReenablingNotifications() {
        desc(DESC, 0, BUF, 16, 0, 0);
        offer(0);
        q.pop();
        assertFalse(q.enableNotifications());
        assertEquals(1, g.get(JAVA_SHORT_UNALIGNED, USED + 4 + 8L * SIZE));
        offer(0);
        assertTrue(q.enableNotifications());
    }

    @Test
    void shouldRefuseRingsOutsideGuestMemoryOrMisaligned() {
        final GuestMemory mem = GuestMemory.of(List.of(region));
        assertEquals("ring address outside guest memory", q.setAddresses(mem, UVA + MEM - 16, UVA + AVAIL, UVA + USED));
        assertEquals("misaligned ring address", q.setAddresses(mem, UVA + DESC + 8, UVA + AVAIL, UVA + USED));
    }
}
