package io.lazyblk.blk;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;

/**
 * How many requests the guest made, for the fill's governor ({@link FillGovernor}): bumped by the queue threads on every
 * request, read by the fill agent. Thread-safe in the way it needs to be: an opaque read and write, not an atomic add,
 * so two queues bumping it at once may lose one, which costs nothing (the governor only looks for a change), where an
 * atomic add would cost every request a locked instruction. Opaque keeps the value untorn and eventually seen by the
 * agent; it orders nothing else.
 */
final class GuestActivity {
    private static final VarHandle COUNT = MethodHandles.arrayElementVarHandle(long[].class);
    /** The count's slot, 64 bytes into the array on either side: the fields the request path reads never share its line. */
    private static final int SLOT = 12;
    private final long[] slots = new long[24];

    void count() {
        COUNT.setOpaque(slots, SLOT, (long) COUNT.getOpaque(slots, SLOT) + 1);
    }

    long requests() {
        return (long) COUNT.getOpaque(slots, SLOT);
    }
}
