package io.lazyblk.tools.frontend;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.time.Duration;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;

/**
 * Synchronous virtio-blk requests over one {@link DriverQueue}, one at a time, for tests: each helper builds the
 * chain {header (device-readable), data, status byte (device-writable)}, publishes it, waits for the completion
 * with a deadline and returns the status byte (and data). A device that does not answer in time fails the call
 * with {@link CompletionTimeoutException}; the client is unusable afterwards (the request may still complete).
 *
 * <p>Buffers are allocated once in guest RAM; the returned arrays are copies. Not thread-safe: one client per
 * queue, used by one thread.
 */
public final class BlkClient {
    public static final int DEFAULT_MAX_DATA = 1 << 20;
    /**
     * Poll the used ring this long before sleeping on the call eventfd: a request served from page cache
     * completes in tens of microseconds, and a sleep/wake round trip through poll(2) costs about as much.
     */
    private static final long SPIN_NANOS = 50_000;
    /** Written to the status byte before submitting, so "the device wrote no status" is visible. */
    public static final int NO_STATUS = 0xff;
    /** Fills device-writable data before submitting, so bytes the device did not write are recognizable. */
    public static final byte POISON = (byte) 0xa5;

    private final DriverQueue queue;
    private final int maxData;
    private final long headerGpa;
    private final long statusGpa;
    private final long dataGpa;
    private final MemorySegment header;
    private final MemorySegment status;
    private final MemorySegment data;
    private boolean indirect;
    private int segmentBytes;
    private long timeoutNanos = FrontendConfig.DEFAULT_REPLY_TIMEOUT.toNanos();
    private String broken;

    /** A client on {@code queue} with a {@code maxDataBytes} data buffer allocated from {@code ram}. */
    public BlkClient(final DriverQueue queue, final GuestRam ram, final int maxDataBytes) {
        this.queue = queue;
        this.maxData = maxDataBytes;
        this.headerGpa = ram.allocate(VirtioBlk.HEADER_SIZE, 16);
        this.statusGpa = ram.allocate(1, 1);
        this.dataGpa = ram.allocate(maxDataBytes, 4096);
        this.header = ram.segment(headerGpa, VirtioBlk.HEADER_SIZE);
        this.status = ram.segment(statusGpa, 1);
        this.data = ram.segment(dataGpa, maxDataBytes);
        this.segmentBytes = maxDataBytes;
    }

    /**
     * A client on queue {@code queueIndex} of {@code fe} with a 1 MiB buffer; data buffers are split at the
     * device's size_max when SIZE_MAX was negotiated.
     */
    public BlkClient(final VhostUserFrontend fe, final int queueIndex) {
        this(fe.queue(queueIndex), fe.ram(), DEFAULT_MAX_DATA);
        final int sizeMax = fe.blkConfig().sizeMax();
        if (fe.hasFeature(VirtioBlk.F_SIZE_MAX) && sizeMax > 0) {
            segmentBytes = Math.min(segmentBytes, sizeMax);
        }
    }

    /** Submit requests through an indirect table (the queue must have been created with them). */
    public BlkClient indirect(final boolean on) {
        this.indirect = on;
        return this;
    }

    /** Split data into descriptors of at most {@code bytes} each (more descriptors per chain). */
    public BlkClient segmentBytes(final int bytes) {
        if (bytes <= 0) {
            throw new IllegalArgumentException("segment size " + bytes);
        }
        this.segmentBytes = bytes;
        return this;
    }

    /** How long to wait for each completion. */
    public BlkClient timeout(final Duration d) {
        this.timeoutNanos = d.toNanos();
        return this;
    }

    public DriverQueue queue() {
        return queue;
    }

    /** VIRTIO_BLK_T_IN of {@code length} bytes at {@code sector}. */
    public BlkResponse read(final long sector, final int length) throws CompletionTimeoutException {
        return request(VirtioBlk.T_IN, sector, null, length);
    }

    /** VIRTIO_BLK_T_OUT of {@code bytes} at {@code sector}; returns the status byte. */
    public int write(final long sector, final byte[] bytes) throws CompletionTimeoutException {
        return request(VirtioBlk.T_OUT, sector, bytes, 0).status();
    }

    public int flush() throws CompletionTimeoutException {
        return request(VirtioBlk.T_FLUSH, 0, null, 0).status();
    }

    /** VIRTIO_BLK_T_GET_ID into a 20-byte buffer. */
    public BlkResponse getId() throws CompletionTimeoutException {
        return request(VirtioBlk.T_GET_ID, 0, null, VirtioBlk.ID_BYTES);
    }

