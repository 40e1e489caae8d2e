package io.lazyblk.pull.provider;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.concurrent.locks.LockSupport;

/**
 * The image server's periodic work, each loop on a thread of its own until the server closes: the watchdog, which
 * closes connections past their deadline (a stalled hello or write, an idle client), and the profile saver, which
 * writes boot profiles that changed. Apart so that a slow disk under a profile write never delays the watchdog.
 */
final class ServerChores {
    private static final Logger LOG = LoggerFactory.getLogger(ImageServer.class);

    private ServerChores() {
    }

    /** The watchdog: once a second, closes the connections whose deadline passed, with one log line saying why. */
    static void watch(final ImageServer server) {
        while (!server.isClosing()) {
            LockSupport.parkNanos(ImageServer.WATCHDOG_PERIOD_NANOS);
            final long now = System.nanoTime();
            for (final ProviderConnection c : server.connections()) {
                // Deadline first, then what it is for: the connection writes them the other way round (see waiting).
                final long deadline = c.deadlineNanos;
                if (deadline != ProviderConnection.NO_DEADLINE && now - deadline > 0) {
                    final ProviderConnection.Waiting w = c.waiting;
                    if (w == ProviderConnection.Waiting.REQUEST) {
                        server.stats.idleClosed.increment();
                        LOG.info("closing the connection from {}: no request for {} s (the idle timeout); it reconnects when it needs pages",
                            c.describe(), server.limits.idleTimeout().toSeconds());
                    } else {
                        LOG.warn("closing the connection from {}: {}", c.describe(), w.why);
                    }
                    c.abort();
                }
            }
        }
    }

    /** The profile saver: once a second, saves the boot profiles that changed (each at most every few seconds). */
    static void saveProfiles(final ImageServer server) {
        while (!server.isClosing()) {
            LockSupport.parkNanos(ImageServer.WATCHDOG_PERIOD_NANOS);
            for (final ServedImage i : server.images()) {
                if (i.profile != null) {
                    i.profile.saveIfDue();
                }
            }
        }
    }
}
