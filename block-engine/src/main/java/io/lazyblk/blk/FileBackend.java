package io.lazyblk.blk;

import io.lazyblk.persistence.LocalImage;
import io.lazyblk.persistence.PageStateFile;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;

/**
 * A {@link BlockBackend} over a local raw image file; owns the file. When the file is a lazily filled copy that is
 * complete (its page-state file is given), every guest write is also recorded in that state file, durably with each
 * FLUSH and at close: the file exported as a peer must never serve what the guest wrote. Thread-safe.
 */
public final class FileBackend implements BlockBackend {
    private static final Logger LOG = LoggerFactory.getLogger(FileBackend.class);
    private static final int EOPNOTSUPP = 95;
    private static final int EIO = 5;
    private static final int SECTOR = GuestSectors.SECTOR;
    private static final Durability.Committed NOTHING = p -> { };

    private final LocalImage image;
    private final PageStateFile state;
    private final GuestSectors guest;
    private final Durability durability;
    private volatile boolean loggedFailure;

    /** A plain image file. */
    public FileBackend(final LocalImage image) {
        this.image = image;
        this.state = null;
        this.guest = null;
        this.durability = null;
    }

    /**
     * A complete lazily filled copy and its state file, which this backend owns from here on: guest writes are recorded in it.
     */
    public FileBackend(final LocalImage image, final PageStateFile state) {
        this.image = image;
        this.state = state;
        this.guest = new GuestSectors(state);
        this.durability = new Durability(image, state, guest);
    }

    @Override
    public long sizeBytes() {
        return image.size();
    }

    @Override
    public boolean readOnly() {
        return image.readOnly();
    }

    @Override
    public int read(final IoRequest r) {
        return image.read(r.iov.address(), r.iovCount, r.offset, r.dataBytes);
    }

    @Override
    public int write(final IoRequest r) {
        return wrote(image.write(r.iov.address(), r.iovCount, r.offset, r.dataBytes), r.offset, r.dataBytes);
    }

    @Override
    public int writeZeroes(final IoRequest r, final long scratchIov, final long scratchLen) {
        return wrote(image.writeZeroes(r.dwzOffset, r.dwzLength, r.dwzUnmap, scratchIov, scratchLen), r.dwzOffset, r.dwzLength);
    }

    @Override
    public int discard(final IoRequest r) {
        final int rc = image.discard(r.dwzOffset, r.dwzLength);
        // Discard is a hint: the guest loses nothing when the file system cannot punch holes.
        return rc == -EOPNOTSUPP ? 0 : wrote(rc, r.dwzOffset, r.dwzLength);
    }

    private int wrote(final int rc, final long offset, final long length) {
        if (rc == 0 && guest != null) {
            guest.markDone(offset / SECTOR, length / SECTOR); // no merge runs here: only what is recorded matters
        }
        return rc;
    }


    @Override
    public int flush() {
        if (durability == null) {
            final int rc = image.datasync();
            if (rc != 0 && !loggedFailure) {
                loggedFailure = true; // once: the failure is sticky, every later FLUSH fails the same way
                LOG.error("{}", failure());
            }
            return rc;
        }
        try {
            durability.persist(NOTHING);
            return 0;
        } catch (final IOException e) {
            return -EIO; // logged once by Durability
        }
    }

    @Override
    public String failure() {
        if (durability != null) {
            return durability.failure();
        }
        final String f = image.failure();
        return f == null ? null : "the local image " + image.path() + ": " + f + Durability.ADVICE;
    }

    @Override
    public void close() {
        if (durability != null) {
            if (durability.failure() == null) {
                try {
                    durability.persist(NOTHING); // a clean stop never loses the record of a guest write
                } catch (final IOException e) {
                    // logged once by Durability
                }
            }
            try {
                state.close();
            } catch (final IOException e) {
                LOG.warn("closing the page state file: {}", e.getMessage());
            }
        }
        image.close();
    }
}
