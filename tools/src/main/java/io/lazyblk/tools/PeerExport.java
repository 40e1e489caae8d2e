package io.lazyblk.tools;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.persistence.PageStateFile;
import io.lazyblk.pull.provider.Availability;
import io.lazyblk.pull.provider.ImageExport;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Arrays;

/**
 * An engine's local file exported as a peer for other hosts' engines: it is served with the image's own manifest
 * (saved beside it by the engine), and only pages byte-identical to the image: pages the engine has not got yet, and
 * pages its guest wrote to, are answered "not here", so the asking engine takes them from its next source.
 *
 * <p>Two checks, in this order. The records: the engine's state file says which pages are durable and which sectors
 * its guest wrote (re-read as it grows, at most twice a second); a page outside them is not here. The bytes: every page
 * about to be sent is read into memory and checked against its SHA-256 in the manifest, and only those checked bytes are
 * sent ({@link ImageExport#verifyServed()}). The records lag the guest by up to a second (the engine records its writes
 * in rounds); the hash does not lag at all, so a guest write keeps its page from leaving the host from the moment it
 * lands, in every mode the engine runs in.
 */
public final class PeerExport {
    private static final long REFRESH_NANOS = 500_000_000L;

    private PeerExport() {
    }

    /** Where the engine keeps the provider's manifest of the image it fills {@code local} from. */
    public static Path manifestBeside(final Path local) {
        return local.resolveSibling(local.getFileName() + ".lzbmanifest");
    }

    /** Whether {@code path} is an engine's local file (it has a state file beside it). */
    public static boolean isEngineLocalFile(final Path path) {
        return Files.isRegularFile(PageStateFile.beside(path));
    }

    /** Saves {@code m} beside {@code local} (atomically), so the file can later be exported as a peer. */
    static void saveManifest(final Path local, final Manifest m) throws IOException {
        final Path target = manifestBeside(local);
        final ByteBuffer bytes = m.encode();
        if (Files.exists(target) && Arrays.equals(Files.readAllBytes(target), toArray(bytes.duplicate()))) {
            return;
        }
        final Path tmp = target.resolveSibling(target.getFileName() + ".tmp");
        Files.write(tmp, toArray(bytes));
        Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    /** The manifest an engine saved beside {@code local}, or null if there is none or it does not decode. */
    static Manifest savedManifest(final Path local) {
        try {
            return Manifest.decode(ByteBuffer.wrap(Files.readAllBytes(manifestBeside(local))));
        } catch (final IOException | IllegalArgumentException e) {
            return null;
        }
    }

    private static byte[] toArray(final ByteBuffer b) {
        final byte[] a = new byte[b.remaining()];
        b.get(a);
        return a;
    }

    /**
     * The export of engine local file {@code local} as {@code name}.
     *
     * @throws IOException saying what is missing or inconsistent, and what to do
     */
    public static ImageExport of(final String name, final Path local) throws IOException {
        final Path mf = manifestBeside(local);
        if (!Files.isRegularFile(mf)) {
            throw new IOException(local + " has a state file but no " + mf.getFileName() + " beside it: it was filled by an older"
                + " lazyblk, or is not an engine's local file; restart its engine once (it saves the manifest) to export it as a peer");
        }
        final Manifest m;
        try {
            m = Manifest.decode(ByteBuffer.wrap(Files.readAllBytes(mf)));
        } catch (final IllegalArgumentException e) {
            throw new IOException(mf + " is damaged: " + e.getMessage() + "; restart the engine of " + local + " to save it again", e);
        }
        if (m.isLive()) {
            // A copy of a live migration's export: no page hashes to check served pages against, so nothing would keep
            // its guest's writes from leaving the host.
            throw new IOException(local + " is a copy of a live migration's export (no page hashes): it cannot be exported as a peer");
        }
        final Pages pages = new Pages(PageStateFile.beside(local), m);
        return new ImageExport(name, local, m, pages, true); // every page checked against its hash before it is sent
    }

    /** Local pages per the engine's state file, refreshed when a page is asked for that the last read did not have. */
    static final class Pages implements Availability {
        private final Path stateFile;
        private final Manifest manifest;
        private volatile PageStateFile.Snapshot snapshot;
        private volatile long readAt;

        Pages(final Path stateFile, final Manifest manifest) throws IOException {
            this.stateFile = stateFile;
            this.manifest = manifest;
            this.snapshot = read();
            this.readAt = System.nanoTime();
        }

        private PageStateFile.Snapshot read() throws IOException {
            final PageStateFile.Snapshot s = PageStateFile.snapshot(stateFile);
            if (s.imageSize() != manifest.size() || !Arrays.equals(s.digest(), manifest.digest())) {
                throw new IOException(stateFile + " describes another image than the manifest beside it (size " + s.imageSize() + " vs "
                    + manifest.size() + "): the pair is inconsistent; do not export this file");
            }
            return s;
        }

        int localPages() {
            final PageStateFile.Snapshot s = snapshot;
            int n = 0;
            for (int p = 0; p < s.pageCount(); p++) {
                n += s.isLocal(p) ? 1 : 0;
            }
            return n;
        }

        int pageCount() {
            return snapshot.pageCount();
        }

        @Override
        public boolean has(final int firstPage, final int count) {
            if (holds(snapshot, firstPage, count)) {
                return true;
            }
            final long now = System.nanoTime();
            if (now - readAt < REFRESH_NANOS) {
                return false;
            }
            synchronized (this) {
                if (now - readAt >= REFRESH_NANOS) {
                    try {
                        snapshot = read(); // volatile: other connection threads see the whole new snapshot
                    } catch (final IOException e) {
                        // a torn read while the engine writes: keep the last snapshot, try again later
                    }
                    readAt = System.nanoTime();
                }
            }
            return holds(snapshot, firstPage, count);
        }

        /** Every byte of the range is durable in the local file and none was written by its guest. */
        private boolean holds(final PageStateFile.Snapshot s, final int firstPage, final int count) {
            final long start = manifest.geometry().pageStart(firstPage);
            final long end = Math.min(manifest.size(), start + (long) count * manifest.pageSize());
            for (long at = start; at < end; at = (at / s.pageSize() + 1) * s.pageSize()) {
                if (!s.isLocal((int) (at / s.pageSize()))) {
                    return false;
                }
            }
            return !s.guestWroteAny(start, end - start);
        }
    }
}
