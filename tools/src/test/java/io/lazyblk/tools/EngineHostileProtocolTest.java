package io.lazyblk.tools;

import io.lazyblk.tools.MemoryMessages.Region;
import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.BlkConfig;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.Reply;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;
import io.lazyblk.vhost.proto.Protocol;
import io.lazyblk.vhost.proto.Request;
import io.lazyblk.sys.LibC;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The engine against a front end that breaks the vhost-user protocol, over a real socket: each test first shows
 * the connection alive (usually with the same message, valid, accepted), then sends the violation, and proves the
 * engine closed that connection ({@code isClosedByPeer}) and then accepts a new front end that writes and reads
 * back through it, with the bytes in the image file.
 */
class EngineHostileProtocolTest {
    private static final int IMAGE_BYTES = 1 << 20;
    private static final long RAM = 1 << 20;
    private static final int BAD_QUEUE = 5;

    @TempDir
    Path dir;
    private Path image;
    private Path socket;
    private Engine engine;
    private VhostUserFrontend fe;
    private final int[] eventFds = {-1, -1};

    @BeforeEach
    void start() throws IOException {
        image = TestImage.create(dir.resolve("disk.img"), IMAGE_BYTES, 2);
        socket = dir.resolve("vhost.sock");
        engine = Engine.start(Engine.Options.file(socket, image));
        fe = VhostUserFrontend.open(socket, GuestRam.create(RAM), FrontEnds.DEADLINE);
        eventFds[0] = LibC.eventfd(LibC.EFD_NONBLOCK);
        eventFds[1] = LibC.eventfd(LibC.EFD_NONBLOCK);
    }

    @AfterEach
    void stop() {
        fe.close();
        engine.close();
        LibC.close(eventFds[0]);
        LibC.close(eventFds[1]);
    }

    // ---------------------------------------------------------------- helpers

    private static byte[] u64(final long v) {
        return ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(v).array();
    }

    private static byte[] twoU32(final int a, final int b) {
        return ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putInt(a).putInt(b).array();
    }

    private static byte[] vringAddr(final int queue, final long desc, final long used, final long avail) {
        return ByteBuffer.allocate(40).order(ByteOrder.LITTLE_ENDIAN)
            .putInt(queue).putInt(0).putLong(desc).putLong(used).putLong(avail).putLong(0).array();
    }

    private static byte[] configHeader(final int offset, final byte[] data) {
        return ByteBuffer.allocate(12 + data.length).order(ByteOrder.LITTLE_ENDIAN)
            .putInt(offset).putInt(data.length).putInt(0).put(data).array();
    }

    /** Negotiates REPLY_ACK so that every message can ask for its status. */
    private void negotiateReplyAck() throws IOException {
        fe.getFeatures();
        fe.setProtocolFeatures(1L << Protocol.PF_REPLY_ACK);
    }

    /** Sends a message with NEED_REPLY and returns the back end's reply (an ack, or the message's own reply). */
    private Reply call(final Request r, final byte[] payload, final int... fds) throws IOException {
        fe.sendRaw(r.code, Protocol.VERSION | Protocol.FLAG_NEED_REPLY, payload, fds);
        final Reply reply = fe.readReply();
        assertNotNull(reply, "the engine closed the connection instead of answering a valid " + r);
        assertEquals(r.code, reply.code());
        return reply;
    }

    /** A GET_FEATURES round trip: the connection is alive and in step. */
    private void assertAlive() throws IOException {
        assertTrue(Protocol.has(fe.getFeatures(), Protocol.F_VERSION_1), "the engine answers GET_FEATURES");
    }

    private void assertClosedAndNextFrontEndServed() throws IOException {
        FrontEnds.assertClosedAndNextServed(fe, socket, image);
    }

    // ---------------------------------------------------------------- framing

    @Test
    void shouldDropConnectionThatEndsInsideTheHeaderAndServeTheNext() throws IOException {
        assertAlive();

        fe.sendRawBytes(new byte[] {1, 0, 0, 0, 1}); // 5 of 12 header bytes, then EOF
        fe.close();

        FrontEnds.assertEngineServesNewFrontEnd(socket, image, 8);
    }

    @Test
    void shouldCloseConnectionWhoseShortHeaderIsFollowedByGarbage() throws IOException {
        assertAlive();

        fe.sendRawBytes(new byte[] {1, 0, 0, 0, 1});
        final byte[] garbage = new byte[64];
        Arrays.fill(garbage, (byte) 0xff);
        fe.sendRawBytes(garbage);

        assertClosedAndNextFrontEndServed();
    }

