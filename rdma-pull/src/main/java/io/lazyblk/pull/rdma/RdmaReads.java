package io.lazyblk.pull.rdma;

import io.lazyblk.pull.onesided.OneSidedReads;
import io.lazyblk.pull.provider.RdmaOffer;

import java.lang.foreign.MemorySegment;

/**
 * {@link OneSidedReads} by RDMA READ: each read goes straight from the provider's registered image mapping into the
 * destination (registered once through {@link MemoryRegistry}), at most {@code window} in flight, completions
 * polled from the completion queue, never waited for by an event. A completion in error (or a failed post or poll)
 * turns the reads unhealthy: the queue pair is in error then, and every read still posted completes flushed, as
 * failed. Nothing is allocated per read.
 *
 * <p>Thread-safety: as {@link OneSidedReads}: the transport thread, except {@link #close()}.
 */
final class RdmaReads implements OneSidedReads {
    private final ReadVerbs verbs;
    private final MemoryRegistry registry;
    private final RdmaOffer image;
    private final int window;
    private final String description;
    /** Reads that failed before reaching the device (destination not registrable, post failed), reaped at the next poll. */
    private final long[] failedIds;
    private int failedCount;
    private final long[] polledIds;
    private final boolean[] polledOk;
    private int posted;
    /** Written by the transport thread, read by whoever asks (a status query): volatile for visibility only. */
    private volatile boolean healthy = true;
    private boolean closed;

    RdmaReads(final ReadVerbs verbs, final MemoryRegistry registry, final RdmaOffer image, final int window) {
        this.verbs = verbs;
        this.registry = registry;
        this.image = image;
        this.window = window;
        this.description = "RDMA reads from " + verbs.describe() + " (" + image + ")";
        this.failedIds = new long[window];
        this.polledIds = new long[window];
        this.polledOk = new boolean[window];
    }

    @Override
    public boolean post(final long id, final long offset, final MemorySegment dst, final int length) {
        if (posted + failedCount >= window) {
            return false; // the send queue holds window reads: poll first
        }
        if (!healthy || closed) {
            failedIds[failedCount++] = id;
            return true;
        }
        final int region = image.region(offset);
        final long regionStart = region * image.stride();
        if (region >= image.regionCount() || offset + length > regionStart + image.regionBytes(region)) {
            failedIds[failedCount++] = id; // longer than the regions' overlap: the caller's fetch limit is wrong
            return true;
        }
        final long lkey = registry.lkey(length == dst.byteSize() ? dst : dst.asSlice(0, length));
        if (lkey == MemoryRegistry.UNREGISTERED) {
            failedIds[failedCount++] = id; // this destination cannot be read into; the source stays healthy
            return true;
        }
        if (!verbs.postRead(id, dst.address(), (int) lkey, length, image.remoteAddress() + offset, image.rkey(region))) {
            healthy = false;
            failedIds[failedCount++] = id;
            return true;
        }
        posted++;
        return true;
    }

    @Override
    public int poll(final Completions done) {
        int n = 0;
        final int failed = failedCount;
        for (int i = 0; i < failed; i++) {
            done.completed(failedIds[i], false);
        }
        failedCount = 0;
        n += failed;
        if (posted == 0 || closed) {
            return n;
        }
        final int got = verbs.poll(polledIds, polledOk);
        if (got < 0) {
            healthy = false;
            return n;
        }
        for (int i = 0; i < got; i++) {
            posted--;
            if (!polledOk[i]) {
                healthy = false; // the queue pair is in error: the rest flush as failed
            }
            done.completed(polledIds[i], polledOk[i]);
        }
        return n + got;
    }

    @Override
    public int outstanding() {
        return posted + failedCount;
    }

    @Override
    public boolean healthy() {
        return healthy;
    }

    @Override
    public String describe() {
        return description;
    }

    /** Destroys the queue pair first (no READ lands after that), then deregisters destinations and releases the rest. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        healthy = false;
        verbs.stop();
        registry.close();
        verbs.close();
    }
}
