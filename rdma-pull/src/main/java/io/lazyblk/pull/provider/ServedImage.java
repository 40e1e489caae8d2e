package io.lazyblk.pull.provider;

import io.lazyblk.pagemap.Manifest;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.StandardOpenOption;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * An export opened for serving: one read-only channel shared by every connection (positional reads only, so no
 * shared position), plus the test hook that corrupts chosen pages on the wire. Thread-safe.
 */
final class ServedImage implements AutoCloseable {
    final String name;
    final Manifest manifest;
    final FileChannel file;
    /** The image file: opened again read-only for each same-host client it is handed to. */
    final java.nio.file.Path path;
    /** Which pages can be served now ({@link Availability#ALL} for a golden image). */
    final Availability availability;
    /** Every page sent is checked against its hash first ({@link ImageExport#verifyServed()}). */
    final boolean verifyServed;
    /** Page bytes sent of this image (metrics: bytes sent per image). */
    final java.util.concurrent.atomic.LongAdder bytesSent = new java.util.concurrent.atomic.LongAdder();
    /** The export's live migration ({@link ImageExport#migration()}), or null. */
    final MigrationControl migration;
    /** What boots of this image read on demand, learned here and handed out; null with learning off, for a peer or a live disk. */
    final io.lazyblk.pull.profile.BootProfile profile;
    private final Set<Integer> corruptPages = ConcurrentHashMap.newKeySet();
    /** Checked once per request: the hook costs one volatile read when unused. Written after corruptPages.add. */
    private volatile boolean anyCorrupt;

    ServedImage(final ImageExport export, final io.lazyblk.pull.profile.ProfileSettings profiles) throws IOException {
        this.name = export.name();
        this.manifest = export.manifest();
        this.path = export.image();
        this.availability = export.availability();
        this.verifyServed = export.verifyServed();
        this.migration = export.migration();
        this.file = FileChannel.open(export.image(), StandardOpenOption.READ);
        final long size = file.size();
        if (size != manifest.size()) {
            file.close();
            throw new IOException("image '" + name + "' (" + export.image() + ") is " + size + " bytes but its manifest says "
                + manifest.size() + "; it changed after the manifest was built: build the manifest again");
        }
        // A golden image only: a peer (an engine's file, verified as served) is asked first by the chains that list it,
        // and the few boots it sees would hand them a poorer profile than the seed's, which sees every engine's first boot.
        // Nor a live disk (a migrating engine's): its boot is long over, and its manifest names no fixed image to learn for.
        this.profile = profiles.learn() && !export.verifyServed() && !manifest.isLive()
            ? io.lazyblk.pull.profile.BootProfile.open(name, manifest, export.profileFile(), profiles) : null;
    }

    /** The boot profile to hand to a client: none with learning off. */
    int[] profilePages() {
        return profile == null ? new int[0] : profile.pages();
    }

    void corruptForTesting(final int page) {
        if (page < 0 || page >= manifest.pageCount()) {
            throw new IllegalArgumentException("page " + page + " is not in image '" + name + "' (" + manifest.pageCount() + " pages)");
        }
        corruptPages.add(page);
        anyCorrupt = true;
    }

    /** True if a page of {@code [first, first + count)} is to be corrupted on the wire. */
    boolean corruptsAny(final int first, final int count) {
        if (!anyCorrupt) {
            return false;
        }
        for (int p = first; p < first + count; p++) {
            if (corruptPages.contains(p)) {
                return true;
            }
        }
        return false;
    }

    boolean corrupts(final int page) {
        return corruptPages.contains(page);
    }

    @Override
    public void close() throws IOException {
        file.close();
    }
}
