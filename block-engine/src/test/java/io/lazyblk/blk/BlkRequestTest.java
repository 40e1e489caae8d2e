package io.lazyblk.blk;

import io.lazyblk.vhost.ring.ChainError;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The virtio-blk request parser against hand-built chains over native "guest" memory. */
class BlkRequestTest {
    private static final long CAPACITY = 1 << 20;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment guest = arena.allocate(1 << 16, 4096);
    private final BlkDeviceConfig cfg = new BlkDeviceConfig(CAPACITY, false, 1, "serial-0123456789abcdefXYZ");
    private final BlkDeviceConfig roCfg = new BlkDeviceConfig(CAPACITY, true, 1, "ro");
    private final BlkRequest req = new BlkRequest(null, 8, arena);

    @AfterEach
    void close() {
        arena.close();
    }

    private void header(final long at, final int type, final long sector) {
        guest.set(JAVA_INT_UNALIGNED, at, type);
        guest.set(JAVA_INT_UNALIGNED, at + 4, 0);
        guest.set(JAVA_LONG_UNALIGNED, at + 8, sector);
    }

    /** Adds buffer (offset into guest, length); readable ones must come first, as the ring enforces. */
    private BlkRequestTest buf(final long at, final int len, final boolean writable) {
        final var c = req.chain;
        c.address[c.count] = guest.address() + at;
        c.length[c.count] = len;
        c.count++;
        if (writable) {
            c.writableBytes += len;
        } else {
            c.readable++;
            c.readableBytes += len;
        }
        return this;
    }

    private boolean parse(final BlkDeviceConfig c) {
        return req.parse(ChainError.OK, c);
    }

    @Test
    void shouldParseAReadIntoAnIovecOverTheDataBuffersAndPlaceStatusLast() {
        req.chain.clear(5);
        header(0, VirtioBlk.T_IN, 8);
        buf(0, 16, false).buf(4096, 4096, true).buf(8192, 1, true);
        assertTrue(parse(cfg));
        assertEquals(4096, req.offset);
        assertEquals(4096, req.dataBytes);
        assertEquals(1, req.iovCount);
        assertEquals(guest.address() + 4096, req.iov.get(JAVA_LONG, 0));
        assertEquals(4096, req.iov.get(JAVA_LONG, 8));
        assertEquals(guest.address() + 8192, req.statusAddr);
        assertEquals(4097, req.usedLen);
    }

    @Test
    void shouldAcceptHeaderDataAndStatusSharingBuffers() {
        req.chain.clear(0);
        // Header split over two readable buffers, data and status in one writable buffer.
        guest.set(JAVA_INT_UNALIGNED, 100, VirtioBlk.T_IN);
        guest.set(JAVA_INT_UNALIGNED, 104, 0);
        guest.set(JAVA_LONG_UNALIGNED, 200, 1);
        buf(100, 8, false).buf(200, 8, false).buf(4096, 513, true);
        assertTrue(parse(cfg));
        assertEquals(512, req.offset);
        assertEquals(512, req.dataBytes);
        assertEquals(guest.address() + 4096 + 512, req.statusAddr);
    }

    @Test
    void shouldParseAWriteSkippingTheHeaderInTheFirstBuffer() {
        req.chain.clear(0);
        header(0, VirtioBlk.T_OUT, 0);
        buf(0, 16 + 512, false).buf(8192, 1, true);
        assertTrue(parse(cfg));
        assertEquals(512, req.dataBytes);
        assertEquals(guest.address() + 16, req.iov.get(JAVA_LONG, 0));
        assertEquals(1, req.usedLen);
    }

    @Test
    void shouldRefuseSectorRangesPastCapacityIncludingWrapAround() {
        for (final long sector : new long[] {CAPACITY / 512, CAPACITY / 512 - 1 + 1, -1L, Long.MAX_VALUE / 256}) {
            req.chain.clear(0);
            header(0, VirtioBlk.T_IN, sector);
            buf(0, 16, false).buf(4096, 1024, true).buf(8192, 1, true);
            assertFalse(parse(cfg), "sector " + sector);
            assertEquals(VirtioBlk.S_IOERR, req.status);
        }
        req.chain.clear(0);
        header(0, VirtioBlk.T_IN, CAPACITY / 512 - 2);
        buf(0, 16, false).buf(4096, 1024, true).buf(8192, 1, true);
        assertTrue(parse(cfg), "the last two sectors are in range");
    }

