package io.lazyblk.pull.rdma;

import com.ibm.disni.verbs.RdmaCmEvent;
import com.ibm.disni.verbs.RdmaEventChannel;

import java.io.IOException;

/** RDMA CM event helpers shared by the client and the provider side. DiSNI types stay in this package. */
final class Cm {
    private Cm() {
    }

    static RdmaCmEvent.EventType type(final RdmaCmEvent e) {
        final RdmaCmEvent.EventType[] all = RdmaCmEvent.EventType.values();
        final int n = e.getEvent();
        return n >= 0 && n < all.length ? all[n] : null;
    }

    /**
     * Waits up to {@code millis} for the next event on {@code channel}, acknowledges it and returns its type; throws
     * if it is not {@code expected}, or none came in time.
     */
    static void expect(final RdmaEventChannel channel, final RdmaCmEvent.EventType expected, final long millis, final String what)
        throws IOException {
        final long deadline = System.nanoTime() + millis * 1_000_000L;
        while (true) {
            final long left = (deadline - System.nanoTime()) / 1_000_000L;
            if (left <= 0) {
                throw new IOException(what + ": no " + expected + " within " + millis + " ms");
            }
            final RdmaCmEvent e = channel.getCmEvent((int) Math.min(left, Integer.MAX_VALUE));
            if (e == null) {
                continue; // timed out inside DiSNI's wait: look at the deadline again
            }
            final RdmaCmEvent.EventType t = type(e);
            final int status = e.getStatus();
            e.ackEvent();
            if (t != expected) {
                throw new IOException(what + ": " + t + " (status " + status + ") instead of " + expected);
            }
            return;
        }
    }

    /** Acknowledges whatever events arrive within {@code millis} (after a disconnect), so the id can be destroyed. */
    static void drain(final RdmaEventChannel channel, final int millis) {
        try {
            RdmaCmEvent e;
            while ((e = channel.getCmEvent(millis)) != null) {
                e.ackEvent();
            }
        } catch (final IOException e) {
            // the channel is going away anyway
        }
    }
}
