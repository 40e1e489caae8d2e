package io.lazyblk.pull.chain;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;

import java.lang.foreign.MemorySegment;

/**
 * The place in a chain of a source that was refused at start because it serves another image than the one the engine
 * fills (its manifest's digest is not the pinned one): never connected, never asked for a page. It keeps the chain's
 * numbering as the operator gave it, so status can name it ({@link SourceChain#state}: {@code refused}). Thread-safe.
 */
public final class RefusedSource implements PageSource {
    private final Manifest image;
    private final String reason;

    /** @param image the image the chain serves (not the refused source's) */
    public RefusedSource(final Manifest image, final String reason) {
        this.image = image;
        this.reason = reason;
    }

    public String reason() {
        return reason;
    }

    @Override
    public Manifest manifest() {
        return image;
    }

    @Override
    public boolean fetch(final int firstPage, final int count, final MemorySegment dst, final int priority, final long tag,
                         final Listener listener) {
        return false;
    }

    @Override
    public int maxPagesPerFetch() {
        return Integer.MAX_VALUE;
    }

    @Override
    public int inFlight() {
        return 0;
    }

    @Override
    public boolean connected() {
        return false;
    }

    @Override
    public void close() {
    }
}
