package io.lazyblk.tools;

import io.lazyblk.sys.LibC;
import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.BlkResponse;
import io.lazyblk.tools.frontend.DriverQueue;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.Reply;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;
import io.lazyblk.vhost.proto.Protocol;
import io.lazyblk.vhost.proto.Request;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Dirty logging for live migration, over a real socket with the messages QEMU 7.2 sends when a migration starts on a
 * running ring: SET_LOG_BASE (answered with its own code), SET_FEATURES with LOG_ALL, SET_VRING_ADDR with the log flag.
 * The ring keeps serving where it was; every page a read's data went to is marked in the log the front end maps, and
 * none while it does not log. A log that is not sealed or does not cover guest memory ends the connection.
 */
class EngineDirtyLogTest {
    private static final int IMAGE_BYTES = 1 << 20;
    private static final long RAM = 4L << 20;
    /** One bit per 4 KiB: 4 MiB of guest memory needs 1024 bits. */
    private static final long LOG_BYTES = 128;

    @TempDir
    Path dir;
    private Path image;
    private Path socket;
    private Engine engine;
    private VhostUserFrontend fe;
    private int logFd = -1;
    private MemorySegment view;
    private Arena arena;

    @BeforeEach
    void start() throws Exception {
        image = TestImage.create(dir.resolve("disk.img"), IMAGE_BYTES, 2);
        socket = dir.resolve("vhost.sock");
        engine = Engine.start(Engine.Options.file(socket, image));
        fe = VhostUserFrontend.connect(socket, GuestRam.create(RAM), FrontEnds.CONFIG);
        arena = Arena.ofShared();
    }

    @AfterEach
    void stop() {
        fe.close();
        engine.close();
        arena.close();
        LibC.close(logFd);
    }

    private io.lazyblk.tools.frontend.Reply setLogBase(final int fd, final long size) throws IOException {
        return FrontEnds.setLogBase(fe, fd, size);
    }

    private void setVringAddrLogged(final DriverQueue q, final boolean log) throws IOException {
        FrontEnds.setVringAddrLogged(fe, q, log);
    }

    private int markedPages() {
        int n = 0;
        for (long i = 0; i < LOG_BYTES; i++) {
            n += Integer.bitCount(Byte.toUnsignedInt(view.get(JAVA_BYTE, i)));
        }
        return n;
    }

    @Test
    void shouldLogEveryPageItWritesOnceTheFrontEndLogsAndKeepTheRingGoing() throws Exception {
        assertTrue(Protocol.has(fe.offeredFeatures(), Protocol.F_LOG_ALL), "the engine offers VHOST_F_LOG_ALL");
        assertTrue(Protocol.has(fe.protocolFeatures(), Protocol.PF_LOG_SHMFD), "and LOG_SHMFD");
        final BlkClient blk = FrontEnds.client(fe, 0);
        final byte[] before = blk.read(0, 64 << 10).data();

        logFd = FrontEnds.memfd(LOG_BYTES, true);
        view = io.lazyblk.vhost.mem.SealedMemfd.mapShared(logFd, LOG_BYTES, 0, arena);
        final Reply r = setLogBase(logFd, LOG_BYTES);
        assertEquals(Request.SET_LOG_BASE.code, r.code(), "QEMU waits for a reply to SET_LOG_BASE with the same code");
        final BlkResponse unlogged = blk.read(0, 64 << 10);
        assertEquals(VirtioBlk.S_OK, unlogged.status());
        assertEquals(0, markedPages(), "nothing marked before LOG_ALL");

        fe.setFeatures(fe.features() | (1L << Protocol.F_LOG_ALL));
        setVringAddrLogged(fe.queue(0), true);
        final BlkResponse logged = blk.read(0, 64 << 10);
        assertEquals(VirtioBlk.S_OK, logged.status(), "the ring kept its indices and serves on");
        assertTrue(java.util.Arrays.equals(before, logged.data()), "the same bytes");
        // 64 KiB of data spans 16 or 17 pages, the status byte and the used ring one each (they may share pages).
        assertTrue(markedPages() >= 16, "the read's data pages are marked: " + markedPages());
        assertTrue(isMarked(fe.queue(0).usedGpa()), "the used ring's page is marked");

        fe.setFeatures(fe.features() & ~(1L << Protocol.F_LOG_ALL));
        view.fill((byte) 0);
        assertEquals(VirtioBlk.S_OK, blk.read(0, 64 << 10).status());
        assertEquals(0, markedPages(), "nothing marked once logging is off");
    }

    private boolean isMarked(final long gpa) {
        final long page = gpa >>> 12;
        return (view.get(JAVA_BYTE, page / 8) & (1 << (page % 8))) != 0;
    }

    @Test
    void shouldCloseOnALogThatDoesNotCoverGuestMemoryOrCouldShrink() throws Exception {
        logFd = FrontEnds.memfd(LOG_BYTES / 2, true);
        setLogBase(logFd, LOG_BYTES / 2); // 2 MiB of coverage for 4 MiB of memory
        FrontEnds.assertClosedAndNextServed(fe, socket, image);
        fe.close();
        fe = VhostUserFrontend.connect(socket, GuestRam.create(RAM), FrontEnds.CONFIG);
        final int unsealed = FrontEnds.memfd(LOG_BYTES, false);
        try {
            setLogBase(unsealed, LOG_BYTES);
        } finally {
            LibC.close(unsealed);
        }
        assertTrue(fe.isClosedByPeer(FrontEnds.DEADLINE), "the engine closed the connection");
    }

    @Test
    void shouldCloseOnSetVringAddrThatMovesARunningRing() throws Exception {
        final DriverQueue q = fe.queue(0);
        final GuestRam ram = fe.ram();
        final byte[] p = ByteBuffer.allocate(40).order(ByteOrder.LITTLE_ENDIAN).putInt(0).putInt(0)
            .putLong(ram.userAddress(q.descGpa()) + 4096).putLong(ram.userAddress(q.usedGpa())).putLong(ram.userAddress(q.availGpa()))
            .putLong(0).array();
        fe.sendRaw(Request.SET_VRING_ADDR.code, Protocol.VERSION, p);
        FrontEnds.assertClosedAndNextServed(fe, socket, image);
    }
}
