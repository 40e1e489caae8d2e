package io.lazyblk.pull.provider;

import org.junit.jupiter.api.Test;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The RDMA offer and claim on the wire: exact round trips, and every hostile variant refused with a reason. */
class RdmaOfferTest {
    private static final long GIB = 1L << 30;
    private static final long SIZE = 5 * GIB / 2; // 2.5 GiB: three regions
    private static final int REGION = (int) (GIB + (16 << 20));

    private static RdmaOffer offer() throws Exception {
        return new RdmaOffer(new InetSocketAddress(InetAddress.getByName("10.0.0.5"), 20886), SIZE, 0x7f00_1234_0000L, GIB, REGION,
            new int[] {0x11, 0x22, 0xdeadbeef});
    }

    @Test
    void shouldRoundTripAnOfferAndLocateEveryReadInOneRegion() throws Exception {
        final RdmaOffer o = offer();
        final RdmaOffer back = RdmaOffer.decode(o.encode(), SIZE);
        assertEquals(o, back);
        assertArrayEquals(new int[] {0x11, 0x22, 0xdeadbeef}, back.rkeys());
        assertEquals(16 << 20, back.maxReadBytes(), "reads may span the overlap");
        assertEquals(1, back.region(GIB + 5));
        assertEquals(0, back.region(GIB - 1), "the read starting just before 1 GiB still lies in region 0");
        assertEquals((int) (SIZE - 2 * GIB), back.regionBytes(2), "the last region is cut at the image's end");
    }

    @Test
    void shouldRefuseTruncatedOversizedAndInconsistentOffers() throws Exception {
        final ByteBuffer good = offer().encode();
        final ByteBuffer truncated = good.duplicate().limit(RdmaOffer.FIXED_BYTES - 1);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> RdmaOffer.decode(truncated, SIZE)).getMessage().contains("truncated"));
        final ByteBuffer shortKeys = good.duplicate().limit(good.limit() - 1);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> RdmaOffer.decode(shortKeys, SIZE)).getMessage().contains("rkeys"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> RdmaOffer.decode(good.duplicate(), SIZE + 1)).getMessage()
            .contains("the image has"));
        final ByteBuffer hugeCount = copy(good);
        hugeCount.putInt(RdmaOffer.FIXED_BYTES - 4, -1);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> RdmaOffer.decode(hugeCount, SIZE)).getMessage().contains("regions"));
        final ByteBuffer noOverlap = copy(good);
        noOverlap.putInt(RdmaOffer.FIXED_BYTES - 8, (int) GIB);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> RdmaOffer.decode(noOverlap, SIZE)).getMessage().contains("overlap"));
        final ByteBuffer portZero = copy(good);
        portZero.putShort(4, (short) 0);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> RdmaOffer.decode(portZero, SIZE)).getMessage().contains("port"));
        final ByteBuffer wraps = copy(good);
        wraps.putLong(14, -16L);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> RdmaOffer.decode(wraps, SIZE)).getMessage().contains("wraps"));
        final ByteBuffer tooFewRegions = copy(good);
        tooFewRegions.putLong(22, 2 * GIB); // stride 2 GiB needs 2 regions, the offer says 3
        assertThrows(IllegalArgumentException.class, () -> RdmaOffer.decode(tooFewRegions, SIZE));
    }

    @Test
    void shouldRoundTripAClaimAndRefuseBadOnes() throws Exception {
        final InetSocketAddress a = new InetSocketAddress(InetAddress.getByName("10.1.2.3"), 40000);
        assertEquals(a, ProviderProtocol.decodeClaim(ByteBuffer.wrap(ProviderProtocol.encodeClaim(a))));
        assertThrows(IllegalArgumentException.class, () -> ProviderProtocol.decodeClaim(ByteBuffer.allocate(5)));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> ProviderProtocol.decodeClaim(ByteBuffer.allocate(6)))
            .getMessage().contains("port 0"));
        assertThrows(IllegalArgumentException.class,
            () -> ProviderProtocol.encodeClaim(new InetSocketAddress(InetAddress.getByName("::1"), 5)));
    }

    private static ByteBuffer copy(final ByteBuffer b) {
        final ByteBuffer c = ByteBuffer.allocate(b.remaining()).order(ByteOrder.LITTLE_ENDIAN);
        c.put(b.duplicate()).flip();
        return c;
    }
}
