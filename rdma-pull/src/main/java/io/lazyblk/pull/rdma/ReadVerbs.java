package io.lazyblk.pull.rdma;

/**
 * The few verbs {@link RdmaReads} needs from one connected RC queue pair, so that its bookkeeping (window, keys,
 * regions, completions) runs without a device. {@link DisniQueuePair} is the real one (DiSNI). Confined to the
 * transport thread, except {@link #stop()} and {@link #close()}, which run after it has stopped polling.
 */
interface ReadVerbs {
    /**
     * Posts one signaled RDMA READ of {@code length} bytes at {@code remoteAddress} (under {@code rkey}) to
     * {@code localAddress} (under {@code lkey}); its completion carries {@code wrId}.
     *
     * @return false if the post failed: the queue pair is broken
     */
    boolean postRead(long wrId, long localAddress, int lkey, int length, long remoteAddress, int rkey);

    /**
     * Polls the completion queue once, never blocking: fills {@code ids} and {@code ok} with up to their length
     * completions and returns how many, or -1 if polling failed (the device is gone).
     */
    int poll(long[] ids, boolean[] ok);

    /** Registers destination memory for local writes in this queue pair's protection domain. */
    MemoryRegistry.Registrar registrar();

    /** For logs: device, peer. */
    String describe();

    /**
     * Destroys the queue pair (disconnecting it first): once this returns the device writes nothing more into any
     * destination. Idempotent.
     */
    void stop();

    /** Releases the rest (completion queue, protection domain, CM id, control connection). After {@link #stop()}. */
    void close();
}
