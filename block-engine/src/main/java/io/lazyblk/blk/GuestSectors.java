package io.lazyblk.blk;

import io.lazyblk.persistence.PageStateFile;
import org.agrona.collections.IntArrayList;
import org.agrona.collections.LongArrayList;

import java.util.concurrent.atomic.AtomicLongArray;

/**
 * Which sectors the guest wrote, one bit each, in two sets: {@link #claimed} is set before a write starts (a merge
 * of fetched bytes skips those sectors), {@link #done} once it completed (what may be recorded durably: a crash must
 * never leave a sector marked guest-owned that holds neither the image's bytes nor the guest's). Words of
 * {@link #done} changed since they were last recorded are tracked, so recording them costs what changed, not the
 * whole bitmap. Thread-safe: bits only go from 0 to 1 except {@link #unclaimUnlessDone}, which its caller serializes.
 */
final class GuestSectors {
    static final int SECTOR = 512;

    final AtomicLongArray claimed;
    final AtomicLongArray done;
    /** One bit per word of {@link #done} changed since {@link #takeChanged}: 64 words (4096 sectors) a bit. */
    private final AtomicLongArray changedWords;
    /** Set after any {@link #markDone}; cleared by {@link #takeChanged}. Lets the persister skip the scan when idle. */
    private volatile boolean changed;
    /** {@link #takeChanged}'s output: word index and bits, reused (callers serialize it). */
    private final IntArrayList takenWords = new IntArrayList();
    private final LongArrayList takenBits = new LongArrayList();

    GuestSectors(final PageStateFile state) {
        final int words = state.guestWordCount();
        claimed = new AtomicLongArray(words);
        done = new AtomicLongArray(words);
        changedWords = new AtomicLongArray((words + 63) / 64);
        for (int w = 0; w < words; w++) {
            final long bits = state.guestWord(w);
            claimed.set(w, bits);
            done.set(w, bits);
        }
    }

    boolean wrote(final long sector) {
        return (claimed.get((int) (sector >>> 6)) & (1L << sector)) != 0;
    }

    /** Whether the guest claimed any of sectors {@code [firstSector, firstSector + count)}: a word read per 64 sectors. */
    boolean anyWritten(final long firstSector, final long count) {
        long s = firstSector;
        final long end = firstSector + count;
        while (s < end) {
            final int bit = (int) (s & 63);
            final int n = (int) Math.min(64 - bit, end - s);
            final long mask = n == 64 ? -1L : ((1L << n) - 1) << bit;
            if ((claimed.get((int) (s >>> 6)) & mask) != 0) {
                return true;
            }
            s += n;
        }
        return false;
    }

    void claim(final long firstSector, final long count) {
        mark(claimed, firstSector, count, null);
    }

    /** The write of these sectors completed: they may be recorded as the guest's from the next persist on. */
    void markDone(final long firstSector, final long count) {
        mark(done, firstSector, count, changedWords);
        // Volatile write after the marks: a persister that reads changed == true sees them (it reads changedWords after).
        changed = true;
    }

    /** Clears a claim on one sector whose write failed, unless a completed write owns it. Callers serialize per page. */
    void unclaimUnlessDone(final long sector) {
        final int word = (int) (sector >>> 6);
        final long bit = 1L << sector;
        if ((done.get(word) & bit) == 0) {
            claimed.getAndAccumulate(word, ~bit, (a, b) -> a & b);
        }
    }

    boolean changed() {
        return changed;
    }

    /**
     * Collects the words of {@link #done} changed since the last call into {@link #takenWords}/{@link #takenBits}:
     * what a sync that starts after this call covers. Callers serialize it (the persister's monitor).
     */
    void takeChanged() {
        takenWords.clear();
        takenBits.clear();
        changed = false; // before the scan: a write marked during the scan sets it again, and is found now or next time
        for (int i = 0; i < changedWords.length(); i++) {
            if (changedWords.get(i) == 0) {
                continue;
            }
            // getAndSet, then read the words: a writer ORs its done word before its changed bit, so a bit we clear
            // here covers a done word we read after; a writer whose bit lands after our swap is found next time.
            long summary = changedWords.getAndSet(i, 0);
            while (summary != 0) {
                final int w = i * 64 + Long.numberOfTrailingZeros(summary);
                summary &= summary - 1;
                takenWords.addInt(w);
                takenBits.addLong(done.get(w));
            }
        }
    }

    /** Records what {@link #takeChanged} collected into {@code state} (durable after its commit). */
    void recordTaken(final PageStateFile state) {
        for (int i = 0; i < takenWords.size(); i++) {
            state.orGuestWord(takenWords.getInt(i), takenBits.getLong(i));
        }
    }

    private static void mark(final AtomicLongArray bits, final long firstSector, final long count, final AtomicLongArray changedWords) {
        long s = firstSector;
        final long end = firstSector + count;
        while (s < end) {
            final int word = (int) (s >>> 6);
            final int bit = (int) (s & 63);
            final int n = (int) Math.min(64 - bit, end - s);
            final long mask = n == 64 ? -1L : ((1L << n) - 1) << bit;
            if ((bits.get(word) & mask) != mask) {
                bits.getAndAccumulate(word, mask, (a, b) -> a | b);
            }
            if (changedWords != null) {
                final long summaryBit = 1L << (word & 63);
                if ((changedWords.get(word >>> 6) & summaryBit) == 0) {
                    changedWords.getAndAccumulate(word >>> 6, summaryBit, (a, b) -> a | b);
                }
            }
            s += n;
        }
    }
}
