package io.lazyblk.blk;

import io.lazyblk.persistence.ImageLock;
import io.lazyblk.sys.FileCalls;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;

/**
 * The device's storage and who may use it: a backend opened only while this engine holds its image's {@link ImageLock}.
 * That is how a live migration over shared storage hands the image from engine to engine. The source engine lets go
 * at the switchover ({@link #handOver}: every answer durable, the backend closed, the lock dropped). The destination
 * engine opened nothing before it: it opens the backend when its VM first starts a queue ({@link #take}), after waiting
 * for the lock, with a bound. A source whose migration failed takes the image back the same way.
 *
 * <p>The guest's write-cache setting travels with the image (an extended attribute, {@link #WRITEBACK_XATTR}): the
 * destination QEMU does not send it again, and a guest that chose write-through must not get a volatile cache.
 *
 * <p>Control-thread calls ({@link #take}, {@link #handOver}); {@link #current()} from any thread.
 */
public final class Storage implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Storage.class);
    /** The guest's write-cache mode at the last hand-over, "0" (write-through) or "1" (writeback); consumed by the next opener. */
    static final String WRITEBACK_XATTR = "user.lazyblk.writeback";

    /** Opens the backend; called with the image's lock held. */
    @FunctionalInterface
    public interface Opener {
        BlockBackend open() throws IOException;
    }

    /**
     * Runs before the first request is served from a freshly opened backend (a live migration's destination without
     * shared storage: asks the source for the pages it changed since they were fetched). Control thread.
     */
    @FunctionalInterface
    public interface Gate {
        /** Null to serve {@code opened} as it is; else what to do while it is closed, before it is opened again. */
        WhileClosed beforeServing(BlockBackend opened) throws IOException;
    }

    /** Work on the backend's files while no backend has them open (see {@link Gate}). */
    @FunctionalInterface
    public interface WhileClosed {
        void run() throws IOException;
    }

    private final Path image;
    private final boolean readOnly;
    private long sizeBytes;
    private final Opener opener;
    private final Duration lockWait;
    private volatile BlockBackend backend;
    private ImageLock lock;
    private volatile boolean handedOver;
    private volatile boolean waitingForLock;
    private int carriedWriteback = -1;
    private Gate gate;
    /** Whether the open backend went through the gate (control thread only). */
    private boolean gated;

    private Storage(final Path image, final boolean readOnly, final long sizeBytes, final Opener opener, final Duration lockWait,
                    final BlockBackend backend, final ImageLock lock) {
        this.image = image;
        this.readOnly = readOnly;
        this.sizeBytes = sizeBytes;
        this.opener = opener;
        this.lockWait = lockWait;
        this.backend = backend;
        this.lock = lock;
    }

    /** A backend that is never handed over (the null backend, tests): no lock. */
    public static Storage fixed(final BlockBackend backend) {
        return new Storage(null, backend.readOnly(), backend.sizeBytes(), null, Duration.ZERO, backend, null);
    }

    /**
     * The storage of image file {@code image}: opened now if its lock is free, else left to the first {@link #take}
     * (this engine stands by, a migration's destination, and says so in the log). Standing by, the device reports the
     * file's size, which the engine on the lock's other side does not change.
     */
    public static Storage open(final Path image, final boolean readOnly, final Duration lockWait, final Opener opener) throws IOException {
        final ImageLock lock = ImageLock.tryAcquire(image, readOnly);
        if (lock == null) {
            final long sizeBytes = fileSize(image);
            LOG.info("{} is locked by another open of it (an engine serving it: a live migration's source?). This engine"
                + " stands by and opens it once its VM starts, waiting up to {} s for the lock; if nothing is migrating, find"
                + " the holder with `lslocks`", image, lockWait.toSeconds());
            return new Storage(image, readOnly, sizeBytes, opener, lockWait, null, null);
        }
        try {
            final Storage s = new Storage(image, readOnly, 0, opener, lockWait, null, lock);
            s.consumeCarried();
            s.backend = opener.open();
            s.sizeBytes = s.backend.sizeBytes();
            return s;
        } catch (final IOException | RuntimeException e) {
            lock.close();
            throw e;
        }
    }

    /**
     * A backend just opened over {@code image}, which this engine created a moment ago: takes the image's lock for it
     * (refused, closing the backend, if another engine took it meanwhile). Later opens go through {@code opener}.
     */
    public static Storage adopt(final Path image, final BlockBackend backend, final Duration lockWait, final Opener opener)
        throws IOException {
        final ImageLock lock;
        try {
            lock = ImageLock.tryAcquire(image, backend.readOnly());
        } catch (final IOException | RuntimeException e) {
            backend.close();
            throw e;
        }
        if (lock == null) {
            backend.close();
            throw new IOException(image + " was locked by another engine as this one created it: two engines were started on"
                + " the same --local path. Stop one of them");
        }
        return new Storage(image, backend.readOnly(), backend.sizeBytes(), opener, lockWait, backend, lock);
    }

    private static long fileSize(final Path image) throws IOException {
        final int fd = FileCalls.open(image.toString(), FileCalls.O_RDONLY, 0);
        try {
            return FileCalls.size(fd); // lseek(SEEK_END): a block device's size too
        } finally {
            FileCalls.close(fd);
        }
    }

    public long sizeBytes() {
        return sizeBytes;
    }

    public boolean readOnly() {
        return readOnly;
    }

    /** The open backend, or null while standing by or handed over. */
    public BlockBackend current() {
        return backend;
    }

    /** Whether the image was handed over at a switchover and not taken back since. */
    public boolean handedOver() {
        return handedOver;
    }

    /** Whether its VM started a queue and the engine now waits for the image's lock, another engine holding it. */
    public boolean waitingForLock() {
        return waitingForLock;
    }

    /** Whether the engine waits for the image's lock (a migration's destination before its switchover). */
    public boolean standingBy() {
        return backend == null && !handedOver;
    }

    /**
     * The backend, opened first if need be: waits up to the bound for the image's lock (one log line if it has to),
     * then opens it. Throws, with what to do, if the lock is still held by then or the open fails.
     */
    public BlockBackend take() {
        final BlockBackend b = backend;
        if (b != null) {
            return gated ? b : passGate(b);
        }
        try {
            final long t0 = System.nanoTime();
            if (lock == null) { // held already if only the backend is gone (a gate's reopen failed)
                final ImageLock l;
                try {
                    l = ImageLock.acquire(image, readOnly, lockWait, () -> {
                        waitingForLock = true; // volatile: status and tests see the wait
                        LOG.info("waiting up to {} s for the lock of {} (the engine that served it before lets go at the"
                            + " migration's switchover)", lockWait.toSeconds(), image);
                    });
                } finally {
                    waitingForLock = false;
                }
                if (l == null) {
                    throw new IOException(image + " is still locked by another open of it after " + lockWait.toSeconds() + " s, so"
                        + " this engine does not serve it. If a migration's source engine still runs, it did not let go: stop it;"
                        + " else find the holder with `lslocks` (or wait longer: --lock-wait)");
                }
                lock = l;
            }
            consumeCarried();
            backend = opener.open();
            gated = false;
            handedOver = false;
            LOG.info("took {} ({} ms after the VM started its first queue); serving it", image, (System.nanoTime() - t0) / 1_000_000);
            return passGate(backend);
        } catch (final IOException e) {
            if (lock != null) {
                lock.close();
                lock = null;
            }
            throw new UncheckedIOException(e);
        }
    }

    /** Sets the gate every freshly opened backend passes before it serves (see {@link Gate}). Before the first {@link #take}. */
    public void gate(final Gate g) {
        this.gate = g;
    }

    private BlockBackend passGate(final BlockBackend b) {
        if (gate == null) {
            gated = true;
            return b;
        }
        try {
            final WhileClosed work = gate.beforeServing(b);
            if (work != null) {
                backend = null; // volatile: status sees no backend while it is closed
                b.close();
                work.run();
                backend = opener.open(); // on failure: no backend, and the next take opens one and gates it again
            }
            gated = true;
            return backend;
        } catch (final IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** The guest's write-cache mode the last hand-over carried (1 writeback, 0 write-through), or -1 if none. */
    public int carriedWriteback() {
        return carriedWriteback;
    }

    /** Reads and removes the carried write-cache mode, so that only the next opener after a hand-over applies it. */
    private void consumeCarried() {
        carriedWriteback = -1;
        if (lock == null || readOnly) {
            return;
        }
        try {
            final byte[] v = FileCalls.getXattr(lock.fd(), WRITEBACK_XATTR, 8);
            if (v != null) {
                final String s = new String(v, StandardCharsets.US_ASCII);
                carriedWriteback = "0".equals(s) ? 0 : "1".equals(s) ? 1 : -1;
                FileCalls.removeXattr(lock.fd(), WRITEBACK_XATTR);
                LOG.info("the guest's write cache, carried from the engine before: {}", carriedWriteback == 0 ? "write-through" : "writeback");
            }
        } catch (final IOException e) {
            LOG.warn("could not read the guest's write-cache mode carried with {} ({}); the device starts in writeback",
                image, e.getMessage());
        }
    }

    /**
     * A live migration's switchover: makes everything durable, records the guest's write-cache mode with the image,
     * closes the backend and lets go of the lock, so that the destination engine can take it. Nothing is served from
     * the image after this until {@link #take}. A storage that is not handed over ({@link #fixed}) only flushes.
     */
    public void handOver(final boolean writeback) {
        final BlockBackend b = backend;
        if (b == null) {
            return;
        }
        if (lock == null) {
            b.flush();
            return;
        }
        final long t0 = System.nanoTime();
        if (b.flush() != 0) {
            // Errors are sticky: a destination that took the image now would start clean and forget that acknowledged
            // writes may be lost. Keep it; the destination's wait ends with its own line naming the lock.
            LOG.error("not handing {} over at the migration's switchover: {}. The destination engine will not get its lock;"
                + " cancel the migration (QMP migrate_cancel) or stop the destination VM, and repair the storage", image, b.failure());
            return;
        }
        if (!readOnly) {
            try {
                FileCalls.setXattr(lock.fd(), WRITEBACK_XATTR, (writeback ? "1" : "0").getBytes(StandardCharsets.US_ASCII));
            } catch (final IOException e) {
                LOG.warn("could not record the guest's write-cache mode with {} ({}): the destination starts in writeback{}",
                    image, e.getMessage(), writeback ? "" : ", not the write-through its guest chose");
            }
        }
        backend = null; // volatile: status and the device see the hand-over from here
        handedOver = true;
        b.close(); // a closing backend records what it holds durably (a lazy store: its last merged pages)
        lock.close();
        lock = null;
        LOG.info("handed {} over at the migration's switchover ({} ms): flushed, closed and unlocked; it is served again only if"
            + " this engine's VM starts again (a failed migration)", image, (System.nanoTime() - t0) / 1_000_000);
    }

    @Override
    public void close() {
        final BlockBackend b = backend;
        backend = null;
        if (b != null) {
            b.close();
        }
        if (lock != null) {
            lock.close();
            lock = null;
        }
    }
}
