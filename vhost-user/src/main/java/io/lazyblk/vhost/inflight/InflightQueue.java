package io.lazyblk.vhost.inflight;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.VarHandle;
import java.util.Arrays;

import static io.lazyblk.vhost.inflight.InflightLayout.DESC_NUM;
import static io.lazyblk.vhost.inflight.InflightLayout.ENTRY_COUNTER;
import static io.lazyblk.vhost.inflight.InflightLayout.ENTRY_INFLIGHT;
import static io.lazyblk.vhost.inflight.InflightLayout.ENTRY_NEXT;
import static io.lazyblk.vhost.inflight.InflightLayout.FEATURES;
import static io.lazyblk.vhost.inflight.InflightLayout.LAST_BATCH_HEAD;
import static io.lazyblk.vhost.inflight.InflightLayout.USED_IDX;
import static io.lazyblk.vhost.inflight.InflightLayout.VERSION;
import static io.lazyblk.vhost.inflight.InflightLayout.VERSION_1;
import static io.lazyblk.vhost.inflight.InflightLayout.entry;

/**
 * One split virtqueue's part of the in-flight region: which requests the device has taken from the ring and not yet
 * answered, kept in memory the front end holds on to, so that a device that restarts after a crash finds them and
 * runs them again ({@link #attach}). The order of every write is the spec's ("Inflight I/O tracking"), because a
 * crash may stop the device between any two of them:
 * <ul>
 *   <li>taking a request ({@link #taken}): its counter, then its inflight flag;</li>
 *   <li>answering a batch: each head linked into the batch list ({@link #linked}) before the used ring's index is
 *       published, then ({@link #published}) their inflight flags cleared, then {@code used_idx} set to the published
 *       index. A restart that finds {@code used_idx} behind the used ring's index knows the last batch was published
 *       and may not have been cleared, and clears it by walking the list.</li>
 * </ul>
 *
 * <p>Threads: {@link #attach} runs on the control thread before the queue starts; {@link #taken} on the queue agent
 * only (the avail side); {@link #linked} and {@link #published} by whoever holds the used side of the ring (see
 * SplitVirtqueue). The running queue only writes the region, never trusts what it reads back: the front end maps it
 * too. The region is everything a hostile front end (or the previous engine's bug) could have left: {@link #attach}
 * checks every field and index before use.
 */
public final class InflightQueue {
    private static final ValueLayout.OfLong U64 = ValueLayout.JAVA_LONG_UNALIGNED;
    private static final ValueLayout.OfShort U16 = ValueLayout.JAVA_SHORT_UNALIGNED;
    private static final VarHandle FLAG = ValueLayout.JAVA_BYTE.varHandle();
    private static final VarHandle IDX = ValueLayout.JAVA_SHORT.varHandle();

    private final MemorySegment region;
    private final int size;
    /** Next counter value (avail side): orders requests as they were taken, for resubmission. */
    private long counter;
    /** Heads of the batch being answered (used side): what {@link #published} clears, never read back from the region. */
    private final int[] batch;
    private int batchCount;

    /** {@code region}: this queue's slice of the in-flight region, {@link InflightLayout#queueRegionSize} long. */
    InflightQueue(final MemorySegment region, final int size) {
        this.region = region;
        this.size = size;
        this.batch = new int[size];
    }

    /** Whether a device has used this part before (its version is set): a queue attached to it resumes. */
    public boolean initialised() {
        return region.get(U16, VERSION) != 0;
    }

    /** What a queue resumes with: where it takes the ring up again, and what it must run again first. */
    public record Resume(int lastAvail, int nextUsed, int[] resubmit) {
    }

    /**
     * Prepares the queue to start and says where it resumes. A region nobody initialised (version 0) is initialised
     * and the queue starts at {@code base}, as without tracking. Otherwise the last batch is repaired, and the
     * requests still marked in flight are returned in the order they were taken: the queue runs them again before
     * anything new, and resumes taking new ones at {@code usedIdx +} their number (every request taken was either
     * answered, counted in the used index, or is marked; marks are set in the order requests are taken, so an
     * unmarked one is always among the last taken, and is taken again).
     *
     * @param queueSize the ring's size (SET_VRING_NUM)
     * @param base the index the front end asked the ring to start at (SET_VRING_BASE)
     * @param usedIdx the used ring's index, read from guest memory
     * @param availIdx the avail ring's index, read from guest memory
     */
    public Resume attach(final int queueSize, final int base, final int usedIdx, final int availIdx) throws InflightException {
        if (queueSize != size) {
            throw new InflightException("in-flight region for queues of " + size + " descriptors, but the queue has " + queueSize);
        }
        final int version = Short.toUnsignedInt(region.get(U16, VERSION));
        if (version == 0) {
            region.asSlice(entry(0), (long) InflightLayout.ENTRY_SIZE * size).fill((byte) 0);
            region.set(U64, FEATURES, 0L);
            region.set(U16, DESC_NUM, (short) size);
            region.set(U16, LAST_BATCH_HEAD, (short) 0);
            region.set(U16, USED_IDX, (short) usedIdx);
            // Release: a region that says version 1 has its header and entries set (only a crash reads it back).
            IDX.setRelease(region, (long) VERSION, (short) VERSION_1);
            counter = 0;
            batchCount = 0;
            return new Resume(base & 0xffff, base & 0xffff, new int[0]);
        }
        if (version != VERSION_1) {
            throw new InflightException("in-flight region of version " + version + "; this engine knows version 1");
        }
        final int descNum = Short.toUnsignedInt(region.get(U16, DESC_NUM));
        if (descNum != size) {
            throw new InflightException("in-flight region's queue says " + descNum + " descriptors, but the queue has " + size);
        }
        repairLastBatch(usedIdx);
        final int[] heads = new int[size];
        int k = 0;
        for (int h = 0; h < size; h++) {
            final byte f = region.get(ValueLayout.JAVA_BYTE, entry(h) + ENTRY_INFLIGHT);
            if (f == 0) {
                continue;
            }
            if (f != 1) {
                throw new InflightException("in-flight entry " + h + " has flag " + Byte.toUnsignedInt(f) + ", not 0 or 1");
            }
            heads[k++] = h;
        }
        final int outstanding = (availIdx - usedIdx) & 0xffff;
        if (k > outstanding) {
            throw new InflightException(k + " requests marked in flight, but the driver has only " + outstanding
                + " outstanding (avail index " + availIdx + ", used index " + usedIdx + ")");
        }
        final int[] resubmit = sortByCounter(Arrays.copyOf(heads, k));
        counter = k == 0 ? 0 : counterOf(resubmit[k - 1]) + 1;
        batchCount = 0;
        return new Resume((usedIdx + k) & 0xffff, usedIdx & 0xffff, resubmit);
    }

