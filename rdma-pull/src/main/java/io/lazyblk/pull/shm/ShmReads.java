package io.lazyblk.pull.shm;

import io.lazyblk.pull.onesided.OneSidedReads;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * {@link OneSidedReads} from a read-only shared mapping of the image on this host: a read is a copy, done when
 * posted, reaped at the next poll. The provider's CPU is not involved.
 *
 * <p>The mapping is of a file someone else owns: if it shrinks under us, touching the lost pages raises SIGBUS,
 * which the JVM turns into an {@link InternalError} for bulk copies; that read fails and the source turns unhealthy
 * (the engine then uses its next source) instead of the process dying.
 */
public final class ShmReads implements OneSidedReads {
    private final Arena arena;
    private final MemorySegment image;
    private final String description;
    private final long[] doneIds;
    private final boolean[] doneOk;
    private int doneCount;
    private volatile boolean healthy = true;

    /**
     * @param arena owns {@code image}'s mapping (closing it unmaps)
     * @param window most reads posted and not yet reaped
     */
    ShmReads(final Arena arena, final MemorySegment image, final String description, final int window) {
        this.arena = arena;
        this.image = image;
        this.description = description;
        this.doneIds = new long[window];
        this.doneOk = new boolean[window];
    }

    @Override
    public boolean post(final long id, final long offset, final MemorySegment dst, final int length) {
        if (doneCount == doneIds.length) {
            return false;
        }
        doneIds[doneCount] = id;
        doneOk[doneCount++] = readNow(offset, dst, length);
        return true;
    }

    @Override
    public boolean synchronous() {
        return true;
    }

    /** A copy out of the mapping; any thread (the mapping is read-only and lives in a shared arena). */
    @Override
    public boolean readNow(final long offset, final MemorySegment dst, final int length) {
        if (!healthy) {
            return false;
        }
        try {
            MemorySegment.copy(image, offset, dst, 0, length);
            return true;
        } catch (final InternalError e) {
            healthy = false; // SIGBUS: the file was truncated under the mapping (volatile: every reader stops at once)
            return false;
        } catch (final IllegalStateException e) {
            return false; // the mapping was closed meanwhile
        }
    }

    @Override
    public int poll(final Completions done) {
        final int n = doneCount;
        for (int i = 0; i < n; i++) {
            done.completed(doneIds[i], doneOk[i]);
        }
        doneCount = 0;
        return n;
    }

    @Override
    public int outstanding() {
        return 0; // copies finish when posted: nothing to wait for, so the transport need not spin
    }

    @Override
    public boolean healthy() {
        return healthy;
    }

    @Override
    public String describe() {
        return description;
    }

    @Override
    public void close() {
        arena.close();
    }
}
