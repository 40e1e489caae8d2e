package io.lazyblk.tools.frontend;

import io.lazyblk.sys.EventFd;
import io.lazyblk.sys.LibC;
import io.lazyblk.sys.NativeException;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.VarHandle;

import static io.lazyblk.tools.frontend.VringLayout.AVAIL_FLAGS;
import static io.lazyblk.tools.frontend.VringLayout.AVAIL_IDX;
import static io.lazyblk.tools.frontend.VringLayout.AVAIL_RING;
import static io.lazyblk.tools.frontend.VringLayout.DESC_ADDR;
import static io.lazyblk.tools.frontend.VringLayout.DESC_FLAGS;
import static io.lazyblk.tools.frontend.VringLayout.DESC_LEN;
import static io.lazyblk.tools.frontend.VringLayout.DESC_NEXT;
import static io.lazyblk.tools.frontend.VringLayout.DESC_SIZE;
import static io.lazyblk.tools.frontend.VringLayout.USED_ELEM_SIZE;
import static io.lazyblk.tools.frontend.VringLayout.USED_FLAGS;
import static io.lazyblk.tools.frontend.VringLayout.USED_IDX;
import static io.lazyblk.tools.frontend.VringLayout.USED_RING;
import static io.lazyblk.tools.frontend.VringLayout.VIRTQ_AVAIL_F_NO_INTERRUPT;
import static io.lazyblk.tools.frontend.VringLayout.VIRTQ_DESC_F_INDIRECT;
import static io.lazyblk.tools.frontend.VringLayout.VIRTQ_DESC_F_NEXT;
import static io.lazyblk.tools.frontend.VringLayout.VIRTQ_DESC_F_WRITE;
import static io.lazyblk.tools.frontend.VringLayout.VIRTQ_USED_F_NO_NOTIFY;

/**
 * The driver side of one split virtqueue in {@link GuestRam}: what a guest's virtio driver does. Builds
 * descriptor chains (direct or through an indirect table) from a free list, publishes them in the avail ring,
 * kicks the device honouring {@code EVENT_IDX} or {@code VIRTQ_USED_F_NO_NOTIFY}, and harvests the used ring.
 *
 * <p>By default the queue is in polling mode: it tells the device not to signal the call eventfd
 * ({@code used_event} kept half the index space ahead, or {@code VIRTQ_AVAIL_F_NO_INTERRUPT}); {@link #awaitUsed}
 * re-enables signals only for the duration of a blocking wait. Nothing on the submit/publish/reap path allocates.
 *
 * <p>The {@code raw...} methods write any value anywhere in the rings, bypassing the free list, for tests that
 * feed a back end hostile input; do not mix them with {@link #submit()} on the same descriptors.
 *
 * <p>Not thread-safe: one thread owns the queue (as a guest vCPU owns its virtqueue lock).
 */
public final class DriverQueue implements AutoCloseable {
    public static final int DEFAULT_SIZE = 256;
    /** Per-head indirect table entries: a virtio-blk request of header, up to 62 data buffers and status. */
    public static final int DEFAULT_INDIRECT_ENTRIES = 64;
    /**
     * While polling we keep used_event this far ahead of the last used index we saw. The device's used index can
     * be at most {@code size} (≤ 32768) past what we saw, so an event half the 16-bit space away is never crossed.
     */
    private static final int POLLING_USED_EVENT_LEAD = 0x8000;
    private static final long PAGE = 4096;
    private static final short POLLIN = 1;

    private static final ValueLayout.OfShort U16 = ValueLayout.JAVA_SHORT;
    private static final ValueLayout.OfInt U32 = ValueLayout.JAVA_INT;
    private static final ValueLayout.OfLong U64 = ValueLayout.JAVA_LONG;
    /** Acquire/release access to avail->idx and used->idx (2-byte aligned: the rings are page aligned). */
    private static final VarHandle IDX = ValueLayout.JAVA_SHORT.varHandle();

