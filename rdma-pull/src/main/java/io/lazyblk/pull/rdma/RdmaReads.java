package io.lazyblk.pull.rdma;

import io.lazyblk.pull.onesided.OneSidedReads;
import io.lazyblk.pull.provider.RdmaOffer;

import java.lang.foreign.MemorySegment;

/**
 * {@link OneSidedReads} by RDMA READ: each read goes straight from the provider's registered image mapping into the
 * destination (registered once through {@link MemoryRegistry}), at most {@code window} in flight, completions
 * polled from the completion queue, never waited for by an event. A completion in error (or a failed post or poll)
 * turns the reads unhealthy and destroys the queue pair at once, so the fetches the transport then fails have no READ
 * left that could land in their buffers. Nothing is allocated per read.
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
            failedIds[failedCount++] = id;
            breakDown();
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
            breakDown();
            return n;
        }
        boolean error = false;
        for (int i = 0; i < got; i++) {
            posted--;
            error |= !polledOk[i];
            done.completed(polledIds[i], polledOk[i]);
        }
        if (error) {
            breakDown();
        }
        return n + got;
    }

    /**
     * The queue pair is in error (or the device gone): destroy it now, before the transport fails the fetches still
     * posted and hands their buffers back, so no late READ can land in a buffer already reused. Those reads are
     * abandoned: they will never complete here, and the transport fails their fetches.
     */
    private void breakDown() {
        if (!healthy) {
            return;
        }
        healthy = false;
        verbs.stop();
        posted = 0;
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
