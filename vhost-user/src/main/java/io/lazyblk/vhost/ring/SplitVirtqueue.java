package io.lazyblk.vhost.ring;

import io.lazyblk.vhost.inflight.InflightException;
import io.lazyblk.vhost.inflight.InflightQueue;
import io.lazyblk.vhost.mem.DirtyLog;
import io.lazyblk.vhost.mem.GuestMemory;
import io.lazyblk.vhost.mem.MemoryRegion;
import io.lazyblk.sys.EventFd;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.VarHandle;

/**
 * Device side of a virtio split virtqueue living in guest memory.
 *
 * <p>Single writer: only the owning queue agent calls the avail-side and notification-control methods (pop,
 * readChain, enable/disableNotifications). The used side ({@link #pushUsed}, {@link #publishUsed}) touches only
 * its own fields, so a queue handler may let another thread call it under a lease that hands those fields over
 * with acquire/release (see BlkQueueHandler); one thread at a time. Every value read from guest memory is treated
 * as hostile and checked before use.
 */
public final class SplitVirtqueue {
    public static final int MAX_SIZE = 1024;
    private static final int DESC_SIZE = 16;
    private static final short F_NEXT = 1;
    private static final short F_WRITE = 2;
    private static final short F_INDIRECT = 4;
    private static final short USED_F_NO_NOTIFY = 1;
    private static final short AVAIL_F_NO_INTERRUPT = 1;

    private static final ValueLayout.OfLong U64 = ValueLayout.JAVA_LONG_UNALIGNED;
    private static final ValueLayout.OfInt U32 = ValueLayout.JAVA_INT_UNALIGNED;
    private static final ValueLayout.OfShort U16 = ValueLayout.JAVA_SHORT_UNALIGNED;
    /** Acquire/release access to the ring indices; the ring areas are checked aligned in {@link #setAddresses}. */
    private static final VarHandle IDX = ValueLayout.JAVA_SHORT.varHandle();

    public final int index;
    private int size;
    private int mask;
    private boolean eventIdx;
    private boolean indirect;

    private MemorySegment desc;
    private MemorySegment avail;
    private MemorySegment used;
    private GuestMemory memory = GuestMemory.EMPTY;

    /** Next avail index to consume (free-running u16). */
    private int lastAvail;
    /** Next used index to fill (free-running u16); {@link #publishedUsed} is what the driver can see. */
    private int nextUsed;
    private int publishedUsed;
    private int signalledUsed;
    private boolean signalledValid;
    private int callFd = -1;
    private boolean broken;
    /** In-flight tracking (INFLIGHT_SHMFD), or null: marked on the avail side, linked and cleared on the used side. */
    private InflightQueue inflight;
    /** Requests a restart found in flight, in the order they were taken: popped before anything new. */
    private int[] resubmit = new int[0];
    private int resubmitNext;
    /**
     * The dirty log while the front end logs (live migration), else null: set by the control thread while the queue
     * runs, read on every answer. Volatile: a queue sees logging start before the front end's next message is answered.
     */
    private volatile DirtyLog log;
    /** Guest physical address of the used ring for the dirty log (SET_VRING_ADDR's log address), or -1: not logged. */
    private volatile long usedLogGpa = -1;

    public SplitVirtqueue(final int index) {
        this.index = index;
    }

    /** Configures size and negotiated features; called by the control agent before the queue starts. */
    public void configure(final int queueSize, final boolean eventIdxNegotiated, final boolean indirectNegotiated) {
        this.size = queueSize;
        this.mask = queueSize - 1;
        this.eventIdx = eventIdxNegotiated;
        this.indirect = indirectNegotiated;
    }

    public static boolean validSize(final int n) {
        return n > 0 && n <= MAX_SIZE && (n & (n - 1)) == 0;
    }

