package io.lazyblk.tools;

import io.lazyblk.blk.BlockBackend;
import io.lazyblk.blk.LazyStore;
import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pull.provider.Availability;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.s3.S3Config;
import io.lazyblk.pull.s3.S3Location;
import io.lazyblk.pull.token.TokenSource;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

/**
 * {@code image-server --export NAME=s3://BUCKET/KEY}: a host cache of an image in S3. A local copy ({@code FILL_DIR/NAME.raw}
 * and its state file) fills from S3 once, as an engine's local file does: in the background, and at demand priority when
 * an engine asks the server for a page it lacks (the request waits for it, {@link Availability#await}), so N engines of
 * one image on a host cost about one image of S3 reads. Every engine on the host and other hosts' engines (as a peer)
 * read it over tcp://; over shm:// once it is complete. A restart resumes the fill without reading again what is local;
 * a complete copy is served from disk without contacting S3.
 */
final class S3HostCache implements AutoCloseable {
    private final BlockBackend backend;
    private final ImageExport export;
    private final io.lazyblk.persistence.ImageLock lock;

    private S3HostCache(final BlockBackend backend, final ImageExport export, final io.lazyblk.persistence.ImageLock lock) {
        this.backend = backend;
        this.export = export;
        this.lock = lock;
    }

    /**
     * Opens (or resumes) the copy of {@code location} in {@code fillDir} and the export serving it as {@code name}.
     *
     * @param memoryBudget what the fill may hold in RAM, as {@code serve --memory-budget}
     * @param fillRate cap on the background fill in bytes per second, 0 for none
     */
    static S3HostCache open(final String name, final S3Location location, final S3Config config, final Path fillDir,
                            final long memoryBudget, final long fillRate) throws IOException {
        Files.createDirectories(fillDir);
        final Path local = fillDir.resolve(name + ".raw");
        // One filler per copy: a second image server on the same --fill-dir would write the same pages and state file.
        final Path lockFile = fillDir.resolve(name + ".raw.lock");
        if (!Files.exists(lockFile)) {
            try {
                Files.createFile(lockFile);
            } catch (final java.nio.file.FileAlreadyExistsException raced) {
                // made by the other starter: the lock below decides
            }
        }
        final io.lazyblk.persistence.ImageLock lock = io.lazyblk.persistence.ImageLock.tryAcquire(lockFile, false);
        if (lock == null) {
            throw new IOException("another image server fills " + local + " (it holds " + lockFile + "): give this one another"
                + " --fill-dir, or stop the other");
        }
        try {
            return open(name, location, config, local, memoryBudget, fillRate, lock);
        } catch (final IOException | RuntimeException e) {
            lock.close();
            throw e;
        }
    }

    private static S3HostCache open(final String name, final S3Location location, final S3Config config, final Path local,
                                    final long memoryBudget, final long fillRate, final io.lazyblk.persistence.ImageLock lock)
        throws IOException {
        final Engine.LazySource src = new Engine.LazySource(List.of(SourceUri.s3(location, config)), List.of(TokenSource.NONE),
            memoryBudget, fillRate, Duration.ofSeconds(30), 0);
        final BlockBackend backend = Engine.openLazy(local, false, src);
        try {
            final Manifest manifest;
            final Availability pages;
            if (backend instanceof LazyStore store) {
                manifest = store.source().manifest();
                pages = new StorePages(store, store.manifest().sourcePagesPerPage());
            } else {
                manifest = PeerExport.savedManifest(local); // complete: the manifest the fill saved beside the copy
                if (manifest == null) {
                    throw new IOException(local + " is complete but the manifest saved beside it is missing: delete " + local
                        + " and its state file to fill it again");
                }
                pages = Availability.ALL;
            }
            return new S3HostCache(backend, new ImageExport(name, local, manifest, pages, false, null), lock);
        } catch (final IOException | RuntimeException e) {
            backend.close();
            throw e;
        }
    }

    ImageExport export() {
        return export;
    }

    /** The fill's store, or null for a copy that was complete when opened. */
    LazyStore store() {
        return backend instanceof LazyStore s ? s : null;
    }

    @Override
    public void close() {
        backend.close();
        lock.close();
    }

    /** Which of the export's pages (the manifest's, {@code ratio} to a store page) the copy holds, and fetching the rest. */
    private record StorePages(LazyStore store, int ratio) implements Availability {
        @Override
        public boolean has(final int firstPage, final int count) {
            if (store.diskOnly()) {
                return true;
            }
            for (int p = firstPage / ratio; p <= (firstPage + count - 1) / ratio; p++) {
                if (!store.readable(p)) {
                    return false;
                }
            }
            return true;
        }

        @Override
        public boolean await(final int firstPage, final int count, final long timeoutNanos) {
            final long deadline = System.nanoTime() + timeoutNanos;
            for (int p = firstPage / ratio; p <= (firstPage + count - 1) / ratio; p++) {
                if (!store.awaitReadable(p, Math.max(0, deadline - System.nanoTime()))) {
                    return false;
                }
            }
            return true;
        }

        @Override
        public boolean complete() {
            return store.diskOnly();
        }
    }
}