    static Stream<Arguments> wrongPayloadSizes() {
        return Stream.of(
            Arguments.of(Request.SET_FEATURES, 4),
            Arguments.of(Request.SET_FEATURES, 16),
            Arguments.of(Request.SET_VRING_NUM, 12),
            Arguments.of(Request.SET_VRING_ADDR, 32),
            Arguments.of(Request.GET_FEATURES, 8),
            Arguments.of(Request.SET_VRING_KICK, 4));
    }

    @ParameterizedTest(name = "{0} with a {1}-byte payload closes the connection")
    @MethodSource("wrongPayloadSizes")
    void shouldCloseConnectionOnFixedSizeMessageWithWrongPayloadSize(final Request r, final int size) throws IOException {
        assertAlive();

        fe.sendRaw(r.code, Protocol.VERSION, new byte[size]);

        assertClosedAndNextFrontEndServed();
    }

    @ParameterizedTest(name = "a header announcing {0} payload bytes closes the connection")
    @ValueSource(ints = {4097, 0x10000, 0x7fffffff, 0xffffffff})
    void shouldCloseConnectionOnPayloadLargerThan4096(final int size) throws IOException {
        assertAlive();

        fe.sendRawBytes(ByteBuffer.allocate(12 + 64).order(ByteOrder.LITTLE_ENDIAN)
            .putInt(Request.SET_CONFIG.code).putInt(Protocol.VERSION).putInt(size).array());

        assertClosedAndNextFrontEndServed();
    }

    @ParameterizedTest(name = "flags 0x{0} (version bits != 1) close the connection")
    @ValueSource(ints = {0, 2, 3, 0x8 | 2})
    void shouldCloseConnectionOnWrongVersionBits(final int flags) throws IOException {
        assertAlive();

        fe.sendRaw(Request.GET_FEATURES.code, flags, new byte[0]);

        assertClosedAndNextFrontEndServed();
    }

    @ParameterizedTest(name = "request code {0} closes the connection")
    @ValueSource(ints = {99, 0, 63, 64, -1, 7})
    void shouldCloseConnectionOnUnknownRequestCode(final int code) throws IOException {
        assertAlive();

        fe.sendRaw(code, Protocol.VERSION, new byte[0]);

        assertClosedAndNextFrontEndServed();
    }

    // ---------------------------------------------------------------- file descriptors

    private Region[] eightRegions() {
        final Region[] regions = new Region[8];
        final long slice = RAM / 8;
        for (int i = 0; i < 8; i++) {
            regions[i] = new Region(i * slice, slice, fe.ram().userAddress(i * slice), i * slice, fe.ram().fd());
        }
        return regions;
    }

    @Test
    void shouldCloseConnectionOnSetMemTableWithNineFds() throws IOException {
        negotiateReplyAck();
        final Region[] regions = eightRegions();
        assertEquals(0, MemoryMessages.setMemTable(fe, regions), "eight regions with eight fds are accepted");

        final int[] nine = new int[9];
        Arrays.fill(nine, fe.ram().fd());
        fe.sendRaw(Request.SET_MEM_TABLE.code, Protocol.VERSION | Protocol.FLAG_NEED_REPLY,
            MemoryMessages.memTablePayload(regions), nine);

        assertClosedAndNextFrontEndServed();
    }

    @Test
    void shouldCloseConnectionOnSetVringKickWithTwoFds() throws IOException {
        negotiateReplyAck();
        assertEquals(0, call(Request.SET_VRING_KICK, u64(0), eventFds[0]).u64(), "one eventfd is accepted");

        fe.sendRaw(Request.SET_VRING_KICK.code, Protocol.VERSION, u64(0), eventFds[0], eventFds[1]);

        assertClosedAndNextFrontEndServed();
    }

    @Test
    void shouldCloseConnectionOnSetVringKickWithoutFdAndWithoutTheNoFdBit() throws IOException {
        negotiateReplyAck();
        assertEquals(0, call(Request.SET_VRING_KICK, u64(Protocol.VRING_NOFD_MASK)).u64(), "no fd with the no-fd bit is accepted");

        fe.sendRaw(Request.SET_VRING_KICK.code, Protocol.VERSION, u64(0));

        assertClosedAndNextFrontEndServed();
    }

    @Test
    void shouldCloseConnectionOnSetVringKickWithAnFdAndTheNoFdBit() throws IOException {
        assertAlive();

        fe.sendRaw(Request.SET_VRING_KICK.code, Protocol.VERSION, u64(Protocol.VRING_NOFD_MASK), eventFds[0]);

        assertClosedAndNextFrontEndServed();
    }

