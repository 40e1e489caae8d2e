package io.lazyblk.vhost.inflight;

import io.lazyblk.sys.LibC;
import io.lazyblk.vhost.mem.GuestMemory;
import io.lazyblk.vhost.mem.MemoryRegion;
import io.lazyblk.vhost.ring.SplitVirtqueue;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The in-flight region across a device restart, with a real memfd for the guest's ring and a real sealed memfd for the
 * region: a first device takes requests and answers some of them out of order (in batches), "dies" (is dropped without
 * any cleanup, at chosen points), and a second device, attached to a fresh mapping of the same region, must run again
 * exactly the requests the driver has not seen answered, in the order they were taken, and then go on with new ones.
 */
class InflightRegionTest {
    private static final long MEM = 1 << 20;
    private static final long UVA = 0x7f00_0000_0000L;
    private static final long DESC = 0x1000;
    private static final long AVAIL = 0x2000;
    private static final long USED = 0x3000;
    private static final int SIZE = 8;

    private MemoryRegion guest;
    private MemorySegment g;
    private int regionFd;
    private final List<AutoCloseable> open = new ArrayList<>();

    @BeforeEach
    void setUp() throws Exception {
        final int fd = LibC.memfdCreate("guest");
        LibC.ftruncate(fd, MEM);
        guest = MemoryRegion.map(fd, 0, MEM, UVA, 0);
        g = guest.segment;
        final InflightRegion created = InflightRegion.create(1, SIZE);
        regionFd = created.fd();
        open.add(created); // the first device keeps its GET_INFLIGHT_FD mapping; the front end holds the fd
    }

    @AfterEach
    void tearDown() throws Exception {
        for (final AutoCloseable c : open) {
            c.close();
        }
        guest.close();
    }

    /** A device on the region as the front end hands it back (SET_INFLIGHT_FD): a new mapping of the same memfd. */
    private SplitVirtqueue device(final int base) throws Exception {
        final InflightRegion r = InflightRegion.adopt(io.lazyblk.vhost.FdPassing.throughSocket(regionFd), InflightRegion.sizeFor(1, SIZE), 0, 1, SIZE, 1);
        open.add(r);
        final SplitVirtqueue q = new SplitVirtqueue(0);
        q.configure(SIZE, true, true);
        assertNull(q.setAddresses(GuestMemory.of(List.of(guest)), UVA + DESC, UVA + AVAIL, UVA + USED));
        q.setBase(base);
        q.attachInflight(r.queue(0), base);
        return q;
    }

    private void offer(final int head) {
        final int idx = availIdx();
        g.set(JAVA_SHORT_UNALIGNED, AVAIL + 4 + 2L * (idx % SIZE), (short) head);
        g.set(JAVA_SHORT_UNALIGNED, AVAIL + 2, (short) (idx + 1));
    }

    private int availIdx() {
        return Short.toUnsignedInt(g.get(JAVA_SHORT_UNALIGNED, AVAIL + 2));
    }

    private int usedIdx() {
        return Short.toUnsignedInt(g.get(JAVA_SHORT_UNALIGNED, USED + 2));
    }

    /** The heads the driver sees answered, in used-ring order. */
    private List<Integer> answered() {
        final List<Integer> heads = new ArrayList<>();
        for (int i = 0; i < usedIdx(); i++) {
            heads.add(g.get(JAVA_INT_UNALIGNED, USED + 4 + 8L * (i % SIZE)));
        }
        return heads;
    }

    private static List<Integer> popAll(final SplitVirtqueue q) {
        final List<Integer> heads = new ArrayList<>();
        for (int n = q.pending(); n > 0; n = q.pending()) {
            for (int i = 0; i < n; i++) {
                heads.add(q.pop());
            }
        }
        return heads;
    }

    private static void answer(final SplitVirtqueue q, final int... heads) {
        for (final int h : heads) {
            q.pushUsed(h, 1);
        }
        q.publishUsed();
    }

    @Test
    void shouldRunAgainOnlyTheRequestsLeftUnansweredOutOfOrderInTakenOrder() throws Exception {
        final SplitVirtqueue first = device(0);
        for (final int h : new int[] {5, 2, 7, 0, 3}) {
            offer(h);
        }
        assertEquals(List.of(5, 2, 7, 0, 3), popAll(first));
        answer(first, 7, 5); // out of order, one batch of two
        answer(first, 3);
        // The first device dies here with 2 and 0 taken and unanswered; the driver adds one more meanwhile.
        offer(6);
        final SplitVirtqueue second = device(usedIdx()); // QEMU sets the base to the used index after a crash
        assertEquals(List.of(2, 0, 6), popAll(second), "resubmitted in the order taken, then the new request");
        answer(second, 0, 6, 2);
        assertEquals(List.of(7, 5, 3, 0, 6, 2), answered(), "every request answered exactly once");
        assertEquals(6, second.base());
    }

