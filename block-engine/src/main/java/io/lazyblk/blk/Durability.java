package io.lazyblk.blk;

import io.lazyblk.persistence.LocalImage;
import io.lazyblk.persistence.PageStateFile;
import org.agrona.collections.IntArrayList;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;

/**
 * Makes what the local image holds durable, in the one order that survives a crash: take what a sync will cover
 * (pages merged and guest writes completed so far), {@code fdatasync} the image, then record exactly that in the
 * page-state file and {@code fdatasync} it. Anything that lands while the image syncs waits for the next round: it is
 * never recorded on the strength of a sync that may not have covered it.
 *
 * <p>Errors are sticky. Once a write or sync of the image or the state file failed, Linux may have dropped the dirty
 * pages (a later {@code fdatasync} can succeed without them), so nothing is recorded durable again: every later
 * {@link #persist} fails, and {@link #failure()} says what happened and what to do. Thread-safe: persists are serialized
 * by this object's monitor; {@link #addResident} may be called from any thread.
 */
final class Durability {
    private static final Logger LOG = LoggerFactory.getLogger(Durability.class);

    /** Told which pages a completed persist made durable (on the persisting thread, under its monitor). */
    interface Committed {
        void local(int page);
    }

    private final LocalImage image;
    private final PageStateFile state;
    private final GuestSectors guest;
    /** Pages merged into the image and not yet recorded (guarded by itself: any thread adds, the persister drains). */
    private final IntArrayList resident = new IntArrayList();
    /** The pages one persist covers (persister only). */
    private final IntArrayList covered = new IntArrayList();
    private volatile String failure;
    private long lastPersistNanos = System.nanoTime();

    Durability(final LocalImage image, final PageStateFile state, final GuestSectors guest) {
        this.image = image;
        this.state = state;
        this.guest = guest;
    }

    /** Page {@code p}'s bytes were written to the image: recorded local by the next persist that syncs after this. */
    void addResident(final int p) {
        synchronized (resident) {
            resident.addInt(p);
        }
    }

    int residentPending() {
        synchronized (resident) {
            return resident.size();
        }
    }

    boolean guestChanged() {
        return guest != null && guest.changed();
    }

    long lastPersistNanos() {
        return lastPersistNanos;
    }

    /** The first failure of the image or state file and what to do, or null while both are healthy. */
    String failure() {
        final String f = failure;
        if (f != null) {
            return f;
        }
        final String img = image.failure();
        return img != null ? fail("the local image " + image.path() + ": " + img) : null;
    }

    /**
     * One round: image sync, then the state that sync covers. {@code committed} hears of each page made local.
     *
     * @throws IOException (sticky) if the image or the state file failed, now or before
     */
    synchronized void persist(final Committed committed) throws IOException {
        if (failure() != null) {
            throw new IOException(failure);
        }
        // 1. What the sync below covers: pages merged and guest writes completed before it starts. Taken first; what
        //    lands while the image syncs is left for the next round.
        covered.clear();
        synchronized (resident) {
            covered.addAll(resident);
            resident.clear();
        }
        if (guest != null) {
            guest.takeChanged();
        }
        // 2. The image's data.
        final int rc = image.datasync();
        if (rc != 0) {
            throw new IOException(fail("the local image " + image.path() + ": " + image.failure()));
        }
        // 3. The record of it.
        for (int i = 0; i < covered.size(); i++) {
            state.markLocal(covered.getInt(i));
        }
        if (guest != null) {
            guest.recordTaken(state);
        }
        try {
            state.commit();
        } catch (final IOException e) {
            throw new IOException(fail("the page-state file " + PageStateFile.beside(image.path()) + ": " + e.getMessage()), e);
        }
        lastPersistNanos = System.nanoTime();
        for (int i = 0; i < covered.size(); i++) {
            committed.local(covered.getInt(i));
        }
    }

    private String fail(final String what) {
        synchronized (this) {
            if (failure == null) {
                failure = what + ADVICE;
                LOG.error("{}", failure);
            }
            return failure;
        }
    }

    /** What a storage failure means for the guest and what to do, appended to its description. */
    static final String ADVICE = ". Writes since the last successful FLUSH may be lost; every FLUSH now fails and nothing"
        + " more is recorded durable. Check the disk (dmesg, free space), then restart the engine: it resumes from what was"
        + " recorded before the failure";
}