    /**
     * Resolves the three ring areas (front-end user addresses) in {@code mem}; returns an error text or
     * {@code null} on success.
     */
    public String setAddresses(final GuestMemory mem, final long descUva, final long availUva, final long usedUva) {
        if ((descUva & 15) != 0 || (availUva & 1) != 0 || (usedUva & 3) != 0) {
            return "misaligned ring address";
        }
        final long descLen = (long) DESC_SIZE * size;
        final long availLen = 6 + 2L * size;
        final long usedLen = 6 + 8L * size;
        final MemoryRegion dr = mem.regionOfUva(descUva, descLen);
        final MemoryRegion ar = mem.regionOfUva(availUva, availLen);
        final MemoryRegion ur = mem.regionOfUva(usedUva, usedLen);
        if (dr == null || ar == null || ur == null) {
            return "ring address outside guest memory";
        }
        this.desc = dr.segment.asSlice(descUva - dr.userAddr, descLen);
        this.avail = ar.segment.asSlice(availUva - ar.userAddr, availLen);
        this.used = ur.segment.asSlice(usedUva - ur.userAddr, usedLen);
        this.memory = mem;
        return null;
    }

    public void setBase(final int base) {
        lastAvail = base & 0xffff;
        nextUsed = base & 0xffff;
        publishedUsed = nextUsed;
        signalledValid = false;
        broken = false;
        inflight = null;
        resubmit = new int[0];
        resubmitNext = 0;
    }

    /**
     * Starts tracking in-flight requests in {@code q} (after {@link #setBase} and {@link #setAddresses}, before the
     * queue runs): what the region says was in flight when the previous device stopped is popped again first, and
     * the ring resumes where the region and the used ring say it stopped (see {@link InflightQueue#attach}).
     *
     * @return how many requests are resubmitted
     */
    public int attachInflight(final InflightQueue q, final int base) throws InflightException {
        // Acquire: read the driver's indices as they are now; the queue is stopped, so only the driver moves them.
        final int usedIdx = Short.toUnsignedInt((short) IDX.getAcquire(used, 2L));
        final int availIdx = Short.toUnsignedInt((short) IDX.getAcquire(avail, 2L));
        final InflightQueue.Resume r = q.attach(size, base, usedIdx, availIdx);
        lastAvail = r.lastAvail();
        nextUsed = r.nextUsed();
        publishedUsed = nextUsed;
        resubmit = r.resubmit();
        resubmitNext = 0;
        inflight = q;
        return resubmit.length;
    }

    /** The index GET_VRING_BASE reports: the next avail entry the device would consume. */
    public int base() {
        return lastAvail;
    }

    /** Starts (non-null) or stops (null) marking what the device writes in {@code dirtyLog}; any time, control thread. */
    public void setLog(final DirtyLog dirtyLog) {
        log = dirtyLog;
    }

    /** Whether writes to the used ring are logged too, and where the used ring is in guest physical memory (-1: not). */
    public void setUsedLog(final long gpa) {
        usedLogGpa = gpa;
    }

    /**
     * Marks in the dirty log, if logging is on, every guest page this chain's device-writable buffers lie in (the data
     * a read put there, the status byte): call before the chain's used entry is pushed. One volatile read when off.
     */
    public void logWrites(final DescriptorChain c) {
        final DirtyLog l = log;
        if (l == null) {
            return;
        }
        for (int i = c.readable; i < c.count; i++) {
            l.mark(c.gpa[i], Integer.toUnsignedLong(c.length[i]));
        }
        if (c.lastLength != 0) {
            l.mark(c.lastGpa + Integer.toUnsignedLong(c.lastLength) - 1, 1); // the status byte, also past the kept buffers
        }
    }

    private void logUsed(final long offset, final int length) {
        final DirtyLog l = log;
        if (l != null) {
            final long u = usedLogGpa;
            if (u >= 0) {
                l.mark(u + offset, length);
            }
        }
    }

    public void setCallFd(final int fd) {
        callFd = fd;
    }

    public int size() {
        return size;
    }

