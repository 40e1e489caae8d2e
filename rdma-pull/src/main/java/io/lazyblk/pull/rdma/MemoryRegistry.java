package io.lazyblk.pull.rdma;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;

/**
 * Local keys for RDMA READ destinations: each distinct destination region is registered once (registration pins
 * memory and costs a system call, far too much per read) and its lkey cached; a destination inside a registered
 * region of a live arena is a lookup (binary search over preallocated arrays, no allocation). A registration
 * remembers its segment's scope: once that arena is closed, the same addresses may be reused by new memory the old
 * registration does not pin, so the entry no longer matches and is released at the next miss.
 *
 * <p>Plain bookkeeping over a {@link Registrar} (DiSNI's {@code IbvPd.regMr} in production, a fake in tests).
 * Thread-safety: confined to the transport thread, except {@link #close()} after that thread stopped.
 */
final class MemoryRegistry implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(MemoryRegistry.class);
    /** Returned by {@link #lkey} when the destination cannot be registered (heap memory, too large, refused). */
    static final long UNREGISTERED = -1;
    /** One registration can span at most this (DiSNI passes lengths as int). */
    static final long MAX_REGION_BYTES = Integer.MAX_VALUE;
    private static final long LOG_INTERVAL_NANOS = 1_000_000_000L;

    /** Registers memory for local writes by the device. */
    interface Registrar {
        Registration register(long address, long length) throws IOException;
    }

    /** One registered region. */
    interface Registration {
        int lkey();

        void deregister();
    }

    private final Registrar registrar;
    private final int capacity;
    private long[] starts;
    private long[] ends;
    private MemorySegment.Scope[] scopes;
    private Registration[] registrations;
    private int count;
    /** Longest registered region: bounds the backward scan of a lookup. */
    private long maxLength;
    private long failures;
    private long registered;
    private long lastFailureLog;
    private boolean closed;

    /** @param capacity most regions registered at once (each pins memory and holds a device MR) */
    MemoryRegistry(final Registrar registrar, final int capacity) {
        this.registrar = registrar;
        this.capacity = capacity;
        final int initial = Math.min(capacity, 64);
        starts = new long[initial];
        ends = new long[initial];
        scopes = new MemorySegment.Scope[initial];
        registrations = new Registration[initial];
    }

    /**
     * The lkey (as an unsigned int in a long) under which the device may write {@code dst}, registering it first if
     * no live registration covers it; {@link #UNREGISTERED} if it cannot be registered.
     */
    long lkey(final MemorySegment dst) {
        if (closed || !dst.isNative() || dst.byteSize() == 0 || dst.byteSize() > MAX_REGION_BYTES) {
            return UNREGISTERED;
        }
        final long start = dst.address();
        final long end = start + dst.byteSize();
        final int hit = find(start, end);
        if (hit >= 0) {
            return Integer.toUnsignedLong(registrations[hit].lkey());
        }
        return register(dst, start, end);
    }

    /** Index of a live registration covering [start, end), or -1. */
    private int find(final long start, final long end) {
        int i = lastStartAtOrBefore(start);
        final long lowest = end - maxLength; // a region starting before this is too short to reach end
        for (; i >= 0 && starts[i] >= lowest; i--) {
            if (ends[i] >= end && scopes[i].isAlive()) {
                return i;
            }
        }
        return -1;
    }

    private int lastStartAtOrBefore(final long address) {
        int lo = 0;
        int hi = count - 1;
        int found = -1;
        while (lo <= hi) {
            final int mid = (lo + hi) >>> 1;
            if (starts[mid] <= address) {
                found = mid;
                lo = mid + 1;
            } else {
                hi = mid - 1;
            }
        }
        return found;
    }

    private long register(final MemorySegment dst, final long start, final long end) {
        releaseDead();
        if (count == capacity) {
            return fail("cannot register another destination region: " + capacity + " are registered already");
        }
        final Registration r;
        try {
            r = registrar.register(start, end - start);
        } catch (final IOException | RuntimeException e) {
            return fail("registering " + (end - start) + " bytes at 0x" + Long.toHexString(start) + " failed: " + e.getMessage());
        }
        if (count == starts.length) {
            final int n = Math.min(capacity, count * 2);
            starts = Arrays.copyOf(starts, n);
            ends = Arrays.copyOf(ends, n);
            scopes = Arrays.copyOf(scopes, n);
            registrations = Arrays.copyOf(registrations, n);
        }
        final int at = lastStartAtOrBefore(start) + 1;
        System.arraycopy(starts, at, starts, at + 1, count - at);
        System.arraycopy(ends, at, ends, at + 1, count - at);
        System.arraycopy(scopes, at, scopes, at + 1, count - at);
        System.arraycopy(registrations, at, registrations, at + 1, count - at);
        starts[at] = start;
        ends[at] = end;
        scopes[at] = dst.scope();
        registrations[at] = r;
        count++;
        registered++;
        maxLength = Math.max(maxLength, end - start);
        return Integer.toUnsignedLong(r.lkey());
    }

    /** Deregisters every region whose arena is closed: its addresses may now belong to other memory. */
    private void releaseDead() {
        int w = 0;
        long longest = 0;
        for (int i = 0; i < count; i++) {
            if (scopes[i].isAlive()) {
                starts[w] = starts[i];
                ends[w] = ends[i];
                scopes[w] = scopes[i];
                registrations[w] = registrations[i];
                longest = Math.max(longest, ends[w] - starts[w]);
                w++;
            } else {
                registrations[i].deregister();
            }
        }
        for (int i = w; i < count; i++) {
            scopes[i] = null;
            registrations[i] = null;
        }
        count = w;
        maxLength = longest;
    }

    private long fail(final String why) {
        failures++;
        final long now = System.nanoTime();
        if (now - lastFailureLog > LOG_INTERVAL_NANOS) {
            lastFailureLog = now;
            LOG.warn("RDMA destination not registered ({} times so far): {}", failures, why);
        }
        return UNREGISTERED;
    }

    /** Regions registered now. */
    int size() {
        return count;
    }

    /** Registrations made since creation (a hit makes none). */
    long registrations() {
        return registered;
    }

    /** Destinations that could not be registered. */
    long failures() {
        return failures;
    }

    /** Deregisters everything. Call only once the device can no longer write (the queue pair is destroyed). */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        for (int i = 0; i < count; i++) {
            registrations[i].deregister();
            registrations[i] = null;
            scopes[i] = null;
        }
        count = 0;
    }
}
