package io.lazyblk.tools.frontend;

import io.lazyblk.vhost.proto.Protocol;

import java.time.Duration;

/**
 * What a {@link VhostUserFrontend} asks for in the handshake. Immutable.
 *
 * @param queues virtqueues to set up (at most what GET_QUEUE_NUM reports)
 * @param queueSize entries per virtqueue (power of two)
 * @param features virtio feature bits we would like; the handshake acks {@code features & offered}
 * @param indirectEntries per-head indirect table size, 0 for none (only used when INDIRECT_DESC is acked)
 * @param ringBase index both rings start at (SET_VRING_BASE); non-zero values exercise 16-bit wrap-around
 * @param replyTimeout how long to wait for any reply before failing
 * @param blockingEventFds create the queues' kick and call eventfds without {@code EFD_NONBLOCK} (QEMU's are
 *     non-blocking; a hostile or naive front end's may not be)
 */
public record FrontendConfig(int queues, int queueSize, long features, int indirectEntries, int ringBase,
                             Duration replyTimeout, boolean blockingEventFds) {
    /** VERSION_1, EVENT_IDX, INDIRECT_DESC, PROTOCOL_FEATURES and every virtio-blk bit. */
    public static final long DEFAULT_FEATURES = VirtioBlk.DEVICE_FEATURES | VirtioBlk.bits(Protocol.F_VERSION_1,
        Protocol.F_EVENT_IDX, Protocol.F_INDIRECT_DESC, Protocol.F_PROTOCOL_FEATURES);
    /** Long enough for a loaded CI machine, short enough that a dead back end fails a test quickly. */
    public static final Duration DEFAULT_REPLY_TIMEOUT = Duration.ofSeconds(10);

    public FrontendConfig {
        if (queues < 1) {
            throw new IllegalArgumentException("at least one queue, got " + queues);
        }
        if (!VringLayout.validSize(queueSize)) {
            throw new IllegalArgumentException("queue size " + queueSize + " is not a power of two up to 32768");
        }
        if (indirectEntries < 0 || indirectEntries > VringLayout.MAX_QUEUE_SIZE) {
            throw new IllegalArgumentException("indirect table of " + indirectEntries + " entries");
        }
        if (ringBase < 0 || ringBase > 0xffff) {
            throw new IllegalArgumentException("ring base " + ringBase + " is not a 16-bit index");
        }
    }

    /** One queue of {@link DriverQueue#DEFAULT_SIZE} entries, every feature we know. */
    public static FrontendConfig defaults() {
        return new FrontendConfig(1, DriverQueue.DEFAULT_SIZE, DEFAULT_FEATURES, DriverQueue.DEFAULT_INDIRECT_ENTRIES, 0,
            DEFAULT_REPLY_TIMEOUT, false);
    }

    public FrontendConfig withQueues(final int n) {
        return new FrontendConfig(n, queueSize, features, indirectEntries, ringBase, replyTimeout, blockingEventFds);
    }

    public FrontendConfig withQueueSize(final int n) {
        return new FrontendConfig(queues, n, features, indirectEntries, ringBase, replyTimeout, blockingEventFds);
    }

    public FrontendConfig withFeatures(final long f) {
        return new FrontendConfig(queues, queueSize, f, indirectEntries, ringBase, replyTimeout, blockingEventFds);
    }

    public FrontendConfig withoutFeatures(final int... bits) {
        return withFeatures(features & ~VirtioBlk.bits(bits));
    }

    public FrontendConfig withIndirectEntries(final int n) {
        return new FrontendConfig(queues, queueSize, features, n, ringBase, replyTimeout, blockingEventFds);
    }

    public FrontendConfig withRingBase(final int base) {
        return new FrontendConfig(queues, queueSize, features, indirectEntries, base, replyTimeout, blockingEventFds);
    }

    public FrontendConfig withReplyTimeout(final Duration d) {
        return new FrontendConfig(queues, queueSize, features, indirectEntries, ringBase, d, blockingEventFds);
    }

    public FrontendConfig withBlockingEventFds(final boolean blocking) {
        return new FrontendConfig(queues, queueSize, features, indirectEntries, ringBase, replyTimeout, blocking);
    }
}