    private final int index;
    private final int size;
    private final int mask;
    private final boolean eventIdx;
    private final long descGpa;
    private final long availGpa;
    private final long usedGpa;
    private final MemorySegment desc;
    private final MemorySegment avail;
    private final MemorySegment used;
    private final long usedEventOffset;
    private final long availEventOffset;
    private final int indirectEntries;
    private final long indirectGpa;
    private final MemorySegment indirect;
    private final int kickFd;
    private final int callFd;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment pollFd;

    private final DescriptorFreeList freeList;
    private final long[] pendingAddr;
    private final int[] pendingLen;
    private final boolean[] pendingWritable;
    private int pendingCount;

    /** Next avail index we will fill, and the value last stored to avail->idx (free-running, masked to 16 bits). */
    private int availShadow;
    private int availPublished;
    /** Next used entry we will read, and the used->idx we last loaded. */
    private int lastUsed;
    private int cachedUsedIdx;
    private int lastLength;
    private long kicks;
    /** poll(2) calls {@link #awaitUsed} made, and how many of them found the call eventfd signalled. */
    private long sleeps;
    private long wakeups;
    private boolean closed;

    private DriverQueue(final GuestRam ram, final int index, final int size, final boolean eventIdx,
                        final int indirectEntries, final int base, final boolean blockingEventFds) throws NativeException {
        if (!VringLayout.validSize(size)) {
            throw new IllegalArgumentException("queue size " + size + " is not a power of two in 1..32768");
        }
        this.index = index;
        this.size = size;
        this.mask = size - 1;
        this.eventIdx = eventIdx;
        // Page alignment (beyond the spec's 16/2/4) keeps the driver-written avail ring and the device-written
        // used ring on different cache lines.
        this.descGpa = ram.allocate(VringLayout.descTableBytes(size), PAGE);
        this.availGpa = ram.allocate(VringLayout.availBytes(size), PAGE);
        this.usedGpa = ram.allocate(VringLayout.usedBytes(size), PAGE);
        this.desc = ram.segment(descGpa, VringLayout.descTableBytes(size));
        this.avail = ram.segment(availGpa, VringLayout.availBytes(size));
        this.used = ram.segment(usedGpa, VringLayout.usedBytes(size));
        this.usedEventOffset = VringLayout.usedEventOffset(size);
        this.availEventOffset = VringLayout.availEventOffset(size);
        this.indirectEntries = indirectEntries;
        if (indirectEntries > 0) {
            final long bytes = (long) size * indirectEntries * DESC_SIZE;
            this.indirectGpa = ram.allocate(bytes, PAGE);
            this.indirect = ram.segment(indirectGpa, bytes);
        } else {
            this.indirectGpa = 0;
            this.indirect = null;
        }
        this.freeList = new DescriptorFreeList(size);
        final int pendingCapacity = Math.max(size, indirectEntries);
        this.pendingAddr = new long[pendingCapacity];
        this.pendingLen = new int[pendingCapacity];
        this.pendingWritable = new boolean[pendingCapacity];
        this.availShadow = base & 0xffff;
        this.availPublished = availShadow;
        this.lastUsed = availShadow;
        this.cachedUsedIdx = availShadow;
        // The rings are ours until SET_VRING_ADDR hands them over: plain stores suffice, the socket send orders them.
        avail.set(U16, AVAIL_IDX, (short) availShadow);
        used.set(U16, USED_IDX, (short) availShadow);
        // As if the device had asked for a kick on the first entry: a device that has popped nothing has not
        // written avail_event yet, and a stale 0 would suppress every kick until the index wraps past 0.
        used.set(U16, availEventOffset, (short) availShadow);
        this.pollFd = arena.allocate(8, 4);
        int kick = -1;
        // Non-blocking like QEMU's event notifiers, unless a test asks for blocking ones; the back end shares the flag.
        final int eventFdFlags = blockingEventFds ? 0 : LibC.EFD_NONBLOCK;
        try {
            kick = LibC.eventfd(eventFdFlags);
            this.kickFd = kick;
            this.callFd = LibC.eventfd(eventFdFlags);
        } catch (final NativeException e) {
            LibC.close(kick);
            arena.close();
            throw e;
        }
        suppressSignals();
    }

