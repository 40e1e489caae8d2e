package io.lazyblk.tools;

import io.lazyblk.tools.MemoryMessages.Region;
import io.lazyblk.tools.RawChains.Used;
import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.BlkResponse;
import io.lazyblk.tools.frontend.FrontendConfig;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;
import io.lazyblk.tools.frontend.VringLayout;
import io.lazyblk.vhost.proto.Protocol;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.time.Duration;
import java.util.stream.Stream;

import static io.lazyblk.tools.RawChains.INDIRECT;
import static io.lazyblk.tools.RawChains.NEXT;
import static io.lazyblk.tools.RawChains.NO_STATUS;
import static io.lazyblk.tools.RawChains.READ;
import static io.lazyblk.tools.RawChains.WRITE;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The engine against a guest driver that sends broken requests, over a real socket, memfd and image file. Each
 * test proves four things: the guest gets {@code VIRTIO_BLK_S_IOERR}/{@code UNSUPP} (or, for a chain with no
 * trustworthy place for a status byte, a used entry of length 0 and no status); the image file's bytes, read on
 * the host, are unchanged; guest memory outside the guest's region is unchanged; and the same queue then serves a
 * good write and read.
 *
 * <p>"Outside the guest's region" is real memory: the memfd's first {@link #GUARD} bytes hold a known pattern and
 * are left out of the region the engine is given, yet the engine maps them (a region is mapped from file offset 0),
 * so a translation that let a guest address below the region through would land there and show.
 */
class EngineHostileGuestTest {
    private static final int IMAGE_BYTES = 256 * 1024;
    private static final long CAPACITY = IMAGE_BYTES / VirtioBlk.SECTOR_SIZE;
    private static final long RAM = 8L << 20;
    /** Guest physical [0, GUARD) is outside every region; the region is [GUARD, RAM) at the same memfd offsets. */
    private static final long GUARD = 64 * 1024;
    private static final int SECTOR = VirtioBlk.SECTOR_SIZE;

    @TempDir
    Path dir;
    private Path image;
    private Path socket;
    private Engine engine;
    private VhostUserFrontend fe;
    private BlkClient blk;
    private RawChains raw;
    private byte[] imageBefore;
    private byte[] guardBefore;

    @BeforeEach
    void start() throws IOException {
        image = TestImage.create(dir.resolve("disk.img"), IMAGE_BYTES, 1);
        socket = dir.resolve("vhost.sock");
        engine = Engine.start(Engine.Options.file(socket, image));
        connect(FrontEnds.CONFIG);
    }

    @AfterEach
    void stop() {
        if (fe != null) {
            fe.close();
        }
        if (engine != null) {
            engine.close();
        }
    }

    /** Connects, then shrinks the guest's memory to [GUARD, RAM) and fills [0, GUARD) with a known pattern. */
    private void connect(final FrontendConfig cfg) throws IOException {
        final GuestRam ram = GuestRam.create(RAM);
        ram.allocate(GUARD - 4096, 4096); // keep [4096, GUARD) (and page 0) away from rings and buffers
        fe = VhostUserFrontend.connect(socket, ram, cfg);
        blk = FrontEnds.client(fe, 0);
        raw = new RawChains(fe, 0);
        assertEquals(0, MemoryMessages.setMemTable(fe, new Region(GUARD, RAM - GUARD, ram.userAddress(GUARD), GUARD, ram.fd())),
            "the engine takes a region that leaves the memfd's first bytes out");
        guardBefore = TestImage.pattern((int) GUARD, 7);
        MemorySegment.copy(guardBefore, 0, ram.memory(), JAVA_BYTE, 0, guardBefore.length);
        imageBefore = TestImage.readAll(image);
    }

    private byte[] guard() {
        return fe.ram().segment(0, GUARD).toArray(JAVA_BYTE);
    }

    /** Overwrites part of the guard (a test puts a table there) and takes that as the guard's expected content. */
    private void writeIntoGuard(final long gpa, final byte[] bytes) {
        MemorySegment.copy(bytes, 0, fe.ram().memory(), JAVA_BYTE, gpa, bytes.length);
        guardBefore = guard();
    }

