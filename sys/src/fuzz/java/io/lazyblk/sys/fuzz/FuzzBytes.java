package io.lazyblk.sys.fuzz;

import java.io.ByteArrayOutputStream;
import java.util.Arrays;

/**
 * A fuzz input read front to back as little-endian fields; past its end every read gives zeros (an empty array for
 * {@link #bytes}), so a harness decodes any input without checks of its own. {@link Writer} writes the same fields,
 * for seed inputs that stay readable in their generator. Not thread-safe.
 */
public final class FuzzBytes {
    private final byte[] data;
    private int pos;

    public FuzzBytes(final byte[] data) {
        this.data = data;
    }

    public boolean more() {
        return pos < data.length;
    }

    public int remaining() {
        return data.length - pos;
    }

    public int u8() {
        return pos < data.length ? data[pos++] & 0xff : 0;
    }

    public int u16() {
        return u8() | u8() << 8;
    }

    public int u32() {
        return u16() | u16() << 16;
    }

    public long u64() {
        return Integer.toUnsignedLong(u32()) | (long) u32() << 32;
    }

    public boolean bool() {
        return (u8() & 1) != 0;
    }

    /** One of {@code n} choices (n at most 256). */
    public int pick(final int n) {
        return u8() % n;
    }

    /** The next {@code n} bytes, fewer at the end of the input. */
    public byte[] bytes(final int n) {
        final int take = Math.max(0, Math.min(n, remaining()));
        final byte[] b = Arrays.copyOfRange(data, pos, pos + take);
        pos += take;
        return b;
    }

    public byte[] rest() {
        return bytes(remaining());
    }

    /** Builds inputs field by field, in the order and widths {@link FuzzBytes} reads them. */
    public static final class Writer {
        private final ByteArrayOutputStream out = new ByteArrayOutputStream();

        public Writer u8(final int v) {
            out.write(v);
            return this;
        }

        public Writer u16(final int v) {
            return u8(v).u8(v >>> 8);
        }

        public Writer u32(final int v) {
            return u16(v).u16(v >>> 16);
        }

        public Writer u64(final long v) {
            return u32((int) v).u32((int) (v >>> 32));
        }

        public Writer bool(final boolean v) {
            return u8(v ? 1 : 0);
        }

        public Writer bytes(final byte[] b) {
            out.writeBytes(b);
            return this;
        }

        public byte[] toByteArray() {
            return out.toByteArray();
        }
    }

    /** The remaining bytes of {@code b}, copied (its position unchanged): what a target compares encodings with. */
    public static byte[] toArray(final java.nio.ByteBuffer b) {
        final byte[] out = new byte[b.remaining()];
        b.duplicate().get(out);
        return out;
    }
}