    /**
     * Lays out a queue of {@code size} entries in {@code ram} with two fresh eventfds.
     *
     * @param eventIdx whether {@code VIRTIO_RING_F_EVENT_IDX} was negotiated
     * @param indirectEntries entries of the per-head indirect table ({@code 0}: no {@link #submitIndirect()})
     * @param base the ring index both rings start at (what SET_VRING_BASE will say), to test 16-bit wrap-around
     */
    public static DriverQueue create(final GuestRam ram, final int index, final int size, final boolean eventIdx,
                                     final int indirectEntries, final int base) throws NativeException {
        return new DriverQueue(ram, index, size, eventIdx, indirectEntries, base, false);
    }

    /** Like {@link #create(GuestRam, int, int, boolean, int, int)}; {@code blockingEventFds} leaves out {@code EFD_NONBLOCK}. */
    public static DriverQueue create(final GuestRam ram, final int index, final int size, final boolean eventIdx,
                                     final int indirectEntries, final int base, final boolean blockingEventFds)
        throws NativeException {
        return new DriverQueue(ram, index, size, eventIdx, indirectEntries, base, blockingEventFds);
    }

    // ---------------------------------------------------------------- building and submitting chains

    /** Appends a buffer to the chain being built; {@code writable} means device-writable. */
    public DriverQueue add(final long gpa, final int length, final boolean writable) {
        if (pendingCount == pendingAddr.length) {
            throw new IllegalStateException("chain longer than " + pendingAddr.length + " buffers");
        }
        pendingAddr[pendingCount] = gpa;
        pendingLen[pendingCount] = length;
        pendingWritable[pendingCount] = writable;
        pendingCount++;
        return this;
    }

    /** Forgets the chain being built. */
    public void clearPending() {
        pendingCount = 0;
    }

    /**
     * Writes the chain built with {@link #add} into free descriptors and places its head in the avail ring
     * (not yet visible to the device: see {@link #publish()}).
     *
     * @return the head descriptor index, or -1 if too few descriptors are free (the chain is kept for a retry)
     */
    public int submit() {
        final int n = pendingCount;
        if (n == 0) {
            throw new IllegalStateException("submit of an empty chain");
        }
        if (n > freeList.free()) {
            return -1;
        }
        final int head = freeList.first();
        int d = head;
        for (int k = 0; k < n; k++) {
            final long off = (long) d * DESC_SIZE;
            final boolean last = k == n - 1;
            final int flags = (pendingWritable[k] ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT);
            desc.set(U64, off + DESC_ADDR, pendingAddr[k]);
            desc.set(U32, off + DESC_LEN, pendingLen[k]);
            desc.set(U16, off + DESC_FLAGS, (short) flags);
            desc.set(U16, off + DESC_NEXT, (short) (last ? 0 : freeList.after(d)));
            if (!last) {
                d = freeList.after(d);
            }
        }
        freeList.take(d, n);
        pendingCount = 0;
        makeAvailable(head);
        return head;
    }

    /**
     * Like {@link #submit()}, but writes the chain into this head's indirect table and uses one ring descriptor
     * with {@code VIRTQ_DESC_F_INDIRECT}.
     *
     * @return the head index, or -1 if no descriptor is free
     */
    public int submitIndirect() {
        final int n = pendingCount;
        if (indirect == null) {
            throw new IllegalStateException("queue " + index + " was created without indirect tables");
        }
        if (n == 0 || n > indirectEntries) {
            throw new IllegalStateException("indirect chain of " + n + " buffers, table holds " + indirectEntries);
        }
        if (freeList.free() == 0) {
            return -1;
        }
        final int head = freeList.first();
        final long tableOffset = (long) head * indirectEntries * DESC_SIZE;
        for (int k = 0; k < n; k++) {
            final boolean last = k == n - 1;
            VringLayout.writeDescriptor(indirect, tableOffset / DESC_SIZE + k, pendingAddr[k], pendingLen[k],
                (pendingWritable[k] ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT), last ? 0 : k + 1);
        }
        pendingCount = 0;
        return takeIndirectHead(indirectGpa + tableOffset, n);
    }