    public boolean isBroken() {
        return broken;
    }

    public GuestMemory memory() {
        return memory;
    }

    /** Entries the driver has made available that we have not consumed; marks the queue broken on a bogus index. */
    public int pending() {
        final int again = resubmit.length - resubmitNext;
        if (again > 0) {
            return again;
        }
        // Acquire pairs with the driver's write barrier before it bumps avail->idx: ring entries and the
        // descriptors they name are visible once we see the new index.
        final int availIdx = Short.toUnsignedInt((short) IDX.getAcquire(avail, 2L));
        final int n = (availIdx - lastAvail) & 0xffff;
        if (n > size) {
            broken = true;
            return 0;
        }
        return n;
    }

    /** Consumes the next available head index; call only when {@link #pending()} was positive. */
    public int pop() {
        if (resubmitNext < resubmit.length) {
            return resubmit[resubmitNext++]; // still marked in flight, with the counter it was first taken with
        }
        final int head = Short.toUnsignedInt(avail.get(U16, 4 + 2L * (lastAvail & mask)));
        lastAvail = (lastAvail + 1) & 0xffff;
        if (inflight != null) {
            inflight.taken(head);
        }
        return head;
    }

    /**
     * Walks the chain starting at {@code head} into {@code out}, checking every index, flag, length and address.
     *
     * @return {@link ChainError#OK} or the reason the chain is refused
     */
    public int readChain(final int head, final DescriptorChain out) {
        out.clear(head);
        if (head >= size) {
            return ChainError.HEAD_OUT_OF_RANGE;
        }
        MemorySegment table = desc;
        long tableBase = 0; // offset of the current table in `table`; an indirect table is addressed in its region, no slice object
        int tableSize = size;
        int i = head;
        int seen = 0;
        boolean inIndirect = false;
        boolean overflow = false;
        while (true) {
            final long off = tableBase + (long) i * DESC_SIZE;
            final long addr = table.get(U64, off);
            final int len = table.get(U32, off + 8);
            final short flags = table.get(U16, off + 12);
            final int next = Short.toUnsignedInt(table.get(U16, off + 14));
            if (++seen > tableSize) {
                return ChainError.LOOP_OR_TOO_LONG;
            }
            if ((flags & F_INDIRECT) != 0) {
                if (!indirect) {
                    return ChainError.INDIRECT_NOT_NEGOTIATED;
                }
                if (inIndirect) {
                    return ChainError.INDIRECT_NESTED;
                }
                if (seen != 1 || (flags & F_NEXT) != 0) {
                    return ChainError.INDIRECT_BAD_TABLE; // only a lone head may point at a table (as Linux does)
                }
                final long tableLen = Integer.toUnsignedLong(len);
                if (tableLen == 0 || tableLen % DESC_SIZE != 0 || tableLen / DESC_SIZE > MAX_SIZE) {
                    return ChainError.INDIRECT_BAD_TABLE;
                }
                final MemoryRegion r = memory.regionOfGpa(addr, tableLen);
                if (r == null) {
                    return ChainError.INDIRECT_BAD_TABLE;
                }
                table = r.segment;
                tableBase = addr - r.guestPhysAddr;
                tableSize = (int) (tableLen / DESC_SIZE);
                inIndirect = true;
                i = 0;
                seen = 0;
                continue;
            }
            final boolean writable = (flags & F_WRITE) != 0;
            if (len != 0) {
                final long a = memory.gpaToAddress(addr, Integer.toUnsignedLong(len));
                if (a == GuestMemory.INVALID || len < 0) {
                    return ChainError.ADDRESS_OUTSIDE_GUEST; // len < 0: over 2 GiB in one buffer, never sane
                }
                if (writable) {
                    out.writableBytes += len;
                } else {
                    if (out.writableBytes != 0) {
                        return ChainError.READABLE_AFTER_WRITABLE;
                    }
                    out.readableBytes += len;
                }
                out.lastAddress = a;
                out.lastLength = len;
                out.lastGpa = addr;
                if (out.count == out.capacity()) {
                    // Keep walking: a chain that is sound but for its length still gets a status byte (its last
                    // buffer's last byte), so every later buffer is checked like the ones we keep.
                    overflow = true;
                } else {
                    if (!writable) {
                        out.readable++;
                    }
                    out.address[out.count] = a;
                    out.length[out.count] = len;
                    out.gpa[out.count] = addr;
                    out.count++;
                }
            } else if (!writable && out.writableBytes != 0) {
                return ChainError.READABLE_AFTER_WRITABLE;
            }
            if ((flags & F_NEXT) == 0) {
                return overflow ? ChainError.TOO_MANY_BUFFERS : ChainError.OK;
            }
            if (next >= tableSize) {
                return ChainError.NEXT_OUT_OF_RANGE;
            }
            i = next;
        }
    }

