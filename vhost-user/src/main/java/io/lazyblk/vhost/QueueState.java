package io.lazyblk.vhost;

import io.lazyblk.vhost.ring.SplitVirtqueue;
import io.lazyblk.sys.LibC;
import org.agrona.concurrent.AgentRunner;

/** What the control agent knows of one queue between messages. Owned by the control thread. */
final class QueueState {
    final SplitVirtqueue ring;
    int size;
    boolean addressesSet;
    long descUva;
    long availUva;
    long usedUva;
    /** Guest physical address the used ring's writes are logged at (SET_VRING_ADDR with the log flag), or -1. */
    long usedLogGpa = -1;
    int base;
    int kickFd = -1;
    boolean kickSet;
    int callFd = -1;
    int errFd = -1;
    boolean enabled;
    QueueAgent agent;
    AgentRunner runner;

    QueueState(final int index) {
        this.ring = new SplitVirtqueue(index);
    }

    /**
     * SET_VRING_ADDR: takes the ring's addresses and its log flag and address from {@code payload}. QEMU turns used-ring
     * logging on and off on a running ring when a migration starts and ends (same addresses, the log flag): that is
     * applied in place and the ring keeps its indices.
     *
     * @return true if that was all (the queue runs on); false if the addresses were stored for the next start
     * @throws ProtocolException for unknown flags, a running ring moved, or addresses before the size
     */
    boolean setAddresses(final java.lang.foreign.MemorySegment payload) throws ProtocolException {
        final int flags = payload.get(java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED, 4);
        final long desc = payload.get(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 8);
        final long used = payload.get(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 16);
        final long avail = payload.get(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 24);
        if ((flags & ~io.lazyblk.vhost.proto.Protocol.VRING_F_LOG) != 0) {
            throw new ProtocolException("SET_VRING_ADDR with unknown flags 0x" + Integer.toHexString(flags));
        }
        final long logGpa = (flags & io.lazyblk.vhost.proto.Protocol.VRING_F_LOG) != 0
            ? payload.get(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 32) : -1;
        if (running()) {
            if (desc != descUva || used != usedUva || avail != availUva) {
                throw new ProtocolException("SET_VRING_ADDR moves running queue " + ring.index);
            }
            usedLogGpa = logGpa;
            ring.setUsedLog(logGpa);
            return true;
        }
        if (size == 0) {
            throw new ProtocolException("SET_VRING_ADDR before SET_VRING_NUM on queue " + ring.index);
        }
        usedLogGpa = logGpa;
        descUva = desc;
        usedUva = used;
        availUva = avail;
        addressesSet = true;
        return false;
    }

    boolean running() {
        return runner != null;
    }

    /**
     * Whether the front end has set the queue up to run: enabled, a kick fd, ring addresses and a size. A queue
     * that should run but does not (its ring lies outside the current memory table) is started again whenever the
     * table changes.
     */
    boolean shouldRun() {
        return enabled && kickSet && addressesSet && size != 0;
    }

    /** Forgets everything and closes the fds the front end gave for this queue; the queue must be stopped. */
    void reset() {
        LibC.close(kickFd);
        LibC.close(callFd);
        LibC.close(errFd);
        kickFd = -1;
        callFd = -1;
        errFd = -1;
        kickSet = false;
        addressesSet = false;
        usedLogGpa = -1;
        enabled = false;
        size = 0;
        base = 0;
    }
}