    @Test
    void shouldCloseConnectionOnSetVringCallWithAPipeInsteadOfAnEventfd() throws IOException {
        negotiateReplyAck();
        assertEquals(0, call(Request.SET_VRING_CALL, u64(0), eventFds[0]).u64(), "an eventfd is accepted");

        try (Pipe pipe = new Pipe()) {
            fe.sendRaw(Request.SET_VRING_CALL.code, Protocol.VERSION, u64(0), pipe.writeFd);

            assertClosedAndNextFrontEndServed();
        }
    }

    // ---------------------------------------------------------------- memory tables

    @Test
    void shouldCloseConnectionOnSetMemTableWithOverlappingRegions() throws IOException {
        negotiateReplyAck();
        final long half = RAM / 2;
        final GuestRam ram = fe.ram();
        assertEquals(0, MemoryMessages.setMemTable(fe, new Region(0, half, ram.userAddress(0), 0, ram.fd()),
            new Region(half, half, ram.userAddress(half), half, ram.fd())), "adjacent regions are accepted");

        fe.sendRaw(Request.SET_MEM_TABLE.code, Protocol.VERSION | Protocol.FLAG_NEED_REPLY, MemoryMessages.memTablePayload(
            new Region(0, half, ram.userAddress(0), 0, ram.fd()),
            new Region(half - 4096, half, ram.userAddress(half), half, ram.fd())), ram.fd(), ram.fd());

        assertClosedAndNextFrontEndServed();
    }

    static Stream<Arguments> regionsPastTheirMemfd() {
        return Stream.of(
            Arguments.of("one page longer than the memfd", RAM + 4096, 0L),
            Arguments.of("twice the memfd", 2 * RAM, 0L),
            Arguments.of("whose mmap_offset puts its end past the memfd", RAM / 2, RAM / 2 + 4096),
            Arguments.of("whose mmap_offset is past the memfd", 4096L, RAM));
    }

    @ParameterizedTest(name = "a region {0} is refused (connection closed), not mapped to fault later")
    @MethodSource("regionsPastTheirMemfd")
    void shouldRefuseRegionThatDoesNotFitInItsMemfd(final String what, final long size, final long mmapOffset) throws IOException {
        negotiateReplyAck();
        final GuestRam ram = fe.ram();
        assertEquals(0, MemoryMessages.setMemTable(fe, new Region(0, RAM, ram.userAddress(0), 0, ram.fd())),
            "the region that is exactly the memfd is accepted");

        fe.sendRaw(Request.SET_MEM_TABLE.code, Protocol.VERSION | Protocol.FLAG_NEED_REPLY,
            MemoryMessages.memTablePayload(new Region(0, size, ram.userAddress(0), mmapOffset, ram.fd())), ram.fd());

        assertClosedAndNextFrontEndServed();
    }

    @Test
    void shouldCloseConnectionOnAddMemRegOverlappingAnExistingRegion() throws IOException {
        negotiateReplyAck();
        final GuestRam ram = fe.ram();
        final long half = RAM / 2;
        assertEquals(0, MemoryMessages.setMemTable(fe, new Region(0, half, ram.userAddress(0), 0, ram.fd())));
        assertEquals(0, MemoryMessages.addMemReg(fe, new Region(half, half, ram.userAddress(half), half, ram.fd())),
            "an adjacent region is added");

        fe.sendRaw(Request.ADD_MEM_REG.code, Protocol.VERSION | Protocol.FLAG_NEED_REPLY,
            ByteBuffer.allocate(40).order(ByteOrder.LITTLE_ENDIAN).putLong(0).putLong(4096).putLong(4096)
                .putLong(ram.userAddress(0)).putLong(0).array(), ram.fd());

        assertClosedAndNextFrontEndServed();
    }

    // ---------------------------------------------------------------- queue indices and sizes

    private byte[] queueMessage(final Request r, final int queue) {
        return switch (r) {
            case SET_VRING_NUM -> twoU32(queue, 256);
            case SET_VRING_BASE, GET_VRING_BASE -> twoU32(queue, 0);
            case SET_VRING_ENABLE -> twoU32(queue, 0);
            case SET_VRING_ADDR -> vringAddr(queue, fe.ram().userAddress(4096), fe.ram().userAddress(8192),
                fe.ram().userAddress(12288));
            case SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR -> u64(queue);
            default -> throw new IllegalArgumentException(r.toString());
        };
    }

    private int[] queueMessageFds(final Request r) {
        return switch (r) {
            case SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR -> new int[] {eventFds[0]};
            default -> new int[0];
        };
    }

