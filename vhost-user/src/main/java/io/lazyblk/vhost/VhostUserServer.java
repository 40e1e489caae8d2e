package io.lazyblk.vhost;

import io.lazyblk.vhost.device.VhostUserDevice;
import io.lazyblk.sys.UnixSocket;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Listens on a UNIX socket and serves one front end at a time (vhost-user has one front end per device); after a
 * front end goes away, accepts the next. {@link #run()} blocks; {@link #close()} from another thread ends it.
 */
public final class VhostUserServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(VhostUserServer.class);
    /**
     * Default ring polling after the last request before sleeping on the kick eventfd: 50 µs covers the gap
     * between a guest's back-to-back submissions at queue depth 1 (a syscall costs ~0.4 µs here), so a busy
     * queue rarely pays the ~10 µs wake-up, and an idle one costs no CPU.
     */
    public static final long DEFAULT_SPIN_NANOS = 50_000;

    private final Path path;
    private final UnixSocket listener;
    private final VhostUserDevice device;
    private final long spinNanos;
    private volatile boolean closed;
    private volatile VhostUserConnection current;

    public VhostUserServer(final Path path, final VhostUserDevice device, final long spinNanos) throws IOException {
        this.path = path;
        this.device = device;
        this.spinNanos = spinNanos;
        this.listener = UnixSocket.listen(path);
    }

    public Path path() {
        return path;
    }

    /** Accepts and serves front ends until closed. */
    public void run() {
        while (!closed) {
            final UnixSocket s;
            try {
                s = listener.accept();
            } catch (final IOException e) {
                if (!closed) {
                    LOG.error("accept on {} failed: {}", path, e.getMessage());
                }
                return;
            }
            LOG.info("front end connected on {}", path);
            final VhostUserConnection c = new VhostUserConnection(s, device, spinNanos);
            current = c;
            if (closed) {
                c.close();
            }
            c.run();
            current = null;
        }
    }

    @Override
    public void close() {
        closed = true;
        listener.shutdown();
        final VhostUserConnection c = current;
        if (c != null) {
            c.close();
        }
        listener.close();
        try {
            Files.deleteIfExists(path);
        } catch (final IOException e) {
            LOG.warn("could not remove socket {}: {}", path, e.getMessage());
        }
    }
}
