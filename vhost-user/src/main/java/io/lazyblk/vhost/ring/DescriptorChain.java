package io.lazyblk.vhost.ring;

/**
 * One validated descriptor chain, flattened: the device-readable buffers first, then the device-writable ones,
 * each as a native address inside a guest region and a length. Preallocated and reused; owned by one thread at
 * a time (the queue agent fills it, the request it is copied into carries it on).
 */
public final class DescriptorChain {
    public final long[] address;
    public final int[] length;
    /** Guest physical address of each buffer (what the dirty log is indexed by). */
    public final long[] gpa;
    /** Head descriptor index: the id the used ring entry must carry. */
    public int head;
    /** Number of buffers. */
    public int count;
    /** The first {@code readable} buffers are device-readable, the rest device-writable. */
    public int readable;
    public long readableBytes;
    public long writableBytes;
    /**
     * The chain's last buffer, also when it had more buffers than {@link #capacity()} (then only the first
     * {@code capacity} are in the arrays): its last byte is where a status byte goes.
     */
    public long lastAddress;
    public int lastLength;
    /** Guest physical address of the last buffer. */
    public long lastGpa;

    public DescriptorChain(final int capacity) {
        this.address = new long[capacity];
        this.length = new int[capacity];
        this.gpa = new long[capacity];
    }

    public int capacity() {
        return address.length;
    }

    public void clear(final int headIndex) {
        head = headIndex;
        count = 0;
        readable = 0;
        readableBytes = 0;
        writableBytes = 0;
        lastAddress = 0;
        lastLength = 0;
        lastGpa = 0;
    }

}
