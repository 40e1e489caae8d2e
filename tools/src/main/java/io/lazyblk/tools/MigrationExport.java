package io.lazyblk.tools;

import io.lazyblk.blk.LazyStore;
import io.lazyblk.blk.LiveExport;
import io.lazyblk.blk.VirtioBlkDevice;
import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pull.provider.Availability;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.provider.MigrationControl;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.List;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;

/**
 * A running engine's live disk, exported to a live migration's destination engine that has no shared storage
 * ({@code lazyblk migrate-export}): an image provider on its own TCP port serving the engine's local file, guest
 * writes included, to engines that hold a token of the export's name.
 *
 * <p>What the destination has can go stale: the guest keeps writing here until the switchover. Two bitmaps, one bit per
 * export page: {@code sent}, set before a page is read for the destination, and {@code changed}, set by every guest
 * write to a page already sent and cleared before each sending. At the switchover (the VM stopped, every answer
 * durable) the pages still {@code changed} are the final set the destination drops and fetches again before it
 * answers its guest. Why that is enough: sending does sent := 1, changed := 0, then reads the file; a write writes the
 * file, then reads sent. A write whose read of sent comes before the sending's set of it wrote the file before the
 * sending reads it, so the destination got its bytes; any later write sees sent and marks the page changed, after
 * the sending cleared it. (All bitmap accesses are volatile: one order every thread agrees on.)
 *
 * <p>A source that still fills lazily makes a page local (demanding it) before it sends it. The export's manifest is
 * {@link Manifest#live live}: no page hashes (the disk changes), and a digest drawn at random per export, so a
 * destination never mixes pages of two exports: an engine restarted before the switchover has lost its tracking, and
 * its next export is another one. After the switchover the disk no longer changes: the final set is written beside
 * the image ({@link ExportRecord}) before the switchover's reply, and an engine restarted on the image exports it
 * again under the same name and digest, so the destination finishes its copy. The record goes once the VM runs here
 * again (the migration failed): then an export restored from it is closed, as it knows nothing of what was sent.
 */
