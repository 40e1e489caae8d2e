package io.lazyblk.tools.frontend;

import io.lazyblk.vhost.proto.Protocol;
import io.lazyblk.vhost.proto.Request;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.time.Duration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** Control-path behaviour of {@link VhostUserFrontend}, including its raw API, against qemu-storage-daemon. */
class VhostUserFrontendQsdTest {
    private static final long RAM_BYTES = 8L << 20;

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
            f.setLength(16L << 20);
        }
        qsd = QsdProcess.file(dir, image, 1);
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

    @Test
    void shouldReportRingBaseOfRequestsConsumedWhenStoppedAndResumeAfterRestart() throws IOException {
        fe = VhostUserFrontend.connect(qsd.socket(), GuestRam.create(RAM_BYTES), FrontendConfig.defaults().withRingBase(100));
        final BlkClient blk = new BlkClient(fe, 0);
        for (int i = 0; i < 5; i++) {
            assertEquals(VirtioBlk.S_OK, blk.write(i, new byte[512]));
        }

        final int base = fe.stopQueue(0);

        assertEquals(105, base, "GET_VRING_BASE is the next avail index the device would consume");
        fe.restartQueue(0, base);
        assertEquals(VirtioBlk.S_OK, blk.flush(), "the queue serves again from where it stopped");
    }

    @Test
    void shouldFailHandshakeClearlyWhenAskingForMoreQueuesThanOffered() {
        final IOException e = assertThrows(IOException.class,
            () -> VhostUserFrontend.connect(qsd.socket(), GuestRam.create(RAM_BYTES), FrontendConfig.defaults().withQueues(2)));

        assertTrue(e.getMessage().contains("asked for 2 queues but the back end supports 1"), e.getMessage());
    }

    @Test
    void shouldWriteWriteCacheByteThroughSetConfig() throws IOException {
        fe = VhostUserFrontend.connect(qsd.socket(), GuestRam.create(RAM_BYTES));
        final int wceOffset = 32;
        // QSD 7.2's GET_CONFIG ignores the offset and copies from byte 0, so read the whole space and index it.
        final int wce = fe.getConfig(0, BlkConfig.SIZE)[wceOffset];

        assertEquals(0, fe.setConfig(wceOffset, new byte[] {(byte) (wce ^ 1)}));

        assertEquals(wce ^ 1, fe.getConfig(0, BlkConfig.SIZE)[wceOffset]);
        assertEquals(wce ^ 1, BlkConfig.parse(fe.getConfig(0, BlkConfig.SIZE)).wce());
    }

    @Test
    void shouldSeeBackEndHangUpAfterUnknownRequestAndReadNullReply() throws IOException {
        fe = VhostUserFrontend.open(qsd.socket(), GuestRam.create(RAM_BYTES), Duration.ofSeconds(5));

        fe.sendRaw(0x10000, Protocol.VERSION, new byte[0]);

        assertTrue(fe.isClosedByPeer(Duration.ofSeconds(5)));
        assertNull(fe.readReply(), "EOF reads as null");
        assertTrue(qsd.isAlive(), "the daemon only dropped this connection");
    }

    @Test
    void shouldKeepConnectionAndAnswerValidRawRequest() throws IOException {
        fe = VhostUserFrontend.open(qsd.socket(), GuestRam.create(RAM_BYTES), Duration.ofSeconds(5));

        fe.sendRaw(Request.GET_FEATURES.code, Protocol.VERSION, new byte[0]);
        final Reply r = fe.readReply();

        assertEquals(Request.GET_FEATURES.code, r.code());
        assertEquals(Protocol.VERSION | Protocol.FLAG_REPLY, r.flags());
        assertTrue(Protocol.has(r.u64(), Protocol.F_VERSION_1));
        assertFalse(fe.isClosedByPeer(Duration.ofMillis(100)));
    }

    @Test
    void shouldSendArbitraryBytesAsOneHeaderAndPayload() throws IOException {
        fe = VhostUserFrontend.open(qsd.socket(), GuestRam.create(RAM_BYTES), Duration.ofSeconds(5));

        // GET_QUEUE_NUM written by hand, header and all.
        fe.sendRawBytes(new byte[] {17, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0});

        assertEquals(1, fe.readReply().u64());
    }

    @Test
    void shouldTimeOutReadingReplyTheBackEndNeverSends() throws IOException {
        fe = VhostUserFrontend.open(qsd.socket(), GuestRam.create(RAM_BYTES), Duration.ofMillis(200));

        fe.sendRaw(Request.SET_OWNER.code, Protocol.VERSION, new byte[0]); // no NEED_REPLY: no answer comes

        final long start = System.nanoTime();
        final ReplyTimeoutException e = assertThrows(ReplyTimeoutException.class, fe::readReply);
        assertTrue(System.nanoTime() - start < Duration.ofSeconds(5).toNanos());
        assertTrue(e.getMessage().contains("no reply"), e.getMessage());
    }
}
