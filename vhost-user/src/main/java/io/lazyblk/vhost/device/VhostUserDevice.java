package io.lazyblk.vhost.device;

import io.lazyblk.vhost.ring.SplitVirtqueue;

import java.lang.foreign.MemorySegment;

/**
 * What a virtio device implements to be served over vhost-user. The protocol layer owns the socket, guest
 * memory and rings; the device owns request semantics. Methods are called by the connection's control thread
 * except where noted.
 */
public interface VhostUserDevice {
    /** Virtio feature bits offered (device bits and the ring features it supports). */
    long features();

    /** Queues the device can serve (answer to GET_QUEUE_NUM). */
    int numQueues();

    /** Bytes of device config space. */
    int configSize();

    /** Copies config bytes {@code [offset, offset + dst.byteSize())}, already checked to lie in the config space. */
    void readConfig(int offset, MemorySegment dst);

    /** Applies a driver write to config bytes; returns false to refuse it. Default: refuse. */
    default boolean writeConfig(final int offset, final MemorySegment src) {
        return false;
    }

    /** The features the driver acked; called before any queue starts. */
    default void featuresAcked(final long features) {
    }

    /**
     * Creates the handler of one started queue. Called on the control thread; the handler then runs on the
     * queue's agent thread only.
     *
     * @param waker wakes the queue agent when another thread has completions for it
     */
    QueueHandler openQueue(SplitVirtqueue queue, Runnable waker);

    /**
     * Whether the device can follow its VM in a live migration: then the connection offers dirty logging
     * (VHOST_F_LOG_ALL, LOG_SHMFD), without which QEMU refuses to migrate. Default: no.
     */
    default boolean migratable() {
        return false;
    }

    /**
     * The front end stopped a queue (GET_VRING_BASE: the VM stops, migrates or resets) and every request the queue took
     * is answered; called before the reply, so the device can make them durable first. Default: nothing.
     */
    default void queueStopped(final int index) {
    }

    /**
     * A live migration's switchover: the front end, logging dirty pages, stopped the last running queue (GET_VRING_BASE);
     * the VM goes on on another host. Called before the reply, after {@link #queueStopped}, possibly once per queue it
     * stops. The device lets go of what the destination's device takes over (shared storage); a queue started again
     * afterwards (the migration failed) must find it taken back. Default: nothing.
     */
    default void switchedOver() {
    }

    /** The front end went away or reset the device: forget per-connection state. */
    default void reset() {
    }
}