final class MigrationExport implements LiveExport, Availability, MigrationControl, AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(MigrationExport.class);
    /** How long a destination's request for a page this engine has not fetched yet waits for it before "not here". */
    private static final long LAZY_PAGE_WAIT_NANOS = 30_000_000_000L;
    static final int DEFAULT_PAGE_SIZE = 64 << 10;
    /** Volatile, atomic access to the bitmaps' words (getAndBitwiseOr/And: full fences, one order for all threads). */
    private static final VarHandle BITS = MethodHandles.arrayElementVarHandle(long[].class);

    private final String name;
    private final Path image;
    private final byte[] digest;
    /** Restored from an {@link ExportRecord} after a restart: no record of what the destination fetched before it. */
    private final boolean restored;
    /** The final set, taken at the switchover (or restored); null before. */
    private volatile int[] finalSet;
    private volatile boolean closed;
    private final VirtioBlkDevice device;
    private final LazyStore lazy;
    private final int pageSize;
    private final int pageCount;
    private final long[] sent;
    private final long[] changed;
    private final ImageServer server;
    /** Where it listens (kept: a closed server no longer says). */
    private final InetSocketAddress address;
    private final Object lock = new Object();
    /** Guarded by {@link #lock}: the VM stopped for the switchover and has not run here since. */
    private boolean switched;
    private volatile boolean complete;
    private volatile long finalPages = -1;
    /** Bytes per second the copy may take before the switchover (0: no cap). */
    private final long rate;
    /** Guarded by {@link #pacing}: when the next request may be sent under {@link #rate}. */
    private long nextFreeNanos;
    private final Object pacing = new Object();
    /** Set at the switchover, cleared if the VM runs here again: read by the pacing without the lock. */
    private volatile boolean stopped;
    /**
     * The guest's write-cache mode when its VM stopped for the switchover: read then, since QEMU-A may quit before the
     * destination asks, and its connection's teardown resets the device's config.
     */
    private volatile boolean writebackAtSwitchover = true;

    private MigrationExport(final String name, final VirtioBlkDevice device, final LazyStore lazy, final long size,
                            final int pageSize, final Path image, final InetSocketAddress listen, final byte[] secret,
                            final long rate, final ExportRecord record) throws IOException {
        this.name = name;
        this.image = image;
        this.rate = rate;
        this.restored = record != null;
        this.device = device;
        this.lazy = lazy;
        this.pageSize = pageSize;
        this.pageCount = (int) ((size + pageSize - 1) / pageSize);
        this.sent = new long[(pageCount + 63) / 64];
        this.changed = new long[(pageCount + 63) / 64];
        if (record != null) {
            this.digest = record.digest();
            this.finalSet = record.pages();
            this.writebackAtSwitchover = record.writeback();
            this.switched = true;
            this.stopped = true;
        } else {
            this.digest = new byte[32];
            new SecureRandom().nextBytes(digest);
        }
        final Manifest m = Manifest.live(size, pageSize, digest);
        this.server = ImageServer.start(listen, List.of(new ImageExport(name, image, m, this, false).withMigration(this)), secret);
        this.address = server.address();
    }

    /**
     * Starts exporting the disk of the engine's device on {@code listen}; the device then tells it of every guest write
     * and of the switchover.
     */
    static MigrationExport start(final String name, final VirtioBlkDevice device, final LazyStore lazy, final long size,
                                 final Path image, final InetSocketAddress listen, final byte[] secret, final long rate)
        throws IOException {
        ImageExport.validateName(name);
        if (rate < 0) {
            throw new IllegalArgumentException("rate must be 0 (no cap) or more, not " + rate);
        }
        final int pageSize = lazy != null ? lazy.pageSize() : DEFAULT_PAGE_SIZE;
        final ExportRecord record = ExportRecord.read(image, (int) ((size + pageSize - 1) / pageSize));
        if (record != null && !record.name().equals(name)) {
            throw new IOException("this disk was handed over at a migration's switchover as " + record.name() + " ("
                + ExportRecord.beside(image).getFileName() + "): export it again as " + record.name() + " so that destination can"
                + " finish its copy, or, if that destination is gone, delete " + ExportRecord.beside(image));
        }
        final MigrationExport e = new MigrationExport(name, device, lazy, size, pageSize, image, listen, secret, rate, record);
        if (record != null) {
            device.switchedBefore(); // a queue starting here means the VM runs here again: resumed()
            LOG.info("{} records a migration's switchover as {}: the disk has not changed since; serving it under the same"
                + " identity so the destination finishes its copy ({} pages in the final set)", ExportRecord.beside(image), name,
                record.pages().length);
        }
        device.export(e); // from the next request on, every guest write is tracked
        LOG.info("exporting the live disk as {} on {} for a live migration without shared storage ({} pages of {} KiB)", name,
            e.server.address(), e.pageCount, pageSize >> 10);
        return e;
    }

    InetSocketAddress address() {
        return address;
    }

    String name() {
        return name;
    }

    /** exporting, switched-over or complete, for status. */
    String state() {
        if (closed) {
            return "closed";
        }
        if (complete) {
            return "complete";
        }
        synchronized (lock) {
            return switched ? "switched-over" : "exporting";
        }
    }

    /** Pages in the final set handed to the destination at the switchover, or -1 before. */
    long finalPages() {
        return finalPages;
    }

    // ---------------------------------------------------------------- the destination's requests (provider threads)

    @Override
    public boolean has(final int firstPage, final int count) {
        pace(count);
        for (int p = firstPage; p < firstPage + count; p++) {
            if (lazy != null && !lazy.awaitReadable(p, LAZY_PAGE_WAIT_NANOS)) {
                return false; // this engine's own provider is down: "not here", the destination asks again later
            }
        }
        for (int p = firstPage; p < firstPage + count; p++) {
            final long bit = 1L << p;
            final long ignored = (long) BITS.getAndBitwiseOr(sent, p >>> 6, bit); // before the clear and the server's read
            final long ignored2 = (long) BITS.getAndBitwiseAnd(changed, p >>> 6, ~bit);
        }
        return true;
    }

    /**
     * Holds a request back so that the copy stays under {@link #rate} while the guest runs here (its I/O shares this
     * host's disk with the copy); after the switchover the destination's VM waits for what it lacks: no cap then.
     */
    private void pace(final int count) {
        if (rate <= 0 || stopped) {
            return;
        }
        final long cost = (long) ((double) count * pageSize * 1_000_000_000L / rate);
        final long wait;
        synchronized (pacing) {
            final long now = System.nanoTime();
            final long start = Math.max(now, nextFreeNanos);
            nextFreeNanos = start + cost;
            wait = start - now;
        }
        if (wait > 0) {
            java.util.concurrent.locks.LockSupport.parkNanos(wait);
        }
    }

    // ---------------------------------------------------------------- the guest's writes (request threads)

    @Override
    public void written(final long offset, final long length) {
        if (length <= 0) {
            return;
        }
        final int first = (int) (offset / pageSize);
        final int last = (int) Math.min(pageCount - 1, (offset + length - 1) / pageSize);
        for (int p = first; p <= last; p++) {
            final long bit = 1L << p;
            // volatile read, after the backend wrote the file (see the class comment)
            if (((long) BITS.getVolatile(sent, p >>> 6) & bit) != 0) {
                final long ignored = (long) BITS.getAndBitwiseOr(changed, p >>> 6, bit);
            }
        }
    }

    // ---------------------------------------------------------------- the switchover (control thread)

    @Override
    public void switchedOver() {
        writebackAtSwitchover = device.writeback(); // before the set is published (volatile write below)
        stopped = true;
        final int[] set = changedPages();
        try {
            new ExportRecord(name, digest, writebackAtSwitchover, set).write(image);
        } catch (final IOException e) {
            LOG.warn("migration {}: could not record the switchover beside the image ({}); if this engine stops before the"
                + " destination is complete, the destination must start over", name, e.getMessage());
        }
        finalSet = set; // volatile: awaitFinal's readers see the whole array
        synchronized (lock) {
            switched = true;
            lock.notifyAll();
        }
        LOG.info("migration {}: the VM stopped here for the switchover; the destination gets the {} pages changed since it"
            + " fetched them", name, set.length);
    }

    @Override
    public void resumed() {
        try {
            ExportRecord.delete(image); // before the guest's first request here: from now on the disk changes
        } catch (final IOException e) {
            LOG.error("migration {}: could not delete {} ({}): delete it by hand before exporting this disk again", name,
                ExportRecord.beside(image), e.getMessage());
        }
        stopped = false;
        synchronized (lock) {
            switched = false;
        }
        finalSet = null;
        finalPages = -1;
        if (restored) {
            // Restored after a restart: it never saw what the destination fetched before, so it cannot tell it what the
            // guest changes from now on. Nobody may fill from it any more.
            LOG.warn("migration {}: the VM runs here again; this export was restored after a restart and knows nothing of what"
                + " the destination fetched before, so it is closed. Export again under a new name and start the destination"
                + " over from an empty file", name);
            closeServer();
            return;
        }
        LOG.warn("migration {}: the VM runs here again (the migration failed or was cancelled); the export goes on tracking its writes", name);
    }

    /** The same set every time once the switchover happened (the destination may ask again after a restart). */
    @Override
    public int[] awaitFinal(final long timeoutNanos) throws InterruptedException {
        final long deadline = System.nanoTime() + timeoutNanos;
        int[] set;
        synchronized (lock) {
            while (!switched || (set = finalSet) == null) {
                final long left = deadline - System.nanoTime();
                if (left <= 0) {
                    return null;
                }
                java.util.concurrent.TimeUnit.NANOSECONDS.timedWait(lock, left);
            }
        }
        finalPages = set.length;
        LOG.info("migration {}: handed the destination the final set: {} pages changed after it fetched them", name, set.length);
        return set.clone();
    }

    /** The pages whose changed bit is set, in order. */
    private int[] changedPages() {
        final int[] pages = new int[countChanged()];
        int n = 0;
        for (int i = 0; i < changed.length; i++) {
            long w = (long) BITS.getVolatile(changed, i);
            while (w != 0 && n < pages.length) {
                pages[n++] = i * 64 + Long.numberOfTrailingZeros(w);
                w &= w - 1;
            }
        }
        return n == pages.length ? pages : java.util.Arrays.copyOf(pages, n);
    }

    private int countChanged() {
        int n = 0;
        for (int i = 0; i < changed.length; i++) {
            n += Long.bitCount((long) BITS.getVolatile(changed, i));
        }
        return n;
    }

    /** The guest's write-cache mode, which QEMU does not send to the destination: it goes with the final set. */
    @Override
    public boolean guestWriteback() {
        return writebackAtSwitchover;
    }

    @Override
    public void destinationComplete() {
        if (!complete) {
            complete = true;
            LOG.info("migration {} complete: the destination engine has the whole disk and no longer needs this one; it can be"
                + " stopped", name);
        }
    }

    private void closeServer() {
        closed = true;
        device.export(null);
        server.close();
    }

    @Override
    public void close() {
        closeServer();
    }
}