    /** Writes a used entry; not visible to the driver until {@link #publishUsed()}. */
    public void pushUsed(final int head, final int len) {
        final long off = 4 + 8L * (nextUsed & mask);
        used.set(U32, off, head);
        used.set(U32, off + 4, len);
        logUsed(off, 8);
        nextUsed = (nextUsed + 1) & 0xffff;
        if (inflight != null) {
            inflight.linked(head);
        }
    }

    /** Publishes pushed used entries and signals the call eventfd if the driver asked for it. */
    public void publishUsed() {
        if (nextUsed == publishedUsed) {
            return;
        }
        final int old = publishedUsed;
        // Release pairs with the driver's read barrier after it reads used->idx: the used entries written by
        // pushUsed (and the status bytes and data written before them) are visible before the new index.
        IDX.setRelease(used, 2L, (short) nextUsed);
        logUsed(2, 2);
        publishedUsed = nextUsed;
        if (inflight != null) {
            inflight.published(nextUsed); // after the index: a crash in between leaves the batch for the repair
        }
        if (needsSignal(old, nextUsed)) {
            if (callFd >= 0) {
                EventFd.signal(callFd);
            }
        }
    }

    private boolean needsSignal(final int old, final int now) {
        // Full fence: expose the new used index before reading used_event / avail flags, or we may miss the
        // driver re-enabling interrupts (pairs with the driver's barrier between writing used_event and reading used->idx).
        VarHandle.fullFence();
        if (!eventIdx) {
            return (avail.get(U16, 0) & AVAIL_F_NO_INTERRUPT) == 0;
        }
        final int usedEvent = Short.toUnsignedInt(avail.get(U16, 4 + 2L * size));
        final int v = signalledValid ? signalledUsed : old;
        signalledUsed = now;
        signalledValid = true;
        // vring_need_event: signal if usedEvent lies in [v, now).
        return ((now - usedEvent - 1) & 0xffff) < ((now - v) & 0xffff);
    }

    /** Asks the driver not to kick while we are polling. */
    public void disableNotifications() {
        if (!eventIdx) {
            used.set(U16, 0, USED_F_NO_NOTIFY);
            logUsed(0, 2);
        }
        // With EVENT_IDX the avail_event we last wrote is behind, so the driver stops kicking on its own.
    }

    /**
     * Asks the driver to kick on the next new entry, then re-checks the ring.
     *
     * @return true if entries arrived meanwhile (do not sleep)
     */
    public boolean enableNotifications() {
        if (eventIdx) {
            used.set(U16, 4 + 8L * size, (short) lastAvail);
            logUsed(4 + 8L * size, 2);
        } else {
            used.set(U16, 0, (short) 0);
            logUsed(0, 2);
        }
        // Full fence: our avail_event / flags write must be visible before we re-read avail->idx; pairs with the
        // driver's barrier between publishing avail->idx and reading avail_event (else a kick is lost).
        VarHandle.fullFence();
        return pending() > 0;
    }
}
