package io.lazyblk.tools;

import io.lazyblk.sys.LibC;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.Reply;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.vhost.inflight.InflightRegion;
import io.lazyblk.vhost.proto.Protocol;
import io.lazyblk.vhost.proto.Request;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * GET_INFLIGHT_FD and SET_INFLIGHT_FD over a real socket, from a front end that gets them wrong: each refused message
 * closes the connection, and the engine then serves a new front end. (The region's contents are checked when a queue
 * starts; InflightRegionTest covers those.)
 */
class EngineInflightProtocolTest {
    private static final int IMAGE_BYTES = 1 << 20;

    @TempDir
    Path dir;
    private Path image;
    private Path socket;
    private Engine engine;
    private VhostUserFrontend fe;

    @BeforeEach
    void start() throws IOException {
        image = TestImage.create(dir.resolve("disk.img"), IMAGE_BYTES, 2);
        socket = dir.resolve("vhost.sock");
        engine = Engine.start(Engine.Options.file(socket, image));
        fe = VhostUserFrontend.open(socket, GuestRam.create(1 << 20), FrontEnds.DEADLINE);
    }

    @AfterEach
    void stop() {
        fe.close();
        engine.close();
    }

    private static byte[] inflight(final long mmapSize, final long mmapOffset, final int queues, final int queueSize) {
        return ByteBuffer.allocate(Protocol.INFLIGHT_SIZE).order(ByteOrder.LITTLE_ENDIAN)
            .putLong(mmapSize).putLong(mmapOffset).putShort((short) queues).putShort((short) queueSize).array();
    }

    private void negotiate() throws IOException {
        assertTrue(Protocol.has(fe.getProtocolFeatures(), Protocol.PF_INFLIGHT_SHMFD), "the engine offers INFLIGHT_SHMFD");
        fe.setProtocolFeatures((1L << Protocol.PF_REPLY_ACK) | (1L << Protocol.PF_INFLIGHT_SHMFD));
    }

    private Reply call(final Request r, final byte[] payload, final int... fds) throws IOException {
        fe.sendRaw(r.code, Protocol.VERSION | Protocol.FLAG_NEED_REPLY, payload, fds);
        final Reply reply = fe.readReply();
        assertNotNull(reply, "the engine closed the connection instead of answering a valid " + r);
        return reply;
    }

    private void assertClosedAndNextFrontEndServed() throws IOException {
        FrontEnds.assertClosedAndNextServed(fe, socket, image);
    }

    @Test
    void shouldAnswerGetInflightFdWithTheRegionsSizeForTheGeometryAsked() throws IOException {
        negotiate();
        final Reply r = call(Request.GET_INFLIGHT_FD, inflight(0, 0, 1, 256));
        assertEquals(Request.GET_INFLIGHT_FD.code, r.code());
        final ByteBuffer p = ByteBuffer.wrap(r.payload()).order(ByteOrder.LITTLE_ENDIAN);
        assertEquals(InflightRegion.sizeFor(1, 256), p.getLong(0), "mmap_size: one queue of 256 descriptors");
        assertEquals(0, p.getLong(8));
        assertEquals(1, p.getShort(16));
        assertEquals(256, p.getShort(18));
        assertTrue(Protocol.has(fe.getFeatures(), Protocol.F_VERSION_1), "still alive");
    }

    @Test
    void shouldCloseOnGetInflightFdWithoutTheFeatureNegotiated() throws IOException {
        fe.getFeatures();
        fe.setProtocolFeatures(1L << Protocol.PF_REPLY_ACK);
        fe.sendRaw(Request.GET_INFLIGHT_FD.code, Protocol.VERSION, inflight(0, 0, 1, 256));
        assertClosedAndNextFrontEndServed();
    }

    @Test
    void shouldCloseOnGetInflightFdForMoreQueuesThanTheDeviceHasOrAQueueSizeThatIsNoPowerOfTwo() throws IOException {
        negotiate();
        fe.sendRaw(Request.GET_INFLIGHT_FD.code, Protocol.VERSION, inflight(0, 0, 1, 3));
        assertClosedAndNextFrontEndServed();
        fe.close();
        fe = VhostUserFrontend.open(socket, GuestRam.create(1 << 20), FrontEnds.DEADLINE);
        negotiate();
        fe.sendRaw(Request.GET_INFLIGHT_FD.code, Protocol.VERSION, inflight(0, 0, 9, 256));
        assertClosedAndNextFrontEndServed();
    }

    @Test
    void shouldAcceptARegionOfTheRightSizeInASealedMemfd() throws Exception {
        negotiate();
        final long size = InflightRegion.sizeFor(1, 128);
        final int fd = FrontEnds.memfd(size, true);
        try {
            assertEquals(0, call(Request.SET_INFLIGHT_FD, inflight(size, 0, 1, 128), fd).u64(), "SET_INFLIGHT_FD acked");
        } finally {
            LibC.close(fd);
        }
    }

    @Test
    void shouldCloseOnARegionInAMemfdThatCouldShrink() throws Exception {
        negotiate();
        final long size = InflightRegion.sizeFor(1, 128);
        final int fd = FrontEnds.memfd(size, false);
        try {
            fe.sendRaw(Request.SET_INFLIGHT_FD.code, Protocol.VERSION, inflight(size, 0, 1, 128), fd);
        } finally {
            LibC.close(fd);
        }
        assertClosedAndNextFrontEndServed();
    }

    @Test
    void shouldCloseOnARegionLargerThanItsMemfdOrOfTheWrongSize() throws Exception {
        negotiate();
        final long size = InflightRegion.sizeFor(1, 128);
        final int fd = FrontEnds.memfd(size, true);
        try {
            fe.sendRaw(Request.SET_INFLIGHT_FD.code, Protocol.VERSION, inflight(size, 4096, 1, 128), fd);
        } finally {
            LibC.close(fd);
        }
        assertClosedAndNextFrontEndServed();
        fe.close();
        fe = VhostUserFrontend.open(socket, GuestRam.create(1 << 20), FrontEnds.DEADLINE);
        negotiate();
        final int fd2 = FrontEnds.memfd(1 << 20, true);
        try {
            fe.sendRaw(Request.SET_INFLIGHT_FD.code, Protocol.VERSION, inflight(1 << 20, 0, 1, 128), fd2);
        } finally {
            LibC.close(fd2);
        }
        assertClosedAndNextFrontEndServed();
    }

    @Test
    void shouldCloseOnSetInflightFdWithoutItsFd() throws Exception {
        negotiate();
        fe.sendRaw(Request.SET_INFLIGHT_FD.code, Protocol.VERSION, inflight(InflightRegion.sizeFor(1, 128), 0, 1, 128));
        assertClosedAndNextFrontEndServed();
    }
}
