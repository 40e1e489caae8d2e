package io.lazyblk.vhost.ring;

/** Why {@link SplitVirtqueue#readChain} refused a chain; {@link #OK} when it did not. Codes are ints so the data path allocates nothing. */
public final class ChainError {
    public static final int OK = 0;
    public static final int HEAD_OUT_OF_RANGE = 1;
    public static final int NEXT_OUT_OF_RANGE = 2;
    public static final int LOOP_OR_TOO_LONG = 3;
    public static final int ADDRESS_OUTSIDE_GUEST = 4;
    public static final int INDIRECT_NOT_NEGOTIATED = 5;
    public static final int INDIRECT_BAD_TABLE = 6;
    public static final int INDIRECT_NESTED = 7;
    public static final int READABLE_AFTER_WRITABLE = 8;
    /** The chain is sound but has more buffers than the request can hold; {@link DescriptorChain#lastAddress} is its last buffer. */
    public static final int TOO_MANY_BUFFERS = 9;

    private static final String[] NAMES = {
        "ok", "head index out of range", "next index out of range", "looped or longer than the queue",
        "buffer outside guest memory", "indirect descriptor without INDIRECT_DESC", "indirect table out of range or misaligned",
        "nested indirect descriptor", "device-readable buffer after a device-writable one", "more buffers than seg_max allows"};

    private ChainError() {
    }

    public static String describe(final int code) {
        return code >= 0 && code < NAMES.length ? NAMES[code] : "unknown error " + code;
    }
}