    /**
     * The spec's repair: {@code used_idx} behind the used ring's index means the device died after publishing its
     * last batch and before it recorded that: the batch's entries may still be marked. The batch is the list from
     * {@code last_batch_head}, as long as the difference; every index on it is checked, and a head met twice (which
     * no real batch holds) means the list is corrupt.
     */
    private void repairLastBatch(final int usedIdx) throws InflightException {
        final int recorded = Short.toUnsignedInt(region.get(U16, USED_IDX));
        if (recorded == usedIdx) {
            return;
        }
        final int n = (usedIdx - recorded) & 0xffff;
        if (n > size) {
            throw new InflightException("in-flight region's used index " + recorded + " is " + n
                + " behind the ring's " + usedIdx + ", more than the queue's " + size + " entries");
        }
        final boolean[] seen = new boolean[size];
        int head = Short.toUnsignedInt(region.get(U16, LAST_BATCH_HEAD));
        for (int i = 0; i < n; i++) {
            if (head >= size || seen[head]) {
                throw new InflightException("in-flight region's last batch list is corrupt at entry " + i + " (head " + head + ")");
            }
            seen[head] = true;
            region.set(ValueLayout.JAVA_BYTE, entry(head) + ENTRY_INFLIGHT, (byte) 0);
            if (i + 1 < n) {
                head = Short.toUnsignedInt(region.get(U16, entry(head) + ENTRY_NEXT));
            }
        }
        // Release: the cleared flags are in memory before the index says the batch is done (a crash now repairs again).
        IDX.setRelease(region, (long) USED_IDX, (short) usedIdx);
    }

    private int[] sortByCounter(final int[] heads) throws InflightException {
        final Integer[] boxed = new Integer[heads.length];
        for (int i = 0; i < heads.length; i++) {
            boxed[i] = heads[i];
        }
        Arrays.sort(boxed, (a, b) -> Long.compareUnsigned(counterOf(a), counterOf(b)));
        final int[] out = new int[heads.length];
        for (int i = 0; i < out.length; i++) {
            out[i] = boxed[i];
            if (i > 0 && counterOf(out[i]) == counterOf(out[i - 1])) {
                throw new InflightException("in-flight entries " + out[i - 1] + " and " + out[i] + " share counter "
                    + Long.toUnsignedString(counterOf(out[i])));
            }
        }
        return out;
    }

    private long counterOf(final int head) {
        return region.get(U64, entry(head) + ENTRY_COUNTER);
    }

    /** The queue took request {@code head} from the avail ring (queue agent only). A head out of range is not tracked. */
    public void taken(final int head) {
        if (head >= size) {
            return; // the chain is refused as HEAD_OUT_OF_RANGE; nothing to resubmit
        }
        region.set(U64, entry(head) + ENTRY_COUNTER, counter++);
        // Release: the counter is in memory before the flag that makes the entry count (a crash between the two
        // leaves the entry unmarked, and the request is taken again from the avail ring).
        FLAG.setRelease(region, entry(head) + ENTRY_INFLIGHT, (byte) 1);
    }

    /** Head {@code head} joins the batch about to be published (used side, before the used index is published). */
    public void linked(final int head) {
        if (head >= size || batchCount == size) {
            return;
        }
        region.set(U16, entry(head) + ENTRY_NEXT, region.get(U16, LAST_BATCH_HEAD));
        region.set(U16, LAST_BATCH_HEAD, (short) head);
        batch[batchCount++] = head;
    }

    /**
     * The batch was published with used index {@code usedIdx} (used side, after the release store of the used ring's
     * index): its entries are no longer in flight.
     */
    public void published(final int usedIdx) {
        for (int i = 0; i < batchCount; i++) {
            region.set(ValueLayout.JAVA_BYTE, entry(batch[i]) + ENTRY_INFLIGHT, (byte) 0);
        }
        batchCount = 0;
        // Release: the cleared flags are in memory before used_idx says the batch is done; a crash before this store
        // leaves used_idx behind, and the next start clears the batch again from the list. The driver cannot reuse
        // one of these heads (and have us mark it again) before it has read the used index published just before,
        // handled the answer and posted the head anew: these stores land long before that.
        IDX.setRelease(region, (long) USED_IDX, (short) usedIdx);
    }
}
