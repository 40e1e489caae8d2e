package io.lazyblk.tools;

import io.lazyblk.blk.BlockBackend;
import io.lazyblk.blk.FileBackend;
import io.lazyblk.blk.NullBackend;
import io.lazyblk.blk.VirtioBlkDevice;
import io.lazyblk.persistence.LocalImage;
import io.lazyblk.vhost.VhostUserServer;

import java.io.IOException;
import java.nio.file.Path;

/**
 * One engine: a backend, the virtio-blk device over it, and the vhost-user server on a socket, served on its
 * own thread. The wiring shared by {@code serve}, {@code demo} and the tests. {@link #close()} stops it all.
 */
public final class Engine implements AutoCloseable {
    private final VhostUserServer server;
    private final BlockBackend backend;
    private final Thread thread;

    private Engine(final VhostUserServer server, final BlockBackend backend) {
        this.server = server;
        this.backend = backend;
        this.thread = new Thread(server::run, "vhost-user-control");
        this.thread.setDaemon(true);
    }

    /** Settings of one engine; {@code localImage == null} with {@code nullSize > 0} selects the null backend. */
    public record Options(Path socket, Path localImage, long nullSize, int queues, boolean readOnly,
                          int ioThreadsPerQueue, long pollNanos) {
        public static Options file(final Path socket, final Path image) {
            return new Options(socket, image, 0, 1, false, 0, VhostUserServer.DEFAULT_SPIN_NANOS);
        }

        public Options withQueues(final int n) {
            return new Options(socket, localImage, nullSize, n, readOnly, ioThreadsPerQueue, pollNanos);
        }

        public Options withReadOnly(final boolean ro) {
            return new Options(socket, localImage, nullSize, queues, ro, ioThreadsPerQueue, pollNanos);
        }
    }

    public static Engine start(final Options o) throws IOException {
        if (o.queues() < 1 || o.queues() > 64) {
            throw new IllegalArgumentException("--queues must be between 1 and 64, not " + o.queues());
        }
        if (o.ioThreadsPerQueue() < 0 || o.ioThreadsPerQueue() > 64) {
            throw new IllegalArgumentException("--io-threads must be between 0 and 64, not " + o.ioThreadsPerQueue());
        }
        final BlockBackend backend = o.localImage() != null
            ? new FileBackend(LocalImage.open(o.localImage(), o.readOnly()))
            : new NullBackend(o.nullSize());
        try {
            final String serial = o.localImage() != null ? "lazyblk-" + o.localImage().getFileName() : "lazyblk-null";
            final VirtioBlkDevice device = new VirtioBlkDevice(backend, o.queues(), o.ioThreadsPerQueue(), serial);
            final Engine e = new Engine(new VhostUserServer(o.socket(), device, o.pollNanos()), backend);
            e.thread.start();
            return e;
        } catch (final IOException | RuntimeException ex) {
            backend.close();
            throw ex;
        }
    }

    public long sizeBytes() {
        return backend.sizeBytes();
    }

    /** Blocks until the server stops. */
    public void join() throws InterruptedException {
        thread.join();
    }

    @Override
    public void close() {
        server.close();
        try {
            thread.join(30_000);
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        backend.close();
    }
}
