package io.lazyblk.pull.profile;

import io.lazyblk.pagemap.Manifest;
import org.agrona.collections.IntHashSet;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

/**
 * The boot profile a provider learned for one image: the provider pages its clients' boots read on demand, in the
 * order to fetch them, kept beside the image's manifest cache ({@link ProfileFile}) and handed to later engines.
 *
 * <p>Merging. Each boot (one connection's demand fetches within its learning window, see {@link BootRecorder}) is merged
 * as a union: the pages already listed keep their place, and the boot's pages not yet listed are appended in the order
 * it read them, up to {@link ProfileSettings#maxPages}. Later engines prefetch the profile, so their demand fetches are
 * what the profile lacked: appending them is what completes it. Nothing is ever dropped: a provider sees only demand
 * fetches, and a page a later boot found prefetched (so never asked for) cannot be told from a page it no longer reads.
 * So there is no aging: a page one boot once read stays listed until the image changes (which drops the whole profile)
 * or the file is removed; the size limit is what bounds it.
 *
 * <p>Persistence: {@link #saveIfDue} writes the profile at most every {@link #SAVE_INTERVAL_NANOS}, and {@link #save}
 * when the server closes. Thread-safe: merges are rare (one per boot), under this object's lock; {@link #pages()} is
 * a lock-free read of an immutable snapshot.
 */
public final class BootProfile {
    private static final Logger LOG = LoggerFactory.getLogger(BootProfile.class);
    /** 5 s between writes: a burst of boots costs one write, and a crash loses at most the last few seconds' boots. */
    public static final long SAVE_INTERVAL_NANOS = 5_000_000_000L;

    private final String image;
    private final Manifest manifest;
    /** Where the profile is kept, or null to keep it in memory only. */
    private final Path file;
    private final ProfileSettings settings;
    private final int maxPages;
    private final int pageCount;
    // Guarded by this: the merged list and its members.
    private final IntHashSet members = new IntHashSet();
    private int[] list;
    private int size;
    private boolean dirty;
    private long savedNanos;
    private String lastSaveFailure;
    /** The list as last merged; replaced, never changed, so readers need no lock (volatile: the merge's release). */
    private volatile int[] snapshot;
    private final Object saving = new Object();

    private BootProfile(final String image, final Manifest manifest, final Path file, final ProfileSettings settings, final int[] loaded) {
        this.image = image;
        this.manifest = manifest;
        this.file = file;
        this.settings = settings;
        this.maxPages = settings.maxPages(manifest.sourcePageSize());
        this.pageCount = ProfileFile.sourcePages(manifest);
        this.list = Arrays.copyOf(loaded, Math.max(16, loaded.length));
        this.size = loaded.length;
        for (final int p : loaded) {
            members.add(p);
        }
        this.snapshot = loaded.clone();
        this.savedNanos = System.nanoTime();
    }

    /**
     * The profile of {@code manifest}'s image, loaded from {@code file} if it holds one for this manifest. A file learned
     * for another version of the image is deleted (one log line); a malformed one is ignored (one log line) and replaced
     * at the next save.
     *
     * @param file where the profile lives, or null for memory only
     */
    public static BootProfile open(final String image, final Manifest manifest, final Path file, final ProfileSettings settings) {
        int[] pages = new int[0];
        if (file != null) {
            try {
                final ProfileFile.Decoded d = ProfileFile.read(file, manifest, settings.maxPages(manifest.sourcePageSize()));
                if (d != null) {
                    switch (d.kind()) {
                        case LOADED -> {
                            pages = d.pages();
                            LOG.info("boot profile of '{}': {} pages from {}", image, pages.length, file);
                        }
                        case STALE -> {
                            LOG.info("boot profile {} dropped: {}; learning the new image's from scratch", file, d.why());
                            Files.deleteIfExists(file);
                        }
                        case MALFORMED -> LOG.warn("boot profile {} refused: {}; ignored (replaced once a boot is learned)", file, d.why());
                    }
                }
            } catch (final IOException e) {
                LOG.warn("boot profile {} unreadable: {}; ignored", file, e.toString());
            }
        }
        return new BootProfile(image, manifest, file, settings, pages);
    }

    /** The pages to hand to an engine, in order; shared, must not be modified. */
    public int[] pages() {
        return snapshot;
    }

    /** A recorder for one connection's boot: cheap, allocated per connection. */
    public BootRecorder recorder() {
        return new BootRecorder(this, settings.window().toNanos(), maxPages, pageCount);
    }

    /** Where the profile is kept (null: memory only). */
    public Path file() {
        return file;
    }

    /** Merges one boot's pages {@code boot[0, n)} (in the order it read them; may repeat) into the profile. */
    synchronized void merge(final int[] boot, final int n) {
        int added = 0;
        for (int i = 0; i < n && size < maxPages; i++) {
            final int p = boot[i];
            if (p >= 0 && p < pageCount && members.add(p)) {
                if (size == list.length) {
                    list = Arrays.copyOf(list, Math.min(maxPages, list.length * 2));
                }
                list[size++] = p;
                added++;
            }
        }
        if (added > 0) {
            snapshot = Arrays.copyOf(list, size); // volatile: publishes the new list to pages()
            dirty = true;
        }
    }

    /** Saves the profile if it changed and the last save is {@link #SAVE_INTERVAL_NANOS} ago. */
    public void saveIfDue() {
        boolean due;
        synchronized (this) {
            due = dirty && System.nanoTime() - savedNanos >= SAVE_INTERVAL_NANOS;
        }
        if (due) {
            save();
        }
    }

    /** Saves the profile now if it changed since the last save (and has a file). */
    public void save() {
        if (file == null) {
            return;
        }
        synchronized (saving) { // one writer of the temporary file at a time
            final int[] pages;
            synchronized (this) {
                if (!dirty) {
                    return;
                }
                dirty = false;
                savedNanos = System.nanoTime();
                pages = snapshot;
            }
            try {
                ProfileFile.write(file, manifest, pages, pages.length);
                lastSaveFailure = null;
                LOG.info("saved the boot profile of '{}': {} pages ({} bytes of image) to {}", image, pages.length,
                    (long) pages.length * manifest.sourcePageSize(), file);
            } catch (final IOException e) {
                synchronized (this) {
                    dirty = true; // tried again at the next interval
                }
                if (!e.toString().equals(lastSaveFailure)) { // one line per distinct failure, not one per attempt
                    lastSaveFailure = e.toString();
                    LOG.warn("cannot save the boot profile of '{}' as {}: {}; kept in memory, tried again later", image, file, e.toString());
                }
            }
        }
    }
}
