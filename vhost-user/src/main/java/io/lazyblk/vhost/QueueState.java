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
