package io.lazyblk.vhost.mem;

import io.lazyblk.sys.LibC;
import io.lazyblk.vhost.ring.DescriptorChain;
import io.lazyblk.vhost.ring.SplitVirtqueue;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
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
 * The dirty log as the front end reads it: a real sealed memfd mapped twice, once as the device's {@link DirtyLog} and
 * once as the front end's view, and a real ring in a memfd "guest": every page the device writes (a read's data, the
 * status byte, the used ring when it is logged) has its bit set, nothing else does, and nothing is marked while
 * logging is off.
 */
class DirtyLogTest {
    private static final long LOG_BYTES = 4096; // 32768 pages: 128 MiB of guest memory
    private static final long MEM = 1 << 20;
    private static final long UVA = 0x7f00_0000_0000L;
    private static final long DESC = 0x1000;
    private static final long AVAIL = 0x2000;
    private static final long USED = 0x3000;
    private static final int SIZE = 8;

    private int logFd;
    private MemorySegment view;
    private final List<AutoCloseable> open = new ArrayList<>();

    @BeforeEach
    void setUp() throws Exception {
        logFd = LibC.memfdCreate("log", LibC.MFD_ALLOW_SEALING);
        LibC.ftruncate(logFd, LOG_BYTES);
        LibC.addSeals(logFd, LibC.F_SEAL_SHRINK | LibC.F_SEAL_GROW);
        final Arena a = Arena.ofShared();
        open.add(a::close);
        view = SealedMemfd.mapShared(logFd, LOG_BYTES, 0, a);
    }

    @AfterEach
    void tearDown() throws Exception {
        for (final AutoCloseable c : open.reversed()) {
            c.close();
        }
        LibC.close(logFd);
    }

    private DirtyLog log() throws Exception {
        final DirtyLog l = DirtyLog.map(io.lazyblk.vhost.FdPassing.throughSocket(logFd), LOG_BYTES, 0);
        open.add(l);
        return l;
    }

    /** The pages whose bits are set, as the front end would collect them. */
    private List<Long> marked() {
        final List<Long> pages = new ArrayList<>();
        for (long i = 0; i < LOG_BYTES; i++) {
            final int b = Byte.toUnsignedInt(view.get(JAVA_BYTE, i));
            for (int bit = 0; bit < 8; bit++) {
                if ((b & (1 << bit)) != 0) {
                    pages.add(i * 8 + bit);
                }
            }
        }
        return pages;
    }

    @Test
    void shouldMarkEveryPageARangeTouchesAcrossWordBoundariesAndNoOther() throws Exception {
        final DirtyLog l = log();
        l.mark(5 * 4096 + 4095, 1);
        l.mark(60 * 4096 + 100, 10 * 4096); // pages 60..70, across the first 64-bit word
        assertEquals(List.of(5L, 60L, 61L, 62L, 63L, 64L, 65L, 66L, 67L, 68L, 69L, 70L), marked());
        l.mark(0, 0);
        assertEquals(12, marked().size(), "an empty range marks nothing");
    }

    @Test
    void shouldMarkOnlyWhatTheLogCoversAndCountTheRest() throws Exception {
        final DirtyLog l = log();
        assertEquals(LOG_BYTES * 8 * 4096, l.coverage());
        l.mark(l.coverage() - 4096, 3 * 4096); // last page in, two beyond
        l.mark(l.coverage() + (1L << 40), 4096); // far beyond
        l.mark(-4096, 8192); // wraps around the address space
        assertEquals(List.of(LOG_BYTES * 8 - 1), marked());
        assertEquals(3, l.outside());
    }

