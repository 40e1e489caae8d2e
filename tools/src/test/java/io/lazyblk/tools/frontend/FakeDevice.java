package io.lazyblk.tools.frontend;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.VarHandle;
import java.util.ArrayList;
import java.util.List;

import static io.lazyblk.tools.frontend.VringLayout.DESC_SIZE;

/**
 * The device side of a {@link DriverQueue}'s rings, hand-written and minimal, so driver behaviour can be checked
 * without a back end: reads the avail ring as a device would, walks chains (one level of indirection), publishes
 * used entries, and sets avail_event / used flags. Not a validator: it trusts the driver under test.
 */
final class FakeDevice {
    /** One buffer as the device sees it. */
    record Buffer(long addr, int len, int flags) {
    }

    private static final VarHandle IDX = ValueLayout.JAVA_SHORT.varHandle();
    private final MemorySegment ram;
    private final MemorySegment desc;
    private final MemorySegment avail;
    private final MemorySegment used;
    private final int size;
    private int lastAvail;
    private int usedIdx;

    FakeDevice(final GuestRam ram, final DriverQueue q, final int base) {
        this.ram = ram.memory();
        this.size = q.size();
        this.desc = ram.segment(q.descGpa(), VringLayout.descTableBytes(size));
        this.avail = ram.segment(q.availGpa(), VringLayout.availBytes(size));
        this.used = ram.segment(q.usedGpa(), VringLayout.usedBytes(size));
        this.lastAvail = base;
        this.usedIdx = base;
    }

    int availIdx() {
        return Short.toUnsignedInt((short) IDX.getAcquire(avail, 2L));
    }

    int pending() {
        return (availIdx() - lastAvail) & 0xffff;
    }

    int pop() {
        final int head = Short.toUnsignedInt(avail.get(ValueLayout.JAVA_SHORT, 4 + 2L * (lastAvail & (size - 1))));
        lastAvail = (lastAvail + 1) & 0xffff;
        return head;
    }

    /** The chain at {@code head}, with an indirect table expanded in place of its descriptor. */
    List<Buffer> chain(final int head) {
        final List<Buffer> out = new ArrayList<>();
        final Buffer first = read(desc, head);
        if ((first.flags & VringLayout.VIRTQ_DESC_F_INDIRECT) != 0) {
            final MemorySegment table = ram.asSlice(first.addr, first.len);
            walk(table, 0, first.len / DESC_SIZE, out);
        } else {
            walk(desc, head, size, out);
        }
        return out;
    }

    private static void walk(final MemorySegment table, final int start, final int limit, final List<Buffer> out) {
        int i = start;
        for (int n = 0; n < limit; n++) {
            final Buffer b = read(table, i);
            out.add(b);
            if ((b.flags & VringLayout.VIRTQ_DESC_F_NEXT) == 0) {
                return;
            }
            i = Short.toUnsignedInt(table.get(ValueLayout.JAVA_SHORT_UNALIGNED, (long) i * DESC_SIZE + 14));
        }
        throw new AssertionError("chain longer than its table");
    }

    private static Buffer read(final MemorySegment table, final int i) {
        final long off = (long) i * DESC_SIZE;
        return new Buffer(table.get(ValueLayout.JAVA_LONG_UNALIGNED, off), table.get(ValueLayout.JAVA_INT_UNALIGNED, off + 8),
            Short.toUnsignedInt(table.get(ValueLayout.JAVA_SHORT_UNALIGNED, off + 12)));
    }

    /** Writes a used entry and publishes it at once (release). */
    void complete(final int id, final int len) {
        final long off = 4 + 8L * (usedIdx & (size - 1));
        used.set(ValueLayout.JAVA_INT, off, id);
        used.set(ValueLayout.JAVA_INT, off + 4, len);
        usedIdx = (usedIdx + 1) & 0xffff;
        IDX.setRelease(used, 2L, (short) usedIdx);
    }

    /** Publishes any used index (for hostile-device tests). */
    void publishUsedIdx(final int idx) {
        usedIdx = idx & 0xffff;
        IDX.setRelease(used, 2L, (short) usedIdx);
    }

    int usedIdx() {
        return usedIdx;
    }

    void setAvailEvent(final int v) {
        used.set(ValueLayout.JAVA_SHORT, VringLayout.availEventOffset(size), (short) v);
        VarHandle.fullFence();
    }

    void setUsedFlags(final int flags) {
        used.set(ValueLayout.JAVA_SHORT, 0, (short) flags);
        VarHandle.fullFence();
    }

    int usedEvent() {
        VarHandle.fullFence();
        return Short.toUnsignedInt(avail.get(ValueLayout.JAVA_SHORT, VringLayout.usedEventOffset(size)));
    }

    int availFlags() {
        VarHandle.fullFence();
        return Short.toUnsignedInt(avail.get(ValueLayout.JAVA_SHORT, 0));
    }
}