    @Test
    void shouldClearAWholeBatchPublishedJustBeforeTheCrash() throws Exception {
        final SplitVirtqueue first = device(0);
        for (int h = 0; h < 6; h++) {
            offer(h);
        }
        popAll(first);
        // A batch of three published, then the device dies before clearing their marks: emulate by publishing the used
        // index by hand after pushing (pushUsed links them; publishUsed would clear them).
        first.pushUsed(4, 1);
        first.pushUsed(1, 1);
        first.pushUsed(2, 1);
        g.set(JAVA_SHORT_UNALIGNED, USED + 2, (short) 3);
        final SplitVirtqueue second = device(3);
        assertEquals(List.of(0, 3, 5), popAll(second), "the three answered ones are not run again (libvhost-user's repair clears only one)");
    }

    @Test
    void shouldTakeAgainARequestTakenButNotYetMarked() throws Exception {
        final SplitVirtqueue first = device(0);
        offer(1);
        offer(2);
        assertEquals(1, first.pop());
        // The device dies after advancing past head 2 in the avail ring but before marking it: the region has only 1.
        final SplitVirtqueue second = device(0);
        assertEquals(List.of(1, 2), popAll(second));
    }

    @Test
    void shouldStartAtTheBaseOnAFreshRegionAndInitialiseIt() throws Exception {
        offer(3);
        offer(4);
        g.set(JAVA_SHORT_UNALIGNED, USED + 2, (short) 1); // an earlier, untracked device answered one
        final SplitVirtqueue q = device(1);
        assertEquals(List.of(4), popAll(q));
        final MemorySegment header = mapped();
        assertEquals(InflightLayout.VERSION_1, header.get(JAVA_SHORT_UNALIGNED, InflightLayout.VERSION));
        assertEquals(SIZE, header.get(JAVA_SHORT_UNALIGNED, InflightLayout.DESC_NUM));
        assertEquals(1, header.get(JAVA_BYTE, InflightLayout.entry(4) + InflightLayout.ENTRY_INFLIGHT));
    }

    /** The region's bytes as the front end sees them (its own mapping). */
    private MemorySegment mapped() throws Exception {
        final long size = InflightRegion.sizeFor(1, SIZE);
        final java.lang.foreign.Arena a = java.lang.foreign.Arena.ofShared();
        open.add(a::close);
        return io.lazyblk.vhost.mem.SealedMemfd.mapShared(regionFd, size, 0, a);
    }

    private InflightException refusedAfter(final java.util.function.Consumer<MemorySegment> corrupt) throws Exception {
        final SplitVirtqueue first = device(0);
        for (int h = 0; h < 4; h++) {
            offer(h);
        }
        popAll(first);
        answer(first, 1);
        corrupt.accept(mapped());
        return assertThrows(InflightException.class, () -> device(usedIdx()));
    }

    @Test
    void shouldRefuseAnUnknownVersion() throws Exception {
        final InflightException e = refusedAfter(m -> m.set(JAVA_SHORT_UNALIGNED, InflightLayout.VERSION, (short) 2));
        assertTrue(e.getMessage().contains("version 2"), e.getMessage());
    }

    @Test
    void shouldRefuseADescriptorCountOtherThanTheQueueSize() throws Exception {
        final InflightException e = refusedAfter(m -> m.set(JAVA_SHORT_UNALIGNED, InflightLayout.DESC_NUM, (short) 1024));
        assertTrue(e.getMessage().contains("1024"), e.getMessage());
    }

    @Test
    void shouldRefuseAUsedIndexFurtherBehindThanTheQueueHolds() throws Exception {
        final InflightException e = refusedAfter(m -> m.set(JAVA_SHORT_UNALIGNED, InflightLayout.USED_IDX, (short) 40000));
        assertTrue(e.getMessage().contains("behind"), e.getMessage());
    }

    @Test
    void shouldRefuseALastBatchListThatLeavesTheQueue() throws Exception {
        final InflightException e = refusedAfter(m -> {
            m.set(JAVA_SHORT_UNALIGNED, InflightLayout.USED_IDX, (short) 0); // one entry to repair...
            m.set(JAVA_SHORT_UNALIGNED, InflightLayout.LAST_BATCH_HEAD, (short) 9000); // ...at a head past the table
        });
        assertTrue(e.getMessage().contains("corrupt"), e.getMessage());
    }

