package io.lazyblk.pull.provider;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.HashMap;
import java.util.Map;

/**
 * The provider's connection slots: at most {@code max} connections in all and {@code maxPerPeer} from one peer, so
 * one host (or one token holder) cannot take every slot and lock every other engine out. A peer is a TCP client's IP
 * address or a UNIX-socket client's uid ({@link UnixPeer}). A slot is taken at accept, before the hello, so a client
 * without a token is held to the same limits. Refusals are logged at most once per {@link #REFUSAL_LOG_PERIOD_NANOS},
 * with a count of those not logged: a flood must not flood the log.
 *
 * <p>Thread-safe: taken by the accepting threads, given back by the connections' threads; one lock, off the data
 * path (once per connection).
 */
final class ConnectionSlots {
    private static final Logger LOG = LoggerFactory.getLogger(ConnectionSlots.class);
    /** One refusal line per 10 s at most: enough to see a limit is being hit, and by whom, without a line per attempt. */
    static final long REFUSAL_LOG_PERIOD_NANOS = 10_000_000_000L;

    /** A UNIX-socket client's bucket: its uid, or {@code -1} when the kernel would not say (then every such client shares it). */
    record UnixPeer(int uid) {
        @Override
        public String toString() {
            return uid < 0 ? "UNIX-socket clients" : "uid " + uid;
        }
    }

    private final int max;
    private final int maxPerPeer;
    private final Map<Object, int[]> perPeer = new HashMap<>(); // guarded by this
    private int open; // guarded by this
    private long refused; // guarded by this
    private long lastRefusalLogNanos; // guarded by this
    private boolean loggedAny; // guarded by this
    private long notLogged; // guarded by this

    ConnectionSlots(final int max, final int maxPerPeer) {
        this.max = max;
        this.maxPerPeer = maxPerPeer;
    }

    /**
     * Takes a slot for {@code peer}, or returns false (and logs, at the rate limit) if the server or this peer is at
     * its limit. A slot taken must be given back with {@link #release} exactly once.
     */
    synchronized boolean take(final Object peer) {
        final int[] n = perPeer.get(peer);
        final int ofPeer = n == null ? 0 : n[0];
        if (open >= max || ofPeer >= maxPerPeer) {
            refused++;
            logRefusal(peer, open >= max ? "the server already holds " + open + " connections (--max-connections " + max + ")"
                : "it already holds " + ofPeer + " connections (--max-connections-per-peer " + maxPerPeer + ")");
            return false;
        }
        open++;
        if (n == null) {
            perPeer.put(peer, new int[] {1});
        } else {
            n[0]++;
        }
        return true;
    }

    synchronized void release(final Object peer) {
        final int[] n = perPeer.get(peer);
        if (n == null) {
            throw new IllegalStateException("no slot of " + peer + " to release");
        }
        open--;
        if (--n[0] == 0) {
            perPeer.remove(peer); // peers come and go: the map holds only those with a connection
        }
    }

    synchronized int open() {
        return open;
    }

    /** Connections refused for want of a slot since the server started. */
    synchronized long refused() {
        return refused;
    }

    private void logRefusal(final Object peer, final String why) {
        final long now = System.nanoTime();
        if (loggedAny && now - lastRefusalLogNanos < REFUSAL_LOG_PERIOD_NANOS) {
            notLogged++;
            return;
        }
        LOG.warn("refused a connection from {}: {}{}", peer instanceof java.net.InetAddress a ? a.getHostAddress() : peer, why,
            notLogged == 0 ? "" : " (and " + notLogged + " more refused since the last such line)");
        loggedAny = true;
        lastRefusalLogNanos = now;
        notLogged = 0;
    }
}
