package io.lazyblk.tools;

import io.lazyblk.tools.frontend.DriverQueue;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;
import io.lazyblk.tools.frontend.VringLayout;

import java.lang.foreign.MemorySegment;
import java.time.Duration;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Descriptor chains laid out by hand on one queue of a connected front end, to feed the engine requests a real
 * driver never sends: a request header, a status byte, a data area and an indirect table in guest RAM; descriptors
 * written at any index with any fields; and a submit that waits for the used entry against a deadline.
 * Not thread-safe (one test thread drives the queue).
 */
final class RawChains {
    /** What the status byte holds before each submit, so a device that wrote none is visible. */
    static final int NO_STATUS = 0xff;
    static final int READ = 0;
    static final int WRITE = VringLayout.VIRTQ_DESC_F_WRITE;
    static final int NEXT = VringLayout.VIRTQ_DESC_F_NEXT;
    static final int INDIRECT = VringLayout.VIRTQ_DESC_F_INDIRECT;
    static final int DATA_BYTES = 64 * 1024;
    static final int TABLE_ENTRIES = 256;
    static final Duration DEADLINE = Duration.ofSeconds(5);

    /** One used entry as the device published it, and the status byte as it left it. */
    record Used(int id, int length, int status) {
    }

    final DriverQueue q;
    final long headerGpa;
    final long statusGpa;
    final long dataGpa;
    final long tableGpa;
    private final MemorySegment header;
    private final MemorySegment status;
    private final MemorySegment data;
    private final MemorySegment table;

    RawChains(final VhostUserFrontend fe, final int queue) {
        final GuestRam ram = fe.ram();
        this.q = fe.queue(queue);
        this.headerGpa = ram.allocate(VirtioBlk.HEADER_SIZE, 16);
        this.statusGpa = ram.allocate(1, 1);
        this.dataGpa = ram.allocate(DATA_BYTES, 4096);
        this.tableGpa = ram.allocate((long) TABLE_ENTRIES * VringLayout.DESC_SIZE, 4096);
        this.header = ram.segment(headerGpa, VirtioBlk.HEADER_SIZE);
        this.status = ram.segment(statusGpa, 1);
        this.data = ram.segment(dataGpa, DATA_BYTES);
        this.table = ram.segment(tableGpa, (long) TABLE_ENTRIES * VringLayout.DESC_SIZE);
    }

    RawChains header(final int type, final long sector) {
        header.set(JAVA_INT_UNALIGNED, VirtioBlk.HEADER_TYPE, type);
        header.set(JAVA_INT_UNALIGNED, 4, 0);
        header.set(JAVA_LONG_UNALIGNED, VirtioBlk.HEADER_SECTOR, sector);
        return this;
    }

    /** Puts {@code bytes} at the start of the data area. */
    RawChains data(final byte[] bytes) {
        MemorySegment.copy(bytes, 0, data, JAVA_BYTE, 0, bytes.length);
        return this;
    }

    /** The first {@code length} bytes of the data area as they are now. */
    byte[] data(final int length) {
        return data.asSlice(0, length).toArray(JAVA_BYTE);
    }

    /** Descriptor {@code i} of the ring's own table. */
    RawChains desc(final int i, final long gpa, final int len, final int flags, final int next) {
        q.rawDescriptor(i, gpa, len, flags, next);
        return this;
    }

    /** Entry {@code i} of the indirect table at {@link #tableGpa}. */
    RawChains tableEntry(final int i, final long gpa, final int len, final int flags, final int next) {
        VringLayout.writeDescriptor(table, i, gpa, len, flags, next);
        return this;
    }

    /** Resets the status byte, puts {@code head} in the avail ring, publishes, kicks, and waits for one used entry. */
    Used submit(final int head) {
        status.set(JAVA_BYTE, 0, (byte) NO_STATUS);
        q.rawAvail(head);
        q.rawPublishAndKick();
        assertTrue(q.awaitUsed(DEADLINE.toNanos()), "the engine completed the chain at head " + head + " within " + DEADLINE);
        final int id = q.reapRaw();
        return new Used(id, q.lastLength(), status());
    }

    /**
     * A well-formed {header, data, status} chain through the queue's free list, with the data buffer at any guest
     * address (another region, say); waits for its completion.
     */
    Used request(final int type, final long sector, final long bufGpa, final int bufLen, final boolean bufWritable) {
        header(type, sector);
        status.set(JAVA_BYTE, 0, (byte) NO_STATUS);
        q.add(headerGpa, VirtioBlk.HEADER_SIZE, false).add(bufGpa, bufLen, bufWritable).add(statusGpa, 1, true);
        final int head = q.submit();
        assertTrue(head >= 0, "room on the queue");
        q.publish();
        assertTrue(q.awaitUsed(DEADLINE.toNanos()), "the engine completed the request within " + DEADLINE);
        assertEquals(head, q.reap());
        return new Used(head, q.lastLength(), status());
    }

    int status() {
        return Byte.toUnsignedInt(status.get(JAVA_BYTE, 0));
    }
}