    @ParameterizedTest(name = "{0} for queue 5 of a 1-queue engine closes the connection")
    @EnumSource(value = Request.class, names = {"SET_VRING_NUM", "SET_VRING_ADDR", "SET_VRING_BASE", "GET_VRING_BASE",
        "SET_VRING_KICK", "SET_VRING_CALL", "SET_VRING_ERR", "SET_VRING_ENABLE"})
    void shouldCloseConnectionOnQueueIndexBeyondNumQueues(final Request r) throws IOException {
        negotiateReplyAck();
        assertEquals(1, fe.getQueueNum());
        final GuestRam ram = fe.ram();
        assertEquals(0, MemoryMessages.setMemTable(fe, new Region(0, RAM, ram.userAddress(0), 0, ram.fd())));
        assertEquals(0, call(Request.SET_VRING_NUM, twoU32(0, 256)).u64());
        assertNotNull(call(r, queueMessage(r, 0), queueMessageFds(r)), "the same message for queue 0 is answered");
        assertAlive();

        fe.sendRaw(r.code, Protocol.VERSION | Protocol.FLAG_NEED_REPLY, queueMessage(r, BAD_QUEUE), queueMessageFds(r));

        assertClosedAndNextFrontEndServed();
    }

    @ParameterizedTest(name = "SET_VRING_NUM {0} closes the connection")
    @ValueSource(ints = {0, 3, 100, 1000, 2048, 65536, -256})
    void shouldCloseConnectionOnVringSizeThatIsNotAPowerOfTwoUpTo1024(final int size) throws IOException {
        negotiateReplyAck();
        assertEquals(0, call(Request.SET_VRING_NUM, twoU32(0, 1024)).u64(), "1024 is accepted");

        fe.sendRaw(Request.SET_VRING_NUM.code, Protocol.VERSION, twoU32(0, size));

        assertClosedAndNextFrontEndServed();
    }

    // ---------------------------------------------------------------- features

    @Test
    void shouldCloseConnectionOnSetFeaturesAckingBitsNeverOffered() throws IOException {
        negotiateReplyAck();
        final long offered = fe.getFeatures();
        assertEquals(0, call(Request.SET_FEATURES, u64(offered)).u64(), "acking what was offered is accepted");
        final long never = Long.lowestOneBit(~offered);

        fe.sendRaw(Request.SET_FEATURES.code, Protocol.VERSION, u64(offered | never));

        assertClosedAndNextFrontEndServed();
    }

    @Test
    void shouldCloseConnectionOnSetProtocolFeaturesAckingBitsNeverOffered() throws IOException {
        final long offered = fe.getProtocolFeatures();
        fe.setProtocolFeatures(offered);
        assertAlive();

        fe.sendRaw(Request.SET_PROTOCOL_FEATURES.code, Protocol.VERSION, u64(offered | Long.lowestOneBit(~offered)));

        assertClosedAndNextFrontEndServed();
    }

    // ---------------------------------------------------------------- config space

    @ParameterizedTest(name = "GET_CONFIG of 8 bytes at offset {0} gets an empty reply and the connection stays")
    @ValueSource(ints = {Integer.MAX_VALUE - 3, Integer.MAX_VALUE, -1, BlkConfig.SIZE - 4, Integer.MIN_VALUE})
    void shouldRefuseGetConfigOutsideTheConfigSpaceWithAnEmptyReply(final int offset) throws IOException {
        negotiateReplyAck();

        final Reply r = call(Request.GET_CONFIG, configHeader(offset, new byte[8]));

        assertEquals(0, r.payload().length, "an empty reply says the read failed");
        assertAlive();
        fe.close();
        FrontEnds.assertEngineServesNewFrontEnd(socket, image, 8);
    }

    @ParameterizedTest(name = "SET_CONFIG of 8 bytes at offset {0} is refused (REPLY_ACK 1) and the connection stays")
    @ValueSource(ints = {Integer.MAX_VALUE - 3, -1, BlkConfig.SIZE - 4})
    void shouldRefuseSetConfigOutsideTheConfigSpace(final int offset) throws IOException {
        negotiateReplyAck();

        assertEquals(1, call(Request.SET_CONFIG, configHeader(offset, new byte[8])).u64());

        assertAlive();
        fe.close();
        FrontEnds.assertEngineServesNewFrontEnd(socket, image, 8);
    }

    // ---------------------------------------------------------------- mid-session

    @Test
    void shouldTearDownRunningQueuesWhenClosingAConnectionMidSession() throws IOException {
        fe.close();
        fe = FrontEnds.connect(socket);
        final BlkClient blk = FrontEnds.client(fe, 0);
        assertEquals(VirtioBlk.S_OK, blk.write(0, TestImage.pattern(4096, 3)));

        fe.sendRaw(99, Protocol.VERSION, new byte[0]);

        assertClosedAndNextFrontEndServed();
    }
}