    /** The image and the memory outside the region are as before; the same queue serves a good write and read. */
    private void assertNoSideEffectsAndQueueStillServes() throws IOException {
        assertArrayEquals(imageBefore, TestImage.readAll(image), "the image file is unchanged");
        assertArrayEquals(guardBefore, guard(), "guest memory outside the region is unchanged");
        final byte[] data = TestImage.pattern(4096, 99);
        assertEquals(VirtioBlk.S_OK, blk.write(16, data), "the queue still serves a good write");
        assertArrayEquals(data, blk.read(16, data.length).data(), "and a good read");
        assertArrayEquals(data, TestImage.read(image, 16L * SECTOR, data.length), "which reached the image file");
    }

    private static void assertNoStatus(final int head, final Used u) {
        assertEquals(head, u.id(), "the used entry names the chain's head");
        assertEquals(0, u.length(), "a chain with no trustworthy status byte completes with used length 0");
        assertEquals(NO_STATUS, u.status(), "no status byte was written");
    }

    /** The status byte is {@code expected} and the used length covers it (it is the chain's last writable byte). */
    private static void assertStatus(final int expected, final long writableBytes, final Used u) {
        assertEquals(VirtioBlk.statusName(expected), VirtioBlk.statusName(u.status()));
        assertEquals(writableBytes, Integer.toUnsignedLong(u.length()), "the used length covers the status byte");
    }

    private static void assertStatus(final int expected, final int inLength, final BlkResponse r) {
        assertEquals(VirtioBlk.statusName(expected), VirtioBlk.statusName(r.status()));
        assertEquals(inLength + 1, r.usedLength(), "the used length covers the status byte");
    }

    /** {header, one data buffer, status} in descriptors 0, 1, 2, submitted by hand. */
    private Used headerBufferStatus(final int type, final long sector, final long gpa, final int len, final boolean writable) {
        raw.header(type, sector)
            .desc(0, raw.headerGpa, VirtioBlk.HEADER_SIZE, READ | NEXT, 1)
            .desc(1, gpa, len, (writable ? WRITE : READ) | NEXT, 2)
            .desc(2, raw.statusGpa, 1, WRITE, 0);
        return raw.submit(0);
    }

    // ---------------------------------------------------------------- buffers outside guest memory

    static Stream<Arguments> outsideGuestMemory() {
        return Stream.of(
            Arguments.of("below the region, in memory the engine maps", 4096L, 4096),
            Arguments.of("straddling the region's start", GUARD - SECTOR, 2 * SECTOR),
            Arguments.of("straddling the region's end", RAM - SECTOR, 2 * SECTOR),
            Arguments.of("just past the region's end", RAM, SECTOR),
            Arguments.of("wrapping past 2^64 into the guard", -SECTOR, 2 * SECTOR),
            Arguments.of("at 2^63", Long.MIN_VALUE, SECTOR));
    }

    @ParameterizedTest(name = "read into a buffer {0}: length 0, nothing written there")
    @MethodSource("outsideGuestMemory")
    void shouldRefuseReadIntoBufferOutsideGuestRegionWithoutWritingThere(final String where, final long gpa, final int len)
        throws IOException {
        final Used u = headerBufferStatus(VirtioBlk.T_IN, 0, gpa, len, true);

        assertNoStatus(0, u);
        assertNoSideEffectsAndQueueStillServes();
    }

    @ParameterizedTest(name = "write from a buffer {0}: length 0, image unchanged")
    @MethodSource("outsideGuestMemory")
    void shouldRefuseWriteFromBufferOutsideGuestRegionWithoutChangingImage(final String where, final long gpa, final int len)
        throws IOException {
        final Used u = headerBufferStatus(VirtioBlk.T_OUT, 0, gpa, len, false);

        assertNoStatus(0, u);
        assertNoSideEffectsAndQueueStillServes();
    }

    // ---------------------------------------------------------------- broken chains