    /**
     * Submits a caller-written indirect table of {@code entries} descriptors at {@code tableGpa} (a benchmark
     * reuses one table per request slot and rewrites nothing). Returns the head, or -1 if no descriptor is free.
     */
    public int submitIndirectTable(final long tableGpa, final int entries) {
        if (freeList.free() == 0) {
            return -1;
        }
        return takeIndirectHead(tableGpa, entries);
    }

    private int takeIndirectHead(final long tableGpa, final int entries) {
        final int head = freeList.first();
        final long off = (long) head * DESC_SIZE;
        desc.set(U64, off + DESC_ADDR, tableGpa);
        desc.set(U32, off + DESC_LEN, entries * DESC_SIZE);
        desc.set(U16, off + DESC_FLAGS, (short) VIRTQ_DESC_F_INDIRECT);
        desc.set(U16, off + DESC_NEXT, (short) 0);
        freeList.take(head, 1);
        makeAvailable(head);
        return head;
    }

    private void makeAvailable(final int head) {
        avail.set(U16, AVAIL_RING + 2L * (availShadow & mask), (short) head);
        availShadow = (availShadow + 1) & 0xffff;
    }

    /**
     * Makes every chain submitted since the last call visible to the device and kicks it if it asked to be
     * kicked ({@code avail_event} crossed with EVENT_IDX, else {@code VIRTQ_USED_F_NO_NOTIFY} clear).
     *
     * @return whether the kick eventfd was signalled
     */
    public boolean publish() {
        final int now = availShadow;
        final int old = availPublished;
        if (now == old) {
            return false;
        }
        // Release pairs with the device's acquire load of avail->idx: the descriptors, indirect tables, request
        // bytes and ring entries written above are visible to it before the index that exposes them.
        IDX.setRelease(avail, (long) AVAIL_IDX, (short) now);
        availPublished = now;
        // Full fence: our avail->idx store must be visible before we load avail_event / used->flags. It pairs with
        // the device's fence between storing avail_event (or clearing NO_NOTIFY) and re-reading avail->idx before
        // it sleeps; without it both sides can miss each other and the device sleeps on a non-empty ring.
        VarHandle.fullFence();
        final boolean need = eventIdx
            ? VringLayout.needEvent(Short.toUnsignedInt(used.get(U16, availEventOffset)), now, old)
            : (used.get(U16, USED_FLAGS) & VIRTQ_USED_F_NO_NOTIFY) == 0;
        if (need) {
            kick();
        }
        return need;
    }

    /** Signals the kick eventfd unconditionally. */
    public void kick() {
        kicks++;
        EventFd.signal(kickFd);
    }

    // ---------------------------------------------------------------- harvesting completions

    /** Whether the device has published a used entry we have not reaped (one acquire load when none is cached). */
    public boolean hasUsed() {
        if (lastUsed != cachedUsedIdx) {
            return true;
        }
        loadUsedIdx();
        return lastUsed != cachedUsedIdx;
    }

    private void loadUsedIdx() {
        // Acquire pairs with the device's release store of used->idx: the used entries, status bytes and data it
        // wrote before publishing are visible to the reads that follow.
        final int idx = Short.toUnsignedInt((short) IDX.getAcquire(used, (long) USED_IDX));
        final int ahead = (idx - lastUsed) & 0xffff;
        if (ahead > size) {
            throw new IllegalStateException("queue " + index + ": device moved used->idx to " + idx + ", " + ahead
                + " entries past the last one reaped (" + lastUsed + "), more than the queue size " + size);
        }
        if (idx == cachedUsedIdx) {
            return;
        }
        cachedUsedIdx = idx;
        if (eventIdx) {
            // Keep used_event far ahead while polling (plain store: a late or lost update only costs a spurious signal).
            avail.set(U16, usedEventOffset, (short) (idx + POLLING_USED_EVENT_LEAD));
        }
    }