    public int discard(final long sector, final int numSectors) throws CompletionTimeoutException {
        return request(VirtioBlk.T_DISCARD, 0, segment(sector, numSectors, 0), 0).status();
    }

    public int writeZeroes(final long sector, final int numSectors, final boolean unmap) throws CompletionTimeoutException {
        return request(VirtioBlk.T_WRITE_ZEROES, 0, segment(sector, numSectors, unmap ? VirtioBlk.WRITE_ZEROES_FLAG_UNMAP : 0), 0)
            .status();
    }

    /** One struct virtio_blk_discard_write_zeroes. */
    public static byte[] segment(final long sector, final int numSectors, final int flags) {
        final MemorySegment s = MemorySegment.ofArray(new byte[VirtioBlk.SEGMENT_SIZE]);
        s.set(ValueLayout.JAVA_LONG_UNALIGNED, 0, sector);
        s.set(ValueLayout.JAVA_INT_UNALIGNED, 8, numSectors);
        s.set(ValueLayout.JAVA_INT_UNALIGNED, 12, flags);
        return s.toArray(JAVA_BYTE);
    }

    /**
     * Any request: header {@code {type, 0, sector}}, then {@code out} as device-readable data (may be null),
     * then {@code inLength} device-writable bytes, then the status byte.
     */
    public BlkResponse request(final int type, final long sector, final byte[] out, final int inLength)
        throws CompletionTimeoutException {
        if (broken != null) {
            throw new IllegalStateException("client unusable since an earlier request timed out: " + broken);
        }
        final int outLength = out == null ? 0 : out.length;
        final long inOffset = (outLength + 511L) & -512L;
        if (inLength < 0 || inOffset + inLength > maxData) {
            throw new IllegalArgumentException(outLength + " bytes out and " + inLength + " in exceed the " + maxData + "-byte buffer");
        }
        // Plain writes of header, data and status: publish()'s release store of avail->idx orders them first.
        header.set(ValueLayout.JAVA_INT_UNALIGNED, VirtioBlk.HEADER_TYPE, type);
        header.set(ValueLayout.JAVA_INT_UNALIGNED, 4, 0);
        header.set(ValueLayout.JAVA_LONG_UNALIGNED, VirtioBlk.HEADER_SECTOR, sector);
        status.set(JAVA_BYTE, 0, (byte) NO_STATUS);
        if (outLength > 0) {
            MemorySegment.copy(out, 0, data, JAVA_BYTE, 0, outLength);
        }
        data.asSlice(inOffset, inLength).fill(POISON);
        queue.add(headerGpa, VirtioBlk.HEADER_SIZE, false);
        addSplit(dataGpa, outLength, false);
        addSplit(dataGpa + inOffset, inLength, true);
        queue.add(statusGpa, 1, true);
        final int head = indirect ? queue.submitIndirect() : queue.submit();
        if (head < 0) {
            queue.clearPending();
            throw new IllegalStateException("queue " + queue.index() + " has no room for the chain ("
                + queue.freeDescriptors() + " descriptors free, " + queue.inFlight() + " chains in flight)");
        }
        queue.publish();
        awaitCompletion(type, sector);
        final int got = queue.reap();
        if (got != head) {
            throw new IllegalStateException("queue " + queue.index() + ": completed head " + got + ", submitted " + head);
        }
        // Plain reads: reap()'s acquire load of used->idx ordered the device's data and status writes before it.
        final byte[] in = new byte[inLength];
        MemorySegment.copy(data, JAVA_BYTE, inOffset, in, 0, inLength);
        return new BlkResponse(Byte.toUnsignedInt(status.get(JAVA_BYTE, 0)), in, queue.lastLength());
    }

    private void addSplit(final long gpa, final int length, final boolean writable) {
        for (int done = 0; done < length; done += segmentBytes) {
            queue.add(gpa + done, Math.min(segmentBytes, length - done), writable);
        }
    }

    private void awaitCompletion(final int type, final long sector) throws CompletionTimeoutException {
        final long start = System.nanoTime();
        while (!queue.hasUsed()) {
            final long waited = System.nanoTime() - start;
            if (waited < SPIN_NANOS) {
                Thread.onSpinWait();
                continue;
            }
            if (waited >= timeoutNanos || !queue.awaitUsed(timeoutNanos - waited)) {
                broken = "request type " + type + " at sector " + sector + " on queue " + queue.index()
                    + " not completed within " + timeoutNanos / 1_000_000 + " ms (avail idx " + queue.availIdx()
                    + ", used idx " + queue.usedIdx() + ", " + queue.kicks() + " kicks)";
                throw new CompletionTimeoutException(broken);
            }
        }
    }
}
