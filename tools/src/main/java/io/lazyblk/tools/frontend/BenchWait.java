package io.lazyblk.tools.frontend;

import java.util.Locale;

/** How a {@link BenchWorker} waits for completions when its used ring has nothing new. */
public enum BenchWait {
    /** Spin on the used ring with device signals suppressed, as a polling guest driver (or DPDK/SPDK) does: one busy core per queue. */
    POLL,
    /**
     * Sleep in poll(2) on the queue's call eventfd with device signals enabled, as a guest's interrupt-driven virtio
     * driver does: the thread uses a core only while it has completions to handle.
     */
    INTERRUPT;

    /** Parses {@code poll|interrupt} (any case). */
    public static BenchWait parse(final String s) {
        try {
            return valueOf(s.toUpperCase(Locale.ROOT));
        } catch (final IllegalArgumentException e) {
            throw new IllegalArgumentException("wait must be poll or interrupt, got '" + s + "'");
        }
    }

    @Override
    public String toString() {
        return name().toLowerCase(Locale.ROOT);
    }
}