    @Test
    void shouldCompleteLoopedChainWithLengthZero() throws IOException {
        raw.header(VirtioBlk.T_IN, 0)
            .desc(0, raw.headerGpa, VirtioBlk.HEADER_SIZE, READ | NEXT, 1)
            .desc(1, raw.dataGpa, SECTOR, WRITE | NEXT, 2)
            .desc(2, raw.statusGpa, 1, WRITE | NEXT, 1); // status -> data -> status -> ...
        raw.data(new byte[SECTOR]);

        final Used u = raw.submit(0);

        assertNoStatus(0, u);
        assertArrayEquals(new byte[SECTOR], raw.data(SECTOR), "the looped data buffer was not filled");
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldCompleteChainLongerThanTheQueueWithLengthZero() throws IOException {
        final int size = raw.q.size();
        raw.header(VirtioBlk.T_FLUSH, 0);
        for (int i = 0; i < size; i++) { // every descriptor, the last pointing back at the first
            raw.desc(i, raw.headerGpa, VirtioBlk.HEADER_SIZE, READ | NEXT, (i + 1) % size);
        }

        final Used u = raw.submit(0);

        assertNoStatus(0, u);
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldCompleteChainWithNextIndexOutOfRangeWithLengthZero() throws IOException {
        raw.header(VirtioBlk.T_FLUSH, 0)
            .desc(0, raw.headerGpa, VirtioBlk.HEADER_SIZE, READ | NEXT, raw.q.size()) // one past the table
            .desc(1, raw.statusGpa, 1, WRITE, 0);

        final Used u = raw.submit(0);

        assertNoStatus(0, u);
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldCompleteHeadIndexOutOfRangeWithLengthZero() throws IOException {
        raw.header(VirtioBlk.T_FLUSH, 0);

        final Used first = raw.submit(raw.q.size());
        final Used second = raw.submit(0xffff);

        assertNoStatus(raw.q.size(), first);
        assertNoStatus(0xffff, second);
        assertNoSideEffectsAndQueueStillServes();
    }

    // ---------------------------------------------------------------- indirect tables

    /** The bytes of a 3-entry indirect table holding a good read of sector 0: header, one sector of data, status. */
    private byte[] goodReadTable() {
        final MemorySegment t = MemorySegment.ofArray(new byte[3 * 16]);
        VringLayout.writeDescriptor(t, 0, raw.headerGpa, VirtioBlk.HEADER_SIZE, READ | NEXT, 1);
        VringLayout.writeDescriptor(t, 1, raw.dataGpa, SECTOR, WRITE | NEXT, 2);
        VringLayout.writeDescriptor(t, 2, raw.statusGpa, 1, WRITE, 0);
        return t.toArray(JAVA_BYTE);
    }

    @Test
    void shouldFollowAGoodIndirectTable() throws IOException {
        raw.header(VirtioBlk.T_IN, 0).data(new byte[SECTOR]);
        MemorySegment.copy(goodReadTable(), 0, fe.ram().memory(), JAVA_BYTE, raw.tableGpa, 48);
        raw.desc(0, raw.tableGpa, 48, INDIRECT, 0);

        final Used u = raw.submit(0);

        assertStatus(VirtioBlk.S_OK, SECTOR + 1, u);
        assertArrayEquals(TestImage.read(image, 0, SECTOR), raw.data(SECTOR), "the control case: the table is followed");
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldCompleteIndirectTableOutsideGuestMemoryWithLengthZeroAndNotFollowIt() throws IOException {
        raw.header(VirtioBlk.T_IN, 0).data(new byte[SECTOR]);
        writeIntoGuard(4096, goodReadTable()); // a table that would work, were it inside the region
        raw.desc(0, 4096, 48, INDIRECT, 0);

        final Used u = raw.submit(0);

        assertNoStatus(0, u);
        assertArrayEquals(new byte[SECTOR], raw.data(SECTOR), "the table outside the region was not followed");
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldCompleteIndirectTableStraddlingTheRegionEndWithLengthZero() throws IOException {
        raw.header(VirtioBlk.T_FLUSH, 0);
        raw.desc(0, RAM - 32, 48, INDIRECT, 0);

        final Used u = raw.submit(0);

        assertNoStatus(0, u);
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldCompleteIndirectTableWithMisalignedLengthWithLengthZero() throws IOException {
        raw.header(VirtioBlk.T_IN, 0).data(new byte[SECTOR]);
        MemorySegment.copy(goodReadTable(), 0, fe.ram().memory(), JAVA_BYTE, raw.tableGpa, 48);
        raw.desc(0, raw.tableGpa, 40, INDIRECT, 0); // two and a half descriptors

        final Used u = raw.submit(0);

        assertNoStatus(0, u);
        assertArrayEquals(new byte[SECTOR], raw.data(SECTOR));
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldCompleteNestedIndirectTableWithLengthZero() throws IOException {
        raw.header(VirtioBlk.T_IN, 0).data(new byte[SECTOR]);
        final long inner = raw.tableGpa + 1024;
        MemorySegment.copy(goodReadTable(), 0, fe.ram().memory(), JAVA_BYTE, inner, 48);
        raw.tableEntry(0, inner, 48, INDIRECT, 0);
        raw.desc(0, raw.tableGpa, 16, INDIRECT, 0);

        final Used u = raw.submit(0);

        assertNoStatus(0, u);
        assertArrayEquals(new byte[SECTOR], raw.data(SECTOR), "the nested table was not followed");
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldCompleteLoopInsideIndirectTableWithLengthZero() throws IOException {
        raw.header(VirtioBlk.T_FLUSH, 0)
            .tableEntry(0, raw.headerGpa, VirtioBlk.HEADER_SIZE, READ | NEXT, 1)
            .tableEntry(1, raw.statusGpa, 1, WRITE | NEXT, 1); // points at itself
        raw.desc(0, raw.tableGpa, 32, INDIRECT, 0);

        final Used u = raw.submit(0);

        assertNoStatus(0, u);
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldCompleteIndirectDescriptorWithLengthZeroWhenIndirectDescWasNotNegotiated() throws IOException {
        fe.close();
        connect(FrontEnds.CONFIG.withoutFeatures(Protocol.F_INDIRECT_DESC));
        assertFalse(fe.hasFeature(Protocol.F_INDIRECT_DESC));
        raw.header(VirtioBlk.T_IN, 0).data(new byte[SECTOR]);
        MemorySegment.copy(goodReadTable(), 0, fe.ram().memory(), JAVA_BYTE, raw.tableGpa, 48);
        raw.desc(0, raw.tableGpa, 48, INDIRECT, 0);

        final Used u = raw.submit(0);

        assertNoStatus(0, u);
        assertArrayEquals(new byte[SECTOR], raw.data(SECTOR), "the table was not followed");
        assertNoSideEffectsAndQueueStillServes();
    }

    // ---------------------------------------------------------------- buffer directions

    @Test
    void shouldCompleteChainWhoseStatusDescriptorIsDeviceReadableWithLengthZero() throws IOException {
        raw.header(VirtioBlk.T_IN, 0).data(new byte[SECTOR])
            .desc(0, raw.headerGpa, VirtioBlk.HEADER_SIZE, READ | NEXT, 1)
            .desc(1, raw.dataGpa, SECTOR, WRITE | NEXT, 2)
            .desc(2, raw.statusGpa, 1, READ, 0);

        final Used u = raw.submit(0);

        assertNoStatus(0, u);
        assertArrayEquals(new byte[SECTOR], raw.data(SECTOR));
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldNotWriteStatusIntoChainWithoutAnyDeviceWritableByte() throws IOException {
        raw.header(VirtioBlk.T_FLUSH, 0)
            .desc(0, raw.headerGpa, VirtioBlk.HEADER_SIZE, READ | NEXT, 1)
            .desc(1, raw.statusGpa, 1, READ, 0);

        final Used u = raw.submit(0);

        assertNoStatus(0, u);
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldRefuseReadIntoDeviceReadableBufferWithIoerrAndLeaveTheBufferUnchanged() throws IOException {
        final byte[] before = TestImage.pattern(4096, 3);
        raw.data(before);

        final Used u = headerBufferStatus(VirtioBlk.T_IN, 0, raw.dataGpa, 4096, false);

        assertStatus(VirtioBlk.S_IOERR, 1, u);
        assertArrayEquals(before, raw.data(4096), "the device wrote nothing into a buffer the driver marked device-readable");
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldRefuseWriteFromDeviceWritableBufferWithIoerrAndLeaveImageAndBufferUnchanged() throws IOException {
        final byte[] before = TestImage.pattern(4096, 4);
        raw.data(before);

        final Used u = headerBufferStatus(VirtioBlk.T_OUT, 0, raw.dataGpa, 4096, true);

        assertStatus(VirtioBlk.S_IOERR, 4096 + 1, u);
        assertArrayEquals(before, raw.data(4096));
        assertNoSideEffectsAndQueueStillServes();
    }

    // ---------------------------------------------------------------- sector ranges and lengths

    @Test
    void shouldServeTheLastSector() throws IOException {
        final BlkResponse r = blk.read(CAPACITY - 1, SECTOR);

        assertStatus(VirtioBlk.S_OK, SECTOR, r);
        assertArrayEquals(TestImage.read(image, (CAPACITY - 1) * SECTOR, SECTOR), r.data(), "the control case: capacity is exact");
    }

    @Test
    void shouldRefuseReadOneSectorPastTheLastWithIoerr() throws IOException {
        final BlkResponse r = blk.read(CAPACITY, SECTOR);

        assertStatus(VirtioBlk.S_IOERR, SECTOR, r);
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldRefuseWriteOneSectorPastTheLastWithIoerr() throws IOException {
        assertEquals(VirtioBlk.S_IOERR, blk.write(CAPACITY, TestImage.pattern(SECTOR, 5)));

        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldRefuseWriteStraddlingTheEndOfTheDiskWithIoerrAndWriteNoPartOfIt() throws IOException {
        assertEquals(VirtioBlk.S_IOERR, blk.write(CAPACITY - 1, TestImage.pattern(2 * SECTOR, 6)));

        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldRefuseWritesAtSectorsWhoseByteOffsetWrapsWithIoerr() throws IOException {
        final byte[] data = TestImage.pattern(SECTOR, 8);

        assertEquals(VirtioBlk.S_IOERR, blk.write(1L << 55, data), "sector 2^55: sector * 512 wraps to byte 0");
        assertEquals(VirtioBlk.S_IOERR, blk.write(-1L, data), "sector 2^64 - 1");
        assertEquals(VirtioBlk.S_IOERR, blk.write((1L << 55) + CAPACITY - 1, data), "wraps to the last sector");

        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldRefuseReadOfPartialSectorWithIoerrAndLeaveTheBufferUntouched() throws IOException {
        final BlkResponse r = blk.read(0, 1000);

        assertStatus(VirtioBlk.S_IOERR, 1000, r);
        for (final byte b : r.data()) {
            assertEquals(BlkClient.POISON, b, "no data written for a refused read");
        }
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldRefuseWriteOfPartialSectorWithIoerr() throws IOException {
        assertEquals(VirtioBlk.S_IOERR, blk.write(0, TestImage.pattern(SECTOR + 100, 9)));

        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldRefuseReadLongerThanTheDiskWithIoerr() throws IOException {
        final BlkResponse r = blk.read(0, IMAGE_BYTES + SECTOR);

        assertStatus(VirtioBlk.S_IOERR, IMAGE_BYTES + SECTOR, r);
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldRefuseWriteLongerThanTheDiskWithIoerr() throws IOException {
        assertEquals(VirtioBlk.S_IOERR, blk.write(0, TestImage.pattern(IMAGE_BYTES + SECTOR, 10)));

        assertNoSideEffectsAndQueueStillServes();
    }

    // ---------------------------------------------------------------- zero-length requests

    @Test
    void shouldCompleteChainOfOnlyZeroLengthDescriptorsWithLengthZero() throws IOException {
        raw.header(VirtioBlk.T_IN, 0)
            .desc(0, raw.headerGpa, 0, READ | NEXT, 1)
            .desc(1, raw.dataGpa, 0, WRITE | NEXT, 2)
            .desc(2, raw.statusGpa, 0, WRITE, 0);

        final Used u = raw.submit(0);

        assertNoStatus(0, u);
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldRefuseRequestWhoseHeaderDescriptorHasZeroLengthWithIoerr() throws IOException {
        raw.header(VirtioBlk.T_FLUSH, 0)
            .desc(0, raw.headerGpa, 0, READ | NEXT, 1)
            .desc(1, raw.statusGpa, 1, WRITE, 0);

        final Used u = raw.submit(0);

        assertStatus(VirtioBlk.S_IOERR, 1, u);
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldCompleteReadOfZeroBytesWithOkAndOnlyTheStatusByte() throws IOException {
        raw.header(VirtioBlk.T_IN, 0)
            .desc(0, raw.headerGpa, VirtioBlk.HEADER_SIZE, READ | NEXT, 1)
            .desc(1, raw.dataGpa, 0, WRITE | NEXT, 2) // a zero-length data descriptor
            .desc(2, raw.statusGpa, 1, WRITE, 0);

        final Used u = raw.submit(0);

        assertStatus(VirtioBlk.S_OK, 1, u);
        assertNoSideEffectsAndQueueStillServes();
    }

    // ---------------------------------------------------------------- seg_max

    /** A write of {@code buffers} 512-byte data buffers at sector 0: header, data in descriptors 1.., status last. */
    private Used writeWithDataBuffers(final int buffers, final byte[] data) {
        raw.header(VirtioBlk.T_OUT, 0).data(data)
            .desc(0, raw.headerGpa, VirtioBlk.HEADER_SIZE, READ | NEXT, 1);
        for (int i = 0; i < buffers; i++) {
            raw.desc(1 + i, raw.dataGpa + (long) i * SECTOR, SECTOR, READ | NEXT, 2 + i);
        }
        raw.desc(1 + buffers, raw.statusGpa, 1, WRITE, 0);
        return raw.submit(0);
    }

    @Test
    void shouldAcceptWriteOfExactlySegMaxDataBuffers() throws IOException {
        final int segMax = fe.blkConfig().segMax();
        final byte[] data = TestImage.pattern(segMax * SECTOR, 11);

        final Used u = writeWithDataBuffers(segMax, data);

        assertStatus(VirtioBlk.S_OK, 1, u);
        assertArrayEquals(data, TestImage.read(image, 0, data.length), "the control case: seg_max buffers are written");
    }

    @Test
    void shouldRefuseWriteOfMoreDataBuffersThanSegMaxWithIoerr() throws IOException {
        final int segMax = fe.blkConfig().segMax();
        assertEquals(126, segMax);

        final Used u = writeWithDataBuffers(segMax + 1, TestImage.pattern((segMax + 1) * SECTOR, 12));

        assertStatus(VirtioBlk.S_IOERR, 1, u);
        assertNoSideEffectsAndQueueStillServes();
    }

    // ---------------------------------------------------------------- request types

    @Test
    void shouldAnswerUnknownRequestTypeWithUnsupp() throws IOException {
        final BlkResponse r = blk.request(99, 0, null, SECTOR);

        assertStatus(VirtioBlk.S_UNSUPP, SECTOR, r);
        for (final byte b : r.data()) {
            assertEquals(BlkClient.POISON, b, "no data written for an unsupported request");
        }
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldAnswerDiscardWithNonZeroFlagsWithUnsuppAndDiscardNothing() throws IOException {
        final BlkResponse r = blk.request(VirtioBlk.T_DISCARD, 0, BlkClient.segment(0, 64, 1), 0);

        assertStatus(VirtioBlk.S_UNSUPP, 0, r);
        assertNoSideEffectsAndQueueStillServes();
    }

    @Test
    void shouldRefuseWriteOnReadOnlyEngineWithIoerrAndKeepServingReads() throws IOException {
        fe.close();
        fe = null;
        engine.close();
        final Path roSocket = dir.resolve("ro.sock");
        engine = Engine.start(Engine.Options.file(roSocket, image).withReadOnly(true));
        fe = VhostUserFrontend.connect(roSocket, GuestRam.create(FrontEnds.RAM_BYTES), FrontEnds.CONFIG);
        final BlkClient ro = FrontEnds.client(fe, 0);
        assertTrue(fe.hasFeature(VirtioBlk.F_RO), "the read-only engine offers VIRTIO_BLK_F_RO");

        assertEquals(VirtioBlk.S_IOERR, ro.write(0, TestImage.pattern(4096, 13)));
        assertEquals(VirtioBlk.S_UNSUPP, ro.writeZeroes(0, 8, false));
        assertEquals(VirtioBlk.S_UNSUPP, ro.discard(0, 8));

        assertArrayEquals(imageBefore, TestImage.readAll(image), "the image file is unchanged");
        final BlkResponse r = ro.read(0, 4096);
        assertEquals(VirtioBlk.S_OK, r.status());
        assertArrayEquals(TestImage.read(image, 0, 4096), r.data(), "the read-only engine still serves reads");
    }

    // ---------------------------------------------------------------- a corrupt avail index

    @Test
    void shouldStopTheQueueWithoutHangingWhenAvailIdxJumpsPastTheQueueSize() throws IOException {
        assertEquals(VirtioBlk.S_OK, blk.flush());
        final int consumed = raw.q.availIdx();
        final int usedBefore = raw.q.usedIdx();

        raw.q.rawAvailIdx(consumed + raw.q.size() + 5);
        raw.q.kick();

        assertFalse(raw.q.awaitUsed(Duration.ofMillis(200).toNanos()), "no garbage request is completed");
        assertEquals(usedBefore, raw.q.usedIdx());
        assertTrue(Protocol.has(fe.getFeatures(), Protocol.F_VERSION_1), "the control connection still answers");
        assertEquals(consumed, fe.stopQueue(0), "the queue stops where it stopped consuming");
        fe.close();
        fe = null;
        assertArrayEquals(imageBefore, TestImage.readAll(image), "the image file is unchanged");
        FrontEnds.assertEngineServesNewFrontEnd(socket, image, 24);
    }
}
