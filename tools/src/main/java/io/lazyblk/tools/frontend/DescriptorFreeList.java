package io.lazyblk.tools.frontend;

/**
 * Which descriptors of a ring's table are free, and which chains are in flight, as Linux's virtio_ring keeps it:
 * free descriptors are linked through {@code next}, and a chain taken from the list keeps those links as its own
 * desc.next values, so taking n descriptors walks n links and returning a chain is O(1). Kept in Java arrays,
 * never read back from guest memory. Not thread-safe (owned by its {@link DriverQueue}).
 */
final class DescriptorFreeList {
    private final int[] next;
    /** Descriptors the chain starting at head uses (0: head not in flight), and its last descriptor. */
    private final int[] chainLength;
    private final int[] chainTail;
    private int head;
    private int free;
    private int chains;

    DescriptorFreeList(final int size) {
        next = new int[size];
        for (int i = 0; i < size; i++) {
            next[i] = i + 1; // the last one points past the table: never followed while free > 0
        }
        chainLength = new int[size];
        chainTail = new int[size];
        free = size;
    }

    /** The first free descriptor (meaningful only when {@link #free()} is positive). */
    int first() {
        return head;
    }

    /** The free descriptor after {@code d}; in a taken chain, the descriptor after {@code d} in the chain. */
    int after(final int d) {
        return next[d];
    }

    /** Takes the {@code count} descriptors from {@link #first()} to {@code tail} (walked with {@link #after}). */
    void take(final int tail, final int count) {
        final int h = head;
        head = next[tail];
        free -= count;
        chainLength[h] = count;
        chainTail[h] = tail;
        chains++;
    }

    boolean inFlight(final int chainHead) {
        return chainHead >= 0 && chainHead < chainLength.length && chainLength[chainHead] != 0;
    }

    /** Returns the chain starting at {@code chainHead} (which must be {@link #inFlight}) to the free list. */
    void release(final int chainHead) {
        next[chainTail[chainHead]] = head;
        head = chainHead;
        free += chainLength[chainHead];
        chainLength[chainHead] = 0;
        chains--;
    }

    int free() {
        return free;
    }

    /** Chains taken and not yet released. */
    int chains() {
        return chains;
    }
}
