package io.lazyblk.vhost.device;

/**
 * A device's work on one virtqueue, run by that queue's agent thread only (single writer of the used ring).
 */
public interface QueueHandler {
    /**
     * Consumes available chains, dispatches them, and publishes finished ones to the used ring.
     *
     * @return the amount of work done (0 lets the agent idle)
     */
    int doWork() throws Exception;

    /**
     * The queue is stopping: finishes the requests already taken from the ring (publishes their completions, runs
     * parked ones again, reads their sources' answers) and takes no new one, so the ring's {@code base()} stays the
     * first request not taken and whoever restarts the queue there resumes exactly where this left off.
     *
     * @return the amount of work done (0 lets the agent wait a little before asking again)
     */
    int finishInFlight() throws Exception;

    /** Requests taken from the ring and not yet put on the used ring. */
    int inFlight();

    /** True if completions wait to be published; checked before the agent sleeps. */
    boolean hasCompletions();

    /** The queue stops: no more requests will be given; in-flight ones have been drained. Releases resources. */
    void close();
}