    /**
     * Takes the next used entry, returns its chain's descriptors to the free list, and returns its head index
     * ({@link #lastLength()} has the length the device wrote), or -1 if there is none.
     *
     * @throws IllegalStateException if the device returned a head that is not in flight (a back-end bug)
     */
    public int reap() {
        if (!hasUsed()) {
            return -1;
        }
        final long off = USED_RING + (long) USED_ELEM_SIZE * (lastUsed & mask);
        final int id = used.get(U32, off);
        lastLength = used.get(U32, off + 4);
        if (!freeList.inFlight(id)) {
            throw new IllegalStateException("queue " + index + ": device returned used id " + Integer.toUnsignedString(id)
                + " at used index " + lastUsed + ", which is not the head of a chain in flight");
        }
        lastUsed = (lastUsed + 1) & 0xffff;
        freeList.release(id);
        return id;
    }

    /** Bytes the device reported written for the entry {@link #reap()} or {@link #reapRaw()} last returned. */
    public int lastLength() {
        return lastLength;
    }

    /**
     * Waits up to {@code timeoutNanos} for a used entry, sleeping on the call eventfd: enables device signals
     * ({@code used_event} at the next entry with EVENT_IDX, else {@code VIRTQ_AVAIL_F_NO_INTERRUPT} cleared), re-checks
     * used->idx after the fence in {@link #requestSignal} (an entry the device published while signals were off would
     * otherwise never signal), sleeps in poll(2), and suppresses signals again before returning. Allocates nothing.
     *
     * @return whether a used entry is ready
     */
    public boolean awaitUsed(final long timeoutNanos) {
        if (hasUsed()) {
            return true;
        }
        final long deadline = System.nanoTime() + timeoutNanos;
        requestSignal();
        try {
            while (true) {
                if (lastUsed != cachedUsedIdx || peekUsedIdx() != lastUsed) {
                    return true;
                }
                final long left = deadline - System.nanoTime();
                if (left <= 0) {
                    return false;
                }
                pollFd.set(ValueLayout.JAVA_INT, 0, callFd);
                pollFd.set(ValueLayout.JAVA_SHORT, 4, POLLIN);
                pollFd.set(ValueLayout.JAVA_SHORT, 6, (short) 0);
                sleeps++;
                final int rc = LibC.rawPoll(pollFd, 1, (int) Math.min(Integer.MAX_VALUE, (left + 999_999) / 1_000_000));
                if (rc > 0) {
                    wakeups++;
                    EventFd.drain(callFd);
                }
            }
        } finally {
            suppressSignals();
        }
    }

    /**
     * Asks the device to signal the call eventfd when it publishes the used entry we reap next (as a driver about to
     * wait for an interrupt does). Polling ({@link #hasUsed()} seeing a new index) suppresses signals again.
     */
    public void requestSignal() {
        if (eventIdx) {
            avail.set(U16, usedEventOffset, (short) lastUsed); // signal when the entry at lastUsed is published
        } else {
            avail.set(U16, AVAIL_FLAGS, (short) 0);
        }
        // Full fence: the used_event / flags store must be visible before we re-load used->idx. Pairs with the
        // device's fence between publishing used->idx and loading used_event: either it sees our request for a
        // signal, or we see its new entry.
        VarHandle.fullFence();
    }

    /** used->idx with acquire semantics, without caching it or checking it. */
    private int peekUsedIdx() {
        // Acquire: pairs with the device's release of used->idx, as in loadUsedIdx.
        return Short.toUnsignedInt((short) IDX.getAcquire(used, (long) USED_IDX));
    }

    /** Plain stores: the device may see them late, which costs at most one spurious signal we drain later. */
    private void suppressSignals() {
        if (eventIdx) {
            avail.set(U16, usedEventOffset, (short) (lastUsed + POLLING_USED_EVENT_LEAD));
        } else {
            avail.set(U16, AVAIL_FLAGS, (short) VIRTQ_AVAIL_F_NO_INTERRUPT);
        }
    }

