package io.lazyblk.tools.frontend;

import io.lazyblk.vhost.proto.Protocol;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The front end and {@link BlkClient} against the reference back end, qemu-storage-daemon, on a raw image file:
 * what the device does with our requests is checked in the image file's bytes, so a wrong header, chain or
 * memory table cannot pass by reading back its own mistake.
 */
class BlkClientQsdTest {
    private static final long IMAGE_BYTES = 64L << 20;
    private static final long RAM_BYTES = 16L << 20;

    @TempDir
    Path dir;
    private Path image;
    private QsdProcess qsd;
    private VhostUserFrontend fe;

    @BeforeEach
    void startBackEnd() throws IOException {
        assumeTrue(QsdProcess.installed(), "qemu-storage-daemon not installed");
        image = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(IMAGE_BYTES);
        }
    }

    @AfterEach
    void stop() {
        if (fe != null) {
            fe.close();
        }
        if (qsd != null) {
            qsd.close();
        }
    }

    private BlkClient connect(final FrontendConfig cfg, final int qsdQueues) throws IOException {
        qsd = QsdProcess.file(dir, image, qsdQueues);
        fe = VhostUserFrontend.connect(qsd.socket(), GuestRam.create(RAM_BYTES), cfg);
        return new BlkClient(fe, 0);
    }

    private static byte[] pattern(final int length, final long seed) {
        final byte[] b = new byte[length];
        new Random(seed).nextBytes(b);
        return b;
    }

    private byte[] imageBytes(final long offset, final int length) throws IOException {
        try (FileChannel ch = FileChannel.open(image, StandardOpenOption.READ)) {
            final ByteBuffer buf = ByteBuffer.allocate(length);
            while (buf.hasRemaining() && ch.read(buf, offset + buf.position()) > 0) {
                // read until full
            }
            return buf.array();
        }
    }

    private void fillImage(final long offset, final byte[] bytes) throws IOException {
        try (FileChannel ch = FileChannel.open(image, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.wrap(bytes), offset);
        }
    }

    @Test
    void shouldNegotiateWhatTheReferenceBackEndOffers() throws IOException {
        connect(FrontendConfig.defaults(), 1);
        assertTrue(fe.hasFeature(Protocol.F_VERSION_1));
        assertTrue(fe.hasFeature(Protocol.F_EVENT_IDX));
        assertTrue(fe.hasFeature(Protocol.F_INDIRECT_DESC));
        assertTrue(fe.hasFeature(VirtioBlk.F_FLUSH));
        assertTrue(Protocol.has(fe.protocolFeatures(), Protocol.PF_REPLY_ACK), "REPLY_ACK negotiated, so every ack was checked");
        assertEquals(IMAGE_BYTES / 512, fe.blkConfig().capacity());
        assertEquals(IMAGE_BYTES, fe.blkConfig().bytes());
    }

    @Test
    void shouldWritePatternThatLandsInImageFileAndReadsBack() throws IOException {
        final BlkClient blk = connect(FrontendConfig.defaults(), 1);
        final byte[] data = pattern(64 * 1024, 1);
        final long sector = 2048 + 7; // not page aligned on purpose

        assertEquals(VirtioBlk.S_OK, blk.write(sector, data));

        assertArrayEquals(data, imageBytes(sector * 512, data.length), "the device wrote our bytes at sector*512");
        final BlkResponse r = blk.read(sector, data.length);
        assertEquals(VirtioBlk.S_OK, r.status());
        assertArrayEquals(data, r.data());
    }

    @Test
    void shouldReadBytesPlacedInImageFileByTheHost() throws IOException {
        final BlkClient blk = connect(FrontendConfig.defaults(), 1);
        final byte[] data = pattern(8192, 2);
        fillImage(5 * 512, data);

        final BlkResponse r = blk.read(5, data.length);

        assertEquals(VirtioBlk.S_OK, r.status());
        assertArrayEquals(data, r.data());
    }

    @Test
    void shouldSplitDataOverManyDescriptorsAndStillLandInOrder() throws IOException {
        final BlkClient blk = connect(FrontendConfig.defaults(), 1).segmentBytes(512);
        final byte[] data = pattern(100 * 512, 3); // 102-descriptor chain

        assertEquals(VirtioBlk.S_OK, blk.write(4096, data));

        assertArrayEquals(data, imageBytes(4096L * 512, data.length));
        assertArrayEquals(data, blk.read(4096, data.length).data());
    }

    @Test
    void shouldCarryRequestsThroughIndirectTables() throws IOException {
        final BlkClient blk = connect(FrontendConfig.defaults(), 1).indirect(true).segmentBytes(4096);
        final byte[] data = pattern(32 * 4096, 4); // 34 entries in the table, one ring descriptor

        assertEquals(VirtioBlk.S_OK, blk.write(8192, data));

        assertArrayEquals(data, imageBytes(8192L * 512, data.length));
        final BlkResponse r = blk.read(8192, data.length);
        assertEquals(VirtioBlk.S_OK, r.status());
        assertArrayEquals(data, r.data());
        assertEquals(DriverQueue.DEFAULT_SIZE, blk.queue().freeDescriptors(), "every ring descriptor returned to the free list");
    }

    @Test
    void shouldFlush() throws IOException {
        final BlkClient blk = connect(FrontendConfig.defaults(), 1);
        assertEquals(VirtioBlk.S_OK, blk.write(0, pattern(4096, 5)));

        assertEquals(VirtioBlk.S_OK, blk.flush());
    }

    @Test
    void shouldReturnDeviceIdString() throws IOException {
        final BlkClient blk = connect(FrontendConfig.defaults(), 1);

        final BlkResponse r = blk.getId();

        assertEquals(VirtioBlk.S_OK, r.status());
        // The id is up to 20 bytes, NUL-terminated when shorter; bytes after the NUL are not the device's.
        int end = 0;
        while (end < r.data().length && r.data()[end] != 0) {
            end++;
        }
        final String id = new String(r.data(), 0, end, java.nio.charset.StandardCharsets.US_ASCII);
        assertEquals("vhost_user_blk", id, "QSD's fixed id, got " + Arrays.toString(r.data()));
    }

    @Test
    void shouldReadZerosAfterWriteZeroesWithAndWithoutUnmap() throws IOException {
        final BlkClient blk = connect(FrontendConfig.defaults(), 1);
        assertEquals(VirtioBlk.S_OK, blk.write(100, pattern(16 * 512, 6)));
        assertEquals(VirtioBlk.S_OK, blk.write(200, pattern(16 * 512, 7)));

        assertEquals(VirtioBlk.S_OK, blk.writeZeroes(100, 16, false));
        assertEquals(VirtioBlk.S_OK, blk.writeZeroes(200, 16, true));

        assertArrayEquals(new byte[16 * 512], blk.read(100, 16 * 512).data());
        assertArrayEquals(new byte[16 * 512], blk.read(200, 16 * 512).data());
        assertArrayEquals(new byte[16 * 512], imageBytes(100 * 512, 16 * 512));
    }

    @Test
    void shouldPunchDiscardedRangeOutOfImage() throws IOException {
        final BlkClient blk = connect(FrontendConfig.defaults(), 1);
        final int sectors = 2048; // 1 MiB, whole host pages so the hole is punched, not zero-filled partially
        assertEquals(VirtioBlk.S_OK, blk.write(16384, pattern(sectors * 512, 8)));

        assertEquals(VirtioBlk.S_OK, blk.discard(16384, sectors));

        // virtio does not promise zeros after discard; QSD with discard=unmap on a file punches a hole, so the
        // image proves the request (sector, count) reached the device as we meant it.
        assertArrayEquals(new byte[sectors * 512], imageBytes(16384L * 512, sectors * 512));
        assertArrayEquals(new byte[sectors * 512], blk.read(16384, sectors * 512).data());
    }

    @Test
    void shouldServeTwoQueuesIndependently() throws IOException {
        final BlkClient q0 = connect(FrontendConfig.defaults().withQueues(2), 2);
        final BlkClient q1 = new BlkClient(fe, 1);
        assertEquals(2, fe.queueNum());
        final byte[] a = pattern(4096, 9);
        final byte[] b = pattern(4096, 10);

        assertEquals(VirtioBlk.S_OK, q0.write(0, a));
        assertEquals(VirtioBlk.S_OK, q1.write(8, b));

        assertArrayEquals(b, q0.read(8, 4096).data(), "queue 0 sees what queue 1 wrote");
        assertArrayEquals(a, q1.read(0, 4096).data(), "queue 1 sees what queue 0 wrote");
        assertArrayEquals(a, imageBytes(0, 4096));
        assertArrayEquals(b, imageBytes(8 * 512, 4096));
    }

    @Test
    void shouldRejectUnknownRequestTypeWithUnsupp() throws IOException {
        final BlkClient blk = connect(FrontendConfig.defaults(), 1);

        assertEquals(VirtioBlk.S_UNSUPP, blk.request(99, 0, null, 512).status());
    }

    @Test
    void shouldWorkWithoutEventIdxUsingNoNotifyFlags() throws IOException {
        final BlkClient blk = connect(FrontendConfig.defaults().withoutFeatures(Protocol.F_EVENT_IDX), 1);
        final byte[] data = pattern(4096, 11);

        for (int i = 0; i < 20; i++) {
            assertEquals(VirtioBlk.S_OK, blk.write(i * 8L, data));
            assertArrayEquals(data, blk.read(i * 8L, 4096).data());
        }
        assertTrue(!fe.hasFeature(Protocol.F_EVENT_IDX));
    }

    @Test
    void shouldCrossSixteenBitRingIndexWrap() throws IOException {
        final BlkClient blk = connect(FrontendConfig.defaults().withRingBase(0xfff0), 1);
        final byte[] data = pattern(4096, 12);

        for (int i = 0; i < 40; i++) {
            assertEquals(VirtioBlk.S_OK, blk.write(i * 8L, data), "request " + i);
        }

        assertEquals((0xfff0 + 40) & 0xffff, blk.queue().usedIdx());
        assertArrayEquals(data, imageBytes(39 * 8L * 512, 4096));
    }
}