    @Test
    void shouldRefuseALastBatchListThatLoops() throws Exception {
        final InflightException e = refusedAfter(m -> {
            g.set(JAVA_SHORT_UNALIGNED, USED + 2, (short) 3); // pretend three were published
            m.set(JAVA_SHORT_UNALIGNED, InflightLayout.USED_IDX, (short) 0);
            m.set(JAVA_SHORT_UNALIGNED, InflightLayout.LAST_BATCH_HEAD, (short) 2);
            m.set(JAVA_SHORT_UNALIGNED, InflightLayout.entry(2) + InflightLayout.ENTRY_NEXT, (short) 3);
            m.set(JAVA_SHORT_UNALIGNED, InflightLayout.entry(3) + InflightLayout.ENTRY_NEXT, (short) 2); // a loop
        });
        assertTrue(e.getMessage().contains("corrupt"), e.getMessage());
    }

    @Test
    void shouldRefuseAFlagOtherThanZeroOrOne() throws Exception {
        final InflightException e = refusedAfter(m -> m.set(JAVA_BYTE, InflightLayout.entry(0) + InflightLayout.ENTRY_INFLIGHT, (byte) 7));
        assertTrue(e.getMessage().contains("flag 7"), e.getMessage());
    }

    @Test
    void shouldRefuseMoreRequestsInFlightThanTheDriverHasOutstanding() throws Exception {
        final InflightException e = refusedAfter(m -> {
            for (int h = 4; h < SIZE; h++) {
                m.set(JAVA_LONG_UNALIGNED, InflightLayout.entry(h) + InflightLayout.ENTRY_COUNTER, 100L + h);
                m.set(JAVA_BYTE, InflightLayout.entry(h) + InflightLayout.ENTRY_INFLIGHT, (byte) 1);
            }
        });
        assertTrue(e.getMessage().contains("outstanding"), e.getMessage());
    }

    @Test
    void shouldRefuseTwoRequestsWithOneCounter() throws Exception {
        final InflightException e = refusedAfter(m -> m.set(JAVA_LONG_UNALIGNED,
            InflightLayout.entry(2) + InflightLayout.ENTRY_COUNTER, m.get(JAVA_LONG_UNALIGNED, InflightLayout.entry(0) + InflightLayout.ENTRY_COUNTER)));
        assertTrue(e.getMessage().contains("share counter"), e.getMessage());
    }

    @Test
    void shouldRefuseARegionOfTheWrongSizeOffsetOrFile() throws Exception {
        final long size = InflightRegion.sizeFor(1, SIZE);
        assertThrows(InflightException.class, () -> InflightRegion.adopt(io.lazyblk.vhost.FdPassing.throughSocket(regionFd), size + 64, 0, 1, SIZE, 1));
        assertThrows(InflightException.class, () -> InflightRegion.adopt(io.lazyblk.vhost.FdPassing.throughSocket(regionFd), size, 100, 1, SIZE, 1));
        assertThrows(InflightException.class, () -> InflightRegion.adopt(io.lazyblk.vhost.FdPassing.throughSocket(regionFd), size, 4096, 1, SIZE, 1),
            "past the end of the memfd");
        assertThrows(InflightException.class, () -> InflightRegion.adopt(io.lazyblk.vhost.FdPassing.throughSocket(regionFd), InflightRegion.sizeFor(2, SIZE), 0, 2, SIZE, 1),
            "more queues than the device has");
        assertThrows(InflightException.class, () -> InflightRegion.adopt(io.lazyblk.vhost.FdPassing.throughSocket(regionFd), size, 0, 1, 6, 1), "not a power of two");
        final int unsealed = LibC.memfdCreate("unsealed", LibC.MFD_ALLOW_SEALING);
        LibC.ftruncate(unsealed, size);
        final InflightException e = assertThrows(InflightException.class, () -> InflightRegion.adopt(unsealed, size, 0, 1, SIZE, 1));
        assertTrue(e.getMessage().contains("sealed"), e.getMessage());
        final int eventFd = LibC.eventfd(0);
        assertThrows(InflightException.class, () -> InflightRegion.adopt(eventFd, size, 0, 1, SIZE, 1));
    }

    @Test
    void shouldKeepTheFrontEndsViewConsistentWhenEveryRequestWasAnswered() throws Exception {
        final SplitVirtqueue first = device(0);
        for (int h = 0; h < 3; h++) {
            offer(h);
        }
        popAll(first);
        answer(first, 2, 0, 1);
        final SplitVirtqueue second = device(first.base());
        assertEquals(0, second.pending());
        offer(5);
        assertEquals(List.of(5), popAll(second));
        assertEquals(4, second.base());
        assertEquals(3, usedIdx());
    }
}
