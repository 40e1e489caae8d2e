package io.lazyblk.persistence;

import io.lazyblk.sys.FileCalls;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.locks.LockSupport;

/**
 * Who may serve an image file: an open file description lock (Linux OFD lock, {@code F_OFD_SETLK}) over the whole file,
 * exclusive for an engine that writes it, shared for read-only ones. It belongs to its own open of the file, so the
 * engine's other opens (the image, its sync) neither take nor drop it; the kernel drops it when that open closes, so a
 * killed engine never leaves it behind. On NFS the client forwards it to the server, so it also holds between hosts
 * that share the file: a live migration's destination engine waits for it until the source engine lets go.
 *
 * <p>Advisory: it keeps lazyblk engines (and QEMU, which locks the images it opens the same way) apart, not other writers.
 */
public final class ImageLock implements AutoCloseable {
    private static final long POLL_NANOS = 20_000_000L;
    private final Path file;
    private int fd;

    private ImageLock(final Path file, final int fd) {
        this.file = file;
        this.fd = fd;
    }

    /** The lock on {@code file}, or null if another open of it holds a conflicting one. */
    public static ImageLock tryAcquire(final Path file, final boolean shared) throws IOException {
        final int fd = FileCalls.open(file.toString(), shared ? FileCalls.O_RDONLY : FileCalls.O_RDWR, 0);
        try {
            if (FileCalls.ofdLock(fd, shared ? FileCalls.F_RDLCK : FileCalls.F_WRLCK)) {
                return new ImageLock(file, fd);
            }
        } catch (final IOException | RuntimeException e) {
            FileCalls.close(fd);
            throw e;
        }
        FileCalls.close(fd);
        return null;
    }

    /**
     * The lock on {@code file}, waiting up to {@code wait} for it (looking again every 20 ms); null if it is still
     * held by then. {@code onWait} runs once, if it has to wait at all (to say so in the log).
     */
    public static ImageLock acquire(final Path file, final boolean shared, final Duration wait, final Runnable onWait) throws IOException {
        final long deadline = System.nanoTime() + wait.toNanos();
        ImageLock lock = tryAcquire(file, shared);
        if (lock == null) {
            onWait.run();
        }
        while (lock == null && System.nanoTime() - deadline < 0) {
            LockSupport.parkNanos(POLL_NANOS);
            lock = tryAcquire(file, shared);
        }
        return lock;
    }

    public Path file() {
        return file;
    }

    /**
     * A file descriptor of the locked file (its own open), for metadata that travels with the image (extended
     * attributes); never for its data. Valid until {@link #close()}.
     */
    public int fd() {
        return fd;
    }

    /** Lets go of the lock (closes its open of the file). Idempotent. */
    @Override
    public synchronized void close() {
        if (fd >= 0) {
            FileCalls.close(fd);
            fd = -1;
        }
    }
}