    // ---------------------------------------------------------------- raw access for hostile-input tests

    /** Writes descriptor {@code i} (0..size-1) of the ring's table with any field values. */
    public void rawDescriptor(final int i, final long addr, final int len, final int flags, final int next) {
        if (i < 0 || i >= size) {
            throw new IndexOutOfBoundsException("descriptor " + i + " of a " + size + "-entry table");
        }
        VringLayout.writeDescriptor(desc, i, addr, len, flags, next);
    }

    /** Puts any 16-bit value in the next avail ring slot (not yet published) without touching the free list. */
    public void rawAvail(final int head) {
        avail.set(U16, AVAIL_RING + 2L * (availShadow & mask), (short) head);
        availShadow = (availShadow + 1) & 0xffff;
    }

    /** Stores any value to avail->idx (release, as {@link #publish()}); later submissions continue from it. */
    public void rawAvailIdx(final int idx) {
        availShadow = idx & 0xffff;
        availPublished = availShadow;
        // Release: pairs with the device's acquire of avail->idx, so ring entries written before are visible.
        IDX.setRelease(avail, (long) AVAIL_IDX, (short) idx);
    }

    /** Publishes raw avail entries like {@link #publish()}, but always kicks. */
    public void rawPublishAndKick() {
        rawAvailIdx(availShadow);
        kick();
    }

    /**
     * Takes the next used entry without checking or freeing anything; returns its id (any 32-bit value, so
     * compare with -1 via {@link #hasUsed()} first) and sets {@link #lastLength()}.
     */
    public int reapRaw() {
        if (lastUsed == peekUsedIdx()) {
            throw new IllegalStateException("no used entry");
        }
        final long off = USED_RING + (long) USED_ELEM_SIZE * (lastUsed & mask);
        final int id = used.get(U32, off);
        lastLength = used.get(U32, off + 4);
        lastUsed = (lastUsed + 1) & 0xffff;
        cachedUsedIdx = lastUsed;
        return id;
    }

    /** The descriptor table itself, for tests that lay out chains by hand. */
    public MemorySegment descriptorTable() {
        return desc;
    }

    // ---------------------------------------------------------------- state

    /** used->idx as the device last published it (acquire). */
    public int usedIdx() {
        return peekUsedIdx();
    }

    /** The next avail index this driver will fill. */
    public int availIdx() {
        return availShadow;
    }

    /** avail_event as the device last wrote it (meaningful with EVENT_IDX). */
    public int availEvent() {
        return Short.toUnsignedInt(used.get(U16, availEventOffset));
    }

    public int index() {
        return index;
    }

    public int size() {
        return size;
    }

    public boolean eventIdx() {
        return eventIdx;
    }

    public int freeDescriptors() {
        return freeList.free();
    }

    /** Chains submitted and not yet reaped. */
    public int inFlight() {
        return freeList.chains();
    }

    /** Times the kick eventfd was signalled. */
    public long kicks() {
        return kicks;
    }

    /** Times {@link #awaitUsed} went to sleep in poll(2) on the call eventfd (a blocked wait, or one a stale signal ended at once). */
    public long sleeps() {
        return sleeps;
    }

    /** Times such a poll(2) returned because the call eventfd was signalled (rather than at its timeout). */
    public long wakeups() {
        return wakeups;
    }

    public long descGpa() {
        return descGpa;
    }

    public long availGpa() {
        return availGpa;
    }

    public long usedGpa() {
        return usedGpa;
    }

    /** Owned by this queue; the back end gets a duplicate through SCM_RIGHTS. */
    public int kickFd() {
        return kickFd;
    }

    public int callFd() {
        return callFd;
    }

    @Override
    public void close() {
        if (!closed) {
            closed = true;
            LibC.close(kickFd);
            LibC.close(callFd);
            arena.close();
        }
    }
}
