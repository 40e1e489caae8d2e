package io.lazyblk.pull.sched;

import io.lazyblk.pagemap.PageSource;

import java.lang.foreign.MemorySegment;

/**
 * One preallocated fetch slot of a {@link FetchScheduler}. A submitting thread fills it while it owns it (taken from
 * the free pool), then publishes it through a queue to the transport thread, which owns it until it completes it
 * and hands it back to the pool. No fetch allocates a slot.
 */
public final class Fetch {
    static final int FREE = 0;
    static final int QUEUED = 1;
    static final int ISSUED = 2;

    final int index;
    int state = FREE;
    long id;
    int firstPage;
    int count;
    int priority;
    long tag;
    int bytes;
    boolean valid;
    MemorySegment dst;
    PageSource.Listener listener;

    Fetch(final int index) {
        this.index = index;
    }

    /** The request id the transport put on the wire for this fetch (unique among fetches in flight). */
    public long id() {
        return id;
    }

    public int firstPage() {
        return firstPage;
    }

    public int count() {
        return count;
    }

    public int priority() {
        return priority;
    }

    /** Bytes the provider must deliver: {@code count} pages, the image's last page possibly short. */
    public int bytes() {
        return bytes;
    }

    /** Where the bytes go: exactly {@link #bytes()} long. */
    public MemorySegment dst() {
        return dst;
    }
}
