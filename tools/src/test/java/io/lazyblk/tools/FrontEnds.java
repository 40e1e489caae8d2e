package io.lazyblk.tools;

import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.FrontendConfig;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/** Connecting test front ends to an engine, and the end-to-end check that an engine still serves. */
final class FrontEnds {
    static final long RAM_BYTES = 4L << 20;
    /** Every wait in these tests: generous for a loaded machine, short enough that a hang fails fast. */
    static final Duration DEADLINE = Duration.ofSeconds(5);
    static final FrontendConfig CONFIG = FrontendConfig.defaults().withReplyTimeout(DEADLINE);

    private FrontEnds() {
    }

    /** A front end through the full handshake (QEMU's order), every feature, one queue. */
    static VhostUserFrontend connect(final Path socket) throws IOException {
        return VhostUserFrontend.connect(socket, GuestRam.create(RAM_BYTES), CONFIG);
    }

    static BlkClient client(final VhostUserFrontend fe, final int queue) {
        return new BlkClient(fe, queue).timeout(DEADLINE);
    }

    /**
     * A fresh front end connects, writes a pattern at {@code sector}, reads it back, and the image file holds it:
     * the engine accepts and serves a new connection end to end.
     */
    static void assertEngineServesNewFrontEnd(final Path socket, final Path image, final long sector) throws IOException {
        try (VhostUserFrontend fe = connect(socket)) {
            final BlkClient blk = client(fe, 0);
            final byte[] data = TestImage.pattern(4096, sector ^ 0x5eed);
            assertEquals(VirtioBlk.S_OK, blk.write(sector, data), "a write from the new front end");
            assertArrayEquals(data, blk.read(sector, data.length).data(), "the new front end reads back what it wrote");
            assertArrayEquals(data, TestImage.read(image, sector * VirtioBlk.SECTOR_SIZE, data.length),
                "the image file holds what the new front end wrote");
        }
    }

    /**
     * A memfd of {@code bytes} bytes as a front end would hand one over (an in-flight region, a dirty log): sealed against
     * shrinking and growing unless {@code sealed} is false. The caller closes it.
     */
    static int memfd(final long bytes, final boolean sealed) throws Exception {
        final int fd = io.lazyblk.sys.LibC.memfdCreate("test-shared", io.lazyblk.sys.LibC.MFD_ALLOW_SEALING);
        io.lazyblk.sys.LibC.ftruncate(fd, bytes);
        if (sealed) {
            io.lazyblk.sys.LibC.addSeals(fd, io.lazyblk.sys.LibC.F_SEAL_SHRINK | io.lazyblk.sys.LibC.F_SEAL_GROW);
        }
        return fd;
    }

    /** The engine closed {@code fe}'s connection, and then serves a new front end that writes and reads {@code image}. */
    static void assertClosedAndNextServed(final io.lazyblk.tools.frontend.VhostUserFrontend fe, final Path socket, final Path image)
        throws IOException {
        org.junit.jupiter.api.Assertions.assertTrue(fe.isClosedByPeer(DEADLINE), "the engine closed the connection");
        assertEngineServesNewFrontEnd(socket, image, 8);
    }

    /** SET_LOG_BASE over {@code fd} as QEMU sends it (16-byte payload, no need_reply flag); returns the reply it waits for. */
    static io.lazyblk.tools.frontend.Reply setLogBase(final VhostUserFrontend fe, final int fd, final long size) throws IOException {
        final byte[] p = java.nio.ByteBuffer.allocate(16).order(java.nio.ByteOrder.LITTLE_ENDIAN).putLong(size).putLong(0).array();
        fe.sendRaw(io.lazyblk.vhost.proto.Request.SET_LOG_BASE.code, io.lazyblk.vhost.proto.Protocol.VERSION, p, fd);
        return fe.readReply();
    }

    /** SET_VRING_ADDR of queue {@code q} again, with the log flag and the used ring's guest address if {@code log}. */
    static void setVringAddrLogged(final VhostUserFrontend fe, final io.lazyblk.tools.frontend.DriverQueue q, final boolean log)
        throws IOException {
        final GuestRam ram = fe.ram();
        final byte[] p = java.nio.ByteBuffer.allocate(40).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(q.index())
            .putInt(log ? io.lazyblk.vhost.proto.Protocol.VRING_F_LOG : 0)
            .putLong(ram.userAddress(q.descGpa())).putLong(ram.userAddress(q.usedGpa())).putLong(ram.userAddress(q.availGpa()))
            .putLong(q.usedGpa()).array();
        fe.sendRaw(io.lazyblk.vhost.proto.Request.SET_VRING_ADDR.code, io.lazyblk.vhost.proto.Protocol.VERSION
            | io.lazyblk.vhost.proto.Protocol.FLAG_NEED_REPLY, p);
        assertEquals(0, fe.readReply().u64(), "SET_VRING_ADDR with the log flag on a running ring acked");
    }

    /**
     * What QEMU 7.2's source sends when a migration starts on running rings: SET_LOG_BASE with a sealed memfd covering
     * {@code ramBytes} of guest memory, SET_FEATURES with LOG_ALL, SET_VRING_ADDR with the log flag. Returns the log's fd
     * (the caller closes it).
     */
    static int startMigration(final VhostUserFrontend fe, final long ramBytes) throws Exception {
        final long logBytes = Math.max(8, ramBytes / 4096 / 8);
        final int fd = memfd(logBytes, true);
        setLogBase(fe, fd, logBytes);
        fe.setFeatures(fe.features() | (1L << io.lazyblk.vhost.proto.Protocol.F_LOG_ALL));
        for (int i = 0; i < fe.queueCount(); i++) {
            setVringAddrLogged(fe, fe.queue(i), true);
        }
        return fd;
    }

    /** A migration's switchover as QEMU 7.2's source does it: SET_VRING_ENABLE 0 on every queue, then GET_VRING_BASE on each. */
    static int[] switchover(final VhostUserFrontend fe) throws IOException {
        for (int i = 0; i < fe.queueCount(); i++) {
            fe.setVringEnable(i, false);
        }
        final int[] bases = new int[fe.queueCount()];
        for (int i = 0; i < bases.length; i++) {
            bases[i] = fe.stopQueue(i);
        }
        return bases;
    }
}