    @Test
    void shouldRefuseALogThatCouldShrinkDoesNotFitOrIsMalformed() throws Exception {
        final int unsealed = LibC.memfdCreate("unsealed", LibC.MFD_ALLOW_SEALING);
        LibC.ftruncate(unsealed, LOG_BYTES);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> DirtyLog.map(unsealed, LOG_BYTES, 0)).getMessage().contains("sealed"));
        assertThrows(IllegalArgumentException.class, () -> DirtyLog.map(io.lazyblk.vhost.FdPassing.throughSocket(logFd), LOG_BYTES, 4096), "past the end of the memfd");
        assertThrows(IllegalArgumentException.class, () -> DirtyLog.map(io.lazyblk.vhost.FdPassing.throughSocket(logFd), 12, 0), "not whole words");
        assertThrows(IllegalArgumentException.class, () -> DirtyLog.map(io.lazyblk.vhost.FdPassing.throughSocket(logFd), 8, 100), "unaligned offset");
        assertThrows(IllegalArgumentException.class, () -> DirtyLog.map(io.lazyblk.vhost.FdPassing.throughSocket(logFd), DirtyLog.MAX_SIZE * 2, 0), "too large");
        assertThrows(IllegalArgumentException.class, () -> DirtyLog.map(LibC.eventfd(0), 8, 0), "not a memfd");
    }

    @Test
    void shouldMarkWhatTheRingWritesOnlyWhileLogging() throws Exception {
        final int fd = LibC.memfdCreate("guest");
        LibC.ftruncate(fd, MEM);
        final MemoryRegion guest = MemoryRegion.map(fd, 0, MEM, UVA, 0);
        open.add(guest);
        final MemorySegment g = guest.segment;
        final SplitVirtqueue q = new SplitVirtqueue(0);
        q.configure(SIZE, true, true);
        assertNull(q.setAddresses(GuestMemory.of(List.of(guest)), UVA + DESC, UVA + AVAIL, UVA + USED));
        q.setBase(0);
        // A read: header (readable) at 0x10000, 8 KiB of data from 0x20800 (pages 0x20..0x22), status at 0x30000.
        desc(g, 0, 0x10000, 16, 1, 1);
        desc(g, 1, 0x20800, 8192, 1 | 2, 2);
        desc(g, 2, 0x30000, 1, 2, 0);
        final DescriptorChain chain = new DescriptorChain(4);

        offer(g, 0);
        q.readChain(q.pop(), chain);
        q.logWrites(chain);
        q.pushUsed(chain.head, 8193);
        q.publishUsed();
        assertEquals(List.of(), marked(), "nothing is marked while the front end does not log");

        final DirtyLog l = log();
        q.setLog(l);
        offer(g, 0);
        q.readChain(q.pop(), chain);
        q.logWrites(chain);
        q.pushUsed(chain.head, 8193);
        q.publishUsed();
        assertEquals(List.of(0x20L, 0x21L, 0x22L, 0x30L), marked(), "the data's pages and the status byte's; the used ring is not logged");

        q.setUsedLog(USED); // the used ring's guest physical address, as QEMU sends it with VHOST_VRING_F_LOG
        offer(g, 0);
        q.readChain(q.pop(), chain);
        q.logWrites(chain);
        q.pushUsed(chain.head, 8193);
        q.publishUsed();
        assertTrue(marked().contains(USED >> 12), "the used ring's page, for its entry and index");

        q.setLog(null);
        view.fill((byte) 0);
        offer(g, 0);
        q.readChain(q.pop(), chain);
        q.logWrites(chain);
        q.pushUsed(chain.head, 8193);
        q.publishUsed();
        assertEquals(List.of(), marked(), "logging off again");
    }

    private static void desc(final MemorySegment g, final int i, final long addr, final int len, final int flags, final int next) {
        final long o = DESC + 16L * i;
        g.set(JAVA_LONG_UNALIGNED, o, addr);
        g.set(JAVA_INT_UNALIGNED, o + 8, len);
        g.set(JAVA_SHORT_UNALIGNED, o + 12, (short) flags);
        g.set(JAVA_SHORT_UNALIGNED, o + 14, (short) next);
    }

    private static void offer(final MemorySegment g, final int head) {
        final int idx = Short.toUnsignedInt(g.get(JAVA_SHORT_UNALIGNED, AVAIL + 2));
        g.set(JAVA_SHORT_UNALIGNED, AVAIL + 4 + 2L * (idx % SIZE), (short) head);
        g.set(JAVA_SHORT_UNALIGNED, AVAIL + 2, (short) (idx + 1));
    }
}