    @Test
    void shouldRefuseDataThatIsNotWholeSectors() {
        req.chain.clear(0);
        header(0, VirtioBlk.T_IN, 0);
        buf(0, 16, false).buf(4096, 100, true).buf(8192, 1, true);
        assertFalse(parse(cfg));
        assertEquals(VirtioBlk.S_IOERR, req.status);
    }

    @Test
    void shouldCompleteZeroLengthReadsAtOnceWithOk() {
        req.chain.clear(0);
        header(0, VirtioBlk.T_IN, 0);
        buf(0, 16, false).buf(8192, 1, true);
        assertFalse(parse(cfg));
        assertEquals(VirtioBlk.S_OK, req.status);
    }

    @Test
    void shouldNotWriteStatusIntoAChainWithoutAWritableByte() {
        req.chain.clear(0);
        header(0, VirtioBlk.T_IN, 0);
        buf(0, 16, false).buf(16, 1, false);
        assertFalse(parse(cfg));
        assertEquals(-1, req.statusAddr);
        assertEquals(0, req.usedLen);
    }

    @Test
    void shouldFailAMissingHeaderAndARefusedChainWithoutTouchingMemory() {
        req.chain.clear(0);
        buf(0, 8, false).buf(8192, 1, true);
        assertFalse(parse(cfg));
        assertEquals(VirtioBlk.S_IOERR, req.status);

        req.chain.clear(0);
        assertFalse(req.parse(ChainError.LOOP_OR_TOO_LONG, cfg));
        assertEquals(-1, req.statusAddr);
    }

    @Test
    void shouldRefuseWritesOnAReadOnlyDevice() {
        req.chain.clear(0);
        header(0, VirtioBlk.T_OUT, 0);
        buf(0, 16 + 512, false).buf(8192, 1, true);
        assertFalse(parse(roCfg));
        assertEquals(VirtioBlk.S_IOERR, req.status);
    }

    @Test
    void shouldAnswerUnknownTypesWithUnsupp() {
        req.chain.clear(0);
        header(0, 99, 0);
        buf(0, 16, false).buf(8192, 1, true);
        assertFalse(parse(cfg));
        assertEquals(VirtioBlk.S_UNSUPP, req.status);
    }

    @Test
    void shouldWriteTheSerialForGetIdWithoutOverwritingStatus() {
        req.chain.clear(0);
        header(0, VirtioBlk.T_GET_ID, 0);
        guest.set(JAVA_BYTE, 8192 + 20, (byte) 0x55);
        buf(0, 16, false).buf(8192, 21, true);
        assertFalse(parse(cfg));
        req.writeStatus();
        assertEquals("serial-0123456789abc", new String(guest.asSlice(8192, 20).toArray(JAVA_BYTE), java.nio.charset.StandardCharsets.US_ASCII));
        assertEquals(VirtioBlk.S_OK, guest.get(JAVA_BYTE, 8192 + 20));
        assertEquals(21, req.usedLen);
    }

    @Test
    void shouldValidateDiscardAndWriteZeroesSegments() {
        // A good write-zeroes with unmap.
        req.chain.clear(0);
        header(0, VirtioBlk.T_WRITE_ZEROES, 0);
        guest.set(JAVA_LONG_UNALIGNED, 16, 8);
        guest.set(JAVA_INT_UNALIGNED, 24, 16);
        guest.set(JAVA_INT_UNALIGNED, 28, VirtioBlk.DWZ_F_UNMAP);
        buf(0, 32, false).buf(8192, 1, true);
        assertTrue(parse(cfg));
        assertEquals(4096, req.dwzOffset);
        assertEquals(8192, req.dwzLength);
        assertTrue(req.dwzUnmap);

        // Discard with flags is unsupported; past capacity is an I/O error; two segments exceed max_discard_seg.
        req.chain.clear(0);
        header(0, VirtioBlk.T_DISCARD, 0);
        buf(0, 32, false).buf(8192, 1, true);
        assertFalse(parse(cfg));
        assertEquals(VirtioBlk.S_UNSUPP, req.status);

        req.chain.clear(0);
        guest.set(JAVA_INT_UNALIGNED, 28, 0);
        guest.set(JAVA_LONG_UNALIGNED, 16, CAPACITY / 512 - 1);
        buf(0, 32, false).buf(8192, 1, true);
        assertFalse(parse(cfg));
        assertEquals(VirtioBlk.S_IOERR, req.status);

        req.chain.clear(0);
        buf(0, 48, false).buf(8192, 1, true);
        assertFalse(parse(cfg));
        assertEquals(VirtioBlk.S_UNSUPP, req.status);
    }
}
