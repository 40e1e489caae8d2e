package io.lazyblk.pull.provider;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;

/**
 * What a provider grants one client for RDMA reads of one image: where to connect (RDMA CM, IPv4: all DiSNI
 * speaks), and the image's registered mapping as regions of at most {@link #regionLength} bytes starting every
 * {@link #stride} bytes, each with its own rkey. Regions overlap by {@code regionLength - stride} bytes, so every
 * read no longer than that overlap lies inside the region its first byte falls in: one READ, one rkey (DiSNI
 * registers at most 2 GiB per memory region). Immutable.
 *
 * <pre>
 * cm IPv4 4 bytes | cm port u16 | image length u64 | remote address u64 | stride u64 | region length u32
 * | region count u32 | rkey u32 x count                                                       (little endian)
 * </pre>
 *
 * The rkeys are valid only on the one queue pair the provider creates for this client's claimed CM address
 * (a protection domain per client); see docs/rdma.md.
 */
public record RdmaOffer(InetSocketAddress cm, long imageLength, long remoteAddress, long stride, int regionLength, int[] rkeys) {
    /** 4096 regions of 1 GiB: a 4 TiB image. Bounds what a client accepts from a server. */
    public static final int MAX_REGIONS = 4096;
    static final int FIXED_BYTES = 4 + 2 + 8 + 8 + 8 + 4 + 4;
    /** The largest offer a client reads. */
    public static final int MAX_BYTES = FIXED_BYTES + 4 * MAX_REGIONS;

    public RdmaOffer {
        rkeys = rkeys.clone();
        validate(cm, imageLength, remoteAddress, stride, regionLength, rkeys.length);
    }

    /** Regions needed to cover {@code imageLength} bytes every {@code stride} bytes. */
    public static int regionCount(final long imageLength, final long stride) {
        return (int) Math.min(Integer.MAX_VALUE, (imageLength + stride - 1) / stride);
    }

    private static void validate(final InetSocketAddress cm, final long imageLength, final long remoteAddress, final long stride,
                                 final int regionLength, final int count) {
        if (cm.getAddress() == null || cm.getAddress().getAddress().length != 4 || cm.getPort() < 1 || cm.getPort() > 0xFFFF) {
            throw new IllegalArgumentException("RDMA CM address " + cm + ": IPv4 and a port 1..65535 expected");
        }
        if (imageLength < 1 || stride < 1 || regionLength < 1) {
            throw new IllegalArgumentException("image length " + imageLength + ", stride " + stride + ", region length " + regionLength
                + ": all must be positive");
        }
        if (count < 1 || count > MAX_REGIONS || count != regionCount(imageLength, stride)) {
            throw new IllegalArgumentException(count + " regions for " + imageLength + " bytes every " + stride + " bytes (at most "
                + MAX_REGIONS + ")");
        }
        if (count > 1 && regionLength <= stride) {
            throw new IllegalArgumentException("regions of " + regionLength + " bytes every " + stride + " bytes do not overlap");
        }
        if (count == 1 && regionLength < imageLength) {
            throw new IllegalArgumentException("one region of " + regionLength + " bytes for an image of " + imageLength);
        }
        if (Long.compareUnsigned(remoteAddress + imageLength, remoteAddress) < 0) {
            throw new IllegalArgumentException("remote range at 0x" + Long.toHexString(remoteAddress) + " of " + imageLength
                + " bytes wraps around");
        }
    }

    /** Most bytes one read may span: the overlap of the regions (the whole image if it is one region). */
    public long maxReadBytes() {
        return rkeys.length == 1 ? imageLength : Math.min((long) regionLength - stride, imageLength);
    }

    /** The region a read at {@code offset} uses. */
    public int region(final long offset) {
        return (int) (offset / stride);
    }

    /** Bytes of region {@code i}: the image's tail may cut the last ones short. */
    public int regionBytes(final int i) {
        return (int) Math.min(regionLength, imageLength - i * stride);
    }

    /** A copy: the offer stays immutable. */
    @Override
    public int[] rkeys() {
        return rkeys.clone();
    }

    public int rkey(final int region) {
        return rkeys[region];
    }

    public int regionCount() {
        return rkeys.length;
    }

    public ByteBuffer encode() {
        final ByteBuffer b = ByteBuffer.allocate(FIXED_BYTES + 4 * rkeys.length).order(ByteOrder.LITTLE_ENDIAN);
        b.put(cm.getAddress().getAddress()).putShort((short) cm.getPort()).putLong(imageLength).putLong(remoteAddress)
            .putLong(stride).putInt(regionLength).putInt(rkeys.length);
        for (final int k : rkeys) {
            b.putInt(k);
        }
        return b.flip();
    }

    /**
     * Decodes an offer from a provider (hostile until checked) for an image of {@code expectedLength} bytes.
     *
     * @throws IllegalArgumentException saying what is wrong: truncated, oversized, inconsistent, or for another size
     */
    public static RdmaOffer decode(final ByteBuffer in, final long expectedLength) {
        final ByteBuffer b = in.slice().order(ByteOrder.LITTLE_ENDIAN);
        if (b.remaining() < FIXED_BYTES) {
            throw new IllegalArgumentException("RDMA offer of " + b.remaining() + " bytes is truncated (at least " + FIXED_BYTES + ")");
        }
        final byte[] ip = new byte[4];
        b.get(ip);
        final int port = Short.toUnsignedInt(b.getShort());
        final long length = b.getLong();
        final long remote = b.getLong();
        final long stride = b.getLong();
        final int regionLength = b.getInt();
        final int count = b.getInt();
        if (count < 1 || count > MAX_REGIONS) {
            throw new IllegalArgumentException("RDMA offer with " + Integer.toUnsignedString(count) + " regions (1 to " + MAX_REGIONS + ")");
        }
        if (b.remaining() != 4L * count) {
            throw new IllegalArgumentException("RDMA offer announces " + count + " regions but carries " + b.remaining() + " bytes of rkeys");
        }
        if (length != expectedLength) {
            throw new IllegalArgumentException("RDMA offer for " + length + " bytes; the image has " + expectedLength);
        }
        final int[] rkeys = new int[count];
        for (int i = 0; i < count; i++) {
            rkeys[i] = b.getInt();
        }
        try {
            return new RdmaOffer(new InetSocketAddress(InetAddress.getByAddress(ip), port), length, remote, stride, regionLength, rkeys);
        } catch (final UnknownHostException e) {
            throw new IllegalArgumentException("RDMA offer with a bad address", e); // cannot happen for 4 bytes
        }
    }

    @Override
    public boolean equals(final Object o) {
        return o instanceof RdmaOffer r && cm.equals(r.cm) && imageLength == r.imageLength && remoteAddress == r.remoteAddress
            && stride == r.stride && regionLength == r.regionLength && Arrays.equals(rkeys, r.rkeys);
    }

    @Override
    public int hashCode() {
        return cm.hashCode() * 31 + Arrays.hashCode(rkeys);
    }

    @Override
    public String toString() {
        return "RDMA CM " + cm + ", " + rkeys.length + " region(s) of " + regionLength + " bytes every " + stride + " bytes";
    }
}
