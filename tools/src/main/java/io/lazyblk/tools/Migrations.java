package io.lazyblk.tools;

import io.lazyblk.blk.BlockBackend;
import io.lazyblk.blk.LazyStore;
import io.lazyblk.blk.VirtioBlkDevice;
import io.lazyblk.persistence.PageStateFile;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * An engine's part in live migrations without shared storage: as a source, the running {@code migrate-export}
 * ({@link MigrationExport}) and the record of an earlier switchover ({@link ExportRecord}); as a destination, the gate
 * before its VM's first request that takes the source's final set, and the watch that tells the source once the copy
 * is complete. (With shared storage the image itself changes hands: see {@link io.lazyblk.blk.Storage}.)
 */
final class Migrations implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Migrations.class);
    private final Engine engine;
    private final VirtioBlkDevice device;
    private final io.lazyblk.blk.Storage storage;
    private final Path localImage;
    /** A migrate-export's export, or null. Set on the status thread. */
    private volatile MigrationExport export;
    /** The running watch for a migration's completion (its identity); null stops it. */
    private volatile Object completionWatch;

    Migrations(final Engine engine, final VirtioBlkDevice device, final io.lazyblk.blk.Storage storage, final Path localImage) {
        this.engine = engine;
        this.device = device;
        this.storage = storage;
        this.localImage = localImage;
    }

    VirtioBlkDevice device() {
        return device;
    }

    MigrationExport export() {
        return export;
    }

    /**
     * A live migration's destination without shared storage (its source is a {@code migrate-export}, whose manifest is
     * live): before its VM's first request, asks the source engine for the pages its guest changed after this engine
     * fetched them (the source hands them over at its switchover, which came first: QEMU starts this side's queues
     * after it), and has them fetched again. Then, once the copy is complete, tells the source so.
     */
    io.lazyblk.blk.Storage.WhileClosed beforeServing(final BlockBackend opened, final Engine.Options o, final Engine.LazySource src)
        throws IOException {
        forgetHandover();
        if (!(opened instanceof LazyStore l) || !l.manifest().isLive()) {
            return null;
        }
        final SourceUri u = src.sources().get(0);
        final long t0 = System.nanoTime();
        final io.lazyblk.pull.tcp.MigrationLink link = io.lazyblk.pull.tcp.MigrationLink.connect(u.address(), u.image(), src.token(0),
            Engine.HANDSHAKE_TIMEOUT);
        try {
            if (!java.util.Arrays.equals(link.manifest().digest(), PageStateFile.identity(PageStateFile.beside(o.localImage())).digest())) {
                throw new IOException(u + " now exports another disk than the one this copy was filled from (its source engine"
                    + " restarted, or the name was reused): this copy cannot be completed from it. Cancel the migration, delete "
                    + o.localImage() + " and its state file, and start the destination again");
            }
            final int[] changed = link.awaitFinal(o.lockWait());
            device.writeback(link.guestWriteback()); // QEMU does not send the guest's choice to this side again
            final int exportPage = link.manifest().pageSize();
            final int page = l.pageSize();
            LOG.info("migration switchover: the source hands over {} pages its guest changed after this engine fetched them"
                + " ({} ms); they are fetched again before the VM is served", changed.length, (System.nanoTime() - t0) / 1_000_000);
            final Path stateFile = PageStateFile.beside(o.localImage());
            final PageStateFile.Identity id = PageStateFile.identity(stateFile);
            link.close(); // an idle link would meet the source's idle timeout: the completion connects anew
            return () -> {
                try (PageStateFile st = PageStateFile.openOrCreate(stateFile, id.imageSize(), id.pageSize(), id.digest())) {
                    for (final int p : changed) {
                        st.markAbsent((int) ((long) p * exportPage / page));
                    }
                    st.commit(); // durable before anything is served: a restart must not take those pages as local
                }
                watchCompletion(() -> io.lazyblk.pull.tcp.MigrationLink.connect(u.address(), u.image(), src.token(0), Engine.HANDSHAKE_TIMEOUT));
            };
        } catch (final IOException | RuntimeException e) {
            link.close();
            throw e;
        }
    }

    /**
     * The VM runs on this engine's disk: a record of an earlier switchover (an {@link ExportRecord}, left when this engine
     * was restarted after handing the disk to a migration's destination) no longer holds, as the disk changes from now on.
     * A running export deletes it itself ({@code MigrationExport.resumed}).
     */
    void forgetHandover() throws IOException {
        if (export == null && localImage != null && Files.exists(ExportRecord.beside(localImage))) {
            LOG.warn("{} recorded a migration's switchover, but the VM runs on this disk again: deleting it (that migration's"
                + " destination cannot finish from this disk any more)", ExportRecord.beside(localImage));
            ExportRecord.delete(localImage);
        }
    }

    /** Connects a link to the migration's source. */
    @FunctionalInterface
    private interface LinkOpener {
        io.lazyblk.pull.tcp.MigrationLink open() throws IOException;
    }

    /** Tells the migration's source once this engine's copy is complete (disk-only), on a thread of its own. */
    private void watchCompletion(final LinkOpener opener) {
        final Object token = new Object();
        completionWatch = token;
        final Thread t = new Thread(() -> {
            while (completionWatch == token) {
                final LazyStore s = engine.lazyStore();
                if (s != null && !s.diskOnly()) {
                    s.releaseDiskOnly(); // the final set is applied: this store (opened after it) may complete
                }
                if (storage.current() != null && (s == null || s.diskOnly())) {
                    try (io.lazyblk.pull.tcp.MigrationLink link = opener.open()) {
                        link.complete();
                        LOG.info("migration complete: this engine has the whole disk and told the source engine, which can stop");
                    } catch (final IOException e) {
                        LOG.warn("this engine has the whole disk, but could not tell the migration's source engine so ({});"
                            + " it can be stopped anyway", e.getMessage());
                    }
                    return;
                }
                java.util.concurrent.locks.LockSupport.parkNanos(200_000_000L);
            }
        }, "migration-done");
        t.setDaemon(true);
        t.start();
    }

    /**
     * Exports this engine's live disk for a live migration without shared storage ({@code lazyblk migrate-export}). One at
     * a time: a second one is refused while the first has neither completed nor closed.
     */
    synchronized MigrationExport migrateExport(final InetSocketAddress listen, final String name, final byte[] secret, final long rate)
        throws IOException {
        final MigrationExport running = export;
        if (running != null && !"complete".equals(running.state()) && !"closed".equals(running.state())) {
            throw new IOException("this engine already exports its disk as " + running.name() + " on "
                + StatusServer.hostPort(running.address()) + " (migration " + running.state() + ")");
        }
        if (localImage == null) {
            throw new IOException("this engine serves the null disk: there is nothing to migrate");
        }
        if (storage.current() == null) {
            throw new IOException("this engine does not hold its image now (status mode " + (storage.standingBy() ? "standby" : "handed-over")
                + "): export from the engine that serves the VM");
        }
        if (running != null) {
            running.close();
        }
        export = MigrationExport.start(name, device, engine.lazyStore(), storage.sizeBytes(), localImage, listen, secret, rate);
        return export;
    }

    @Override
    public void close() {
        final MigrationExport x = export;
        if (x != null) {
            x.close();
        }
        completionWatch = null;
    }
}
