package io.lazyblk.tools.frontend;

import io.lazyblk.vhost.proto.Protocol;
import io.lazyblk.vhost.proto.Request;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.time.Duration;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;

/**
 * The front end (driver side) of a vhost-user-blk connection, doing what QEMU 7.2's vhost-user-blk-pci does:
 * negotiates features, hands over {@link GuestRam} and sets up virtqueues whose driver side is a
 * {@link DriverQueue}. Once REPLY_ACK is negotiated every message without a reply of its own carries NEED_REPLY
 * and its ack is checked, so a back end that refuses something fails the call that caused it.
 *
 * <p>Each message method sends exactly that message; {@link #handshake} strings them together. The raw methods
 * ({@link #sendRaw}, {@link #sendRawBytes}, {@link #readReply}, {@link #isClosedByPeer}) exist for tests that
 * feed a back end hostile input.
 *
 * <p>Owns the socket, the queues' eventfds and the {@link GuestRam} it was given. The control methods are not
 * thread-safe; each {@link DriverQueue} may be driven by its own thread.
 */
public final class VhostUserFrontend implements AutoCloseable {
    /** The protocol features we ack when offered (the ones QEMU 7.2 uses for vhost-user-blk that we implement). */
    public static final long WANTED_PROTOCOL_FEATURES = VirtioBlk.bits(Protocol.PF_MQ, Protocol.PF_REPLY_ACK,
        Protocol.PF_CONFIG, Protocol.PF_CONFIGURE_MEM_SLOTS, Protocol.PF_RESET_DEVICE, Protocol.PF_LOG_SHMFD);
    private static final int VRING_ADDR_SIZE = 40;

    private final VhostUserChannel channel;
    private final MemorySegment payload;
    private final GuestRam ram;
    private long offeredFeatures;
    private long features;
    private long offeredProtocolFeatures;
    private long protocolFeatures;
    private boolean replyAck;
    private int queueNum = 1;
    private long maxMemSlots;
    private byte[] config = new byte[0];
    private DriverQueue[] queues = new DriverQueue[0];
    private boolean closed;

    private VhostUserFrontend(final VhostUserChannel channel, final GuestRam ram) {
        this.channel = channel;
        this.payload = channel.payload();
        this.ram = ram;
    }

    /** Connects and runs the full handshake with {@link FrontendConfig#defaults()}. */
    public static VhostUserFrontend connect(final Path socket, final GuestRam ram) throws IOException {
        return connect(socket, ram, FrontendConfig.defaults());
    }

    /** Connects and runs the full handshake; on failure everything (including {@code ram}) is closed. */
    public static VhostUserFrontend connect(final Path socket, final GuestRam ram, final FrontendConfig cfg)
        throws IOException {
        final VhostUserFrontend fe = open(socket, ram, cfg.replyTimeout());
        try {
            fe.handshake(cfg);
            return fe;
        } catch (final IOException | RuntimeException e) {
            fe.close();
            throw e;
        }
    }

    /** Connects without sending anything, for tests that send their own messages. Owns {@code ram} from here. */
    public static VhostUserFrontend open(final Path socket, final GuestRam ram, final Duration replyTimeout)
        throws IOException {
        try {
            return new VhostUserFrontend(VhostUserChannel.connect(socket, replyTimeout), ram);
        } catch (final IOException | RuntimeException e) {
            ram.close();
            throw e;
        }
    }

    /**
     * QEMU 7.2's order: GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, SET_OWNER,
     * GET_CONFIG, SET_FEATURES, SET_MEM_TABLE, then per queue SET_VRING_NUM/BASE/ADDR/KICK/CALL, and last
     * SET_VRING_ENABLE 1 on every queue.
     */
    public void handshake(final FrontendConfig cfg) throws IOException {
        offeredFeatures = getFeatures();
        if (Protocol.has(offeredFeatures, Protocol.F_PROTOCOL_FEATURES)) {
            offeredProtocolFeatures = getProtocolFeatures();
            setProtocolFeatures(offeredProtocolFeatures & WANTED_PROTOCOL_FEATURES);
        }
        queueNum = Protocol.has(protocolFeatures, Protocol.PF_MQ) ? getQueueNum() : 1;
        if (Protocol.has(protocolFeatures, Protocol.PF_CONFIGURE_MEM_SLOTS)) {
            maxMemSlots = getMaxMemSlots();
        }
        if (cfg.queues() > queueNum) {
            throw new IOException("asked for " + cfg.queues() + " queues but the back end supports " + queueNum
                + (Protocol.has(protocolFeatures, Protocol.PF_MQ) ? "" : " (it does not offer VHOST_USER_PROTOCOL_F_MQ)"));
        }
        setOwner();
        if (!Protocol.has(protocolFeatures, Protocol.PF_CONFIG)) {
            throw new IOException("back end does not offer VHOST_USER_PROTOCOL_F_CONFIG, which vhost-user-blk needs");
        }
        config = getConfig(0, BlkConfig.SIZE);
        setFeatures(cfg.features() & offeredFeatures);
        setMemTable();
        final boolean indirect = Protocol.has(features, Protocol.F_INDIRECT_DESC);
        queues = new DriverQueue[cfg.queues()];
        for (int i = 0; i < queues.length; i++) {
            queues[i] = DriverQueue.create(ram, i, cfg.queueSize(), Protocol.has(features, Protocol.F_EVENT_IDX),
                indirect ? cfg.indirectEntries() : 0, cfg.ringBase(), cfg.blockingEventFds());
        }
        for (int i = 0; i < queues.length; i++) {
            configureQueue(i, cfg.ringBase());
        }
        if (Protocol.has(features, Protocol.F_PROTOCOL_FEATURES)) {
            for (int i = 0; i < queues.length; i++) {
                setVringEnable(i, true);
            }
        }
    }

    /** SET_VRING_NUM, SET_VRING_BASE {@code base}, SET_VRING_ADDR, SET_VRING_KICK, SET_VRING_CALL for queue {@code i}. */
    private void configureQueue(final int i, final int base) throws IOException {
        final DriverQueue q = queues[i];
        setVringNum(i, q.size());
        setVringBase(i, base);
        setVringAddr(i, ram.userAddress(q.descGpa()), ram.userAddress(q.usedGpa()), ram.userAddress(q.availGpa()));
        setVringKick(i, q.kickFd());
        setVringCall(i, q.callFd());
    }

    /**
     * Restarts queue {@code i} after {@link #stopQueue}: sends its ring setup again with {@code base} (normally what
     * stopQueue returned) and enables it. The ring memory and the driver's state are kept.
     */
    public void restartQueue(final int i, final int base) throws IOException {
        configureQueue(i, base);
        if (Protocol.has(features, Protocol.F_PROTOCOL_FEATURES)) {
            setVringEnable(i, true);
        }
    }

    // ---------------------------------------------------------------- one method per message

    public long getFeatures() throws IOException {
        return call(Request.GET_FEATURES, 0).u64();
    }

    public long getProtocolFeatures() throws IOException {
        return call(Request.GET_PROTOCOL_FEATURES, 0).u64();
    }

    /** Never asks for an ack: REPLY_ACK is not in force until this message has been applied. */
    public void setProtocolFeatures(final long f) throws IOException {
        payload.set(JAVA_LONG_UNALIGNED, 0, f);
        channel.send(Request.SET_PROTOCOL_FEATURES.code, Protocol.VERSION, 8);
        protocolFeatures = f;
        replyAck = Protocol.has(f, Protocol.PF_REPLY_ACK);
    }

    public int getQueueNum() throws IOException {
        final long n = call(Request.GET_QUEUE_NUM, 0).u64();
        if (n < 1 || n > 0xffff) {
            throw new IOException("back end reports " + n + " queues");
        }
        return (int) n;
    }

    public long getMaxMemSlots() throws IOException {
        return call(Request.GET_MAX_MEM_SLOTS, 0).u64();
    }

    public void setOwner() throws IOException {
        send(Request.SET_OWNER, 0);
    }

    /** GET_CONFIG for {@code len} bytes at {@code offset}; a reply without payload means the back end refused. */
    public byte[] getConfig(final int offset, final int len) throws IOException {
        if (len < 0 || len > Protocol.MAX_CONFIG_SIZE) {
            throw new IllegalArgumentException("config length " + len);
        }
        payload.set(JAVA_INT_UNALIGNED, 0, offset);
        payload.set(JAVA_INT_UNALIGNED, 4, len);
        payload.set(JAVA_INT_UNALIGNED, 8, 0);
        payload.asSlice(Protocol.CONFIG_HEADER, len).fill((byte) 0);
        final Reply r = call(Request.GET_CONFIG, Protocol.CONFIG_HEADER + len, -1);
        if (r.payload().length == 0) {
            throw new IOException("back end refused GET_CONFIG for " + len + " bytes at offset " + offset);
        }
        if (r.payload().length != Protocol.CONFIG_HEADER + len) {
            throw new IOException("GET_CONFIG reply of " + r.payload().length + " bytes, expected " + (Protocol.CONFIG_HEADER + len));
        }
        final byte[] out = new byte[len];
        System.arraycopy(r.payload(), Protocol.CONFIG_HEADER, out, 0, len);
        return out;
    }

    /**
     * SET_CONFIG (flags 0: written by the front end) of {@code data} at {@code offset}.
     *
     * @return the back end's REPLY_ACK status, 0 meaning accepted (always 0 without REPLY_ACK)
     */
    public long setConfig(final int offset, final byte[] data) throws IOException {
        if (data.length > Protocol.MAX_CONFIG_SIZE) {
            throw new IllegalArgumentException("config write of " + data.length + " bytes");
        }
        payload.set(JAVA_INT_UNALIGNED, 0, offset);
        payload.set(JAVA_INT_UNALIGNED, 4, data.length);
        payload.set(JAVA_INT_UNALIGNED, 8, 0);
        MemorySegment.copy(data, 0, payload, JAVA_BYTE, Protocol.CONFIG_HEADER, data.length);
        channel.send(Request.SET_CONFIG.code, flags(), Protocol.CONFIG_HEADER + data.length);
        return replyAck ? ack(Request.SET_CONFIG) : 0;
    }

    public void setFeatures(final long f) throws IOException {
        payload.set(JAVA_LONG_UNALIGNED, 0, f);
        send(Request.SET_FEATURES, 8);
        features = f;
    }

    /** One region: guest physical 0, all of guest RAM, our mapping address as user address, the memfd. */
    public void setMemTable() throws IOException {
        payload.set(JAVA_INT_UNALIGNED, 0, 1);
        payload.set(JAVA_INT_UNALIGNED, 4, 0);
        payload.set(JAVA_LONG_UNALIGNED, 8, 0L);
        payload.set(JAVA_LONG_UNALIGNED, 16, ram.size());
        payload.set(JAVA_LONG_UNALIGNED, 24, ram.userAddress(0));
        payload.set(JAVA_LONG_UNALIGNED, 32, 0L);
        send(Request.SET_MEM_TABLE, 8 + Protocol.REGION_SIZE, ram.fd());
    }

    public void setVringNum(final int queue, final int num) throws IOException {
        vringState(Request.SET_VRING_NUM, queue, num);
    }

    public void setVringBase(final int queue, final int base) throws IOException {
        vringState(Request.SET_VRING_BASE, queue, base);
    }

    /** Ring addresses are front-end user addresses, as QEMU sends them (see {@link GuestRam#userAddress}). */
    public void setVringAddr(final int queue, final long descUva, final long usedUva, final long availUva) throws IOException {
        payload.set(JAVA_INT_UNALIGNED, 0, queue);
        payload.set(JAVA_INT_UNALIGNED, 4, 0);
        payload.set(JAVA_LONG_UNALIGNED, 8, descUva);
        payload.set(JAVA_LONG_UNALIGNED, 16, usedUva);
        payload.set(JAVA_LONG_UNALIGNED, 24, availUva);
        payload.set(JAVA_LONG_UNALIGNED, 32, 0L);
        send(Request.SET_VRING_ADDR, VRING_ADDR_SIZE);
    }

    /** SET_VRING_KICK with {@code fd}, or with the "no fd" bit when {@code fd < 0}. */
    public void setVringKick(final int queue, final int fd) throws IOException {
        vringFd(Request.SET_VRING_KICK, queue, fd);
    }

    public void setVringCall(final int queue, final int fd) throws IOException {
        vringFd(Request.SET_VRING_CALL, queue, fd);
    }

    /** SET_VRING_ERR with {@code fd}, or with the "no fd" bit when {@code fd < 0}: the back end signals it on a queue error. */
    public void setVringErr(final int queue, final int fd) throws IOException {
        vringFd(Request.SET_VRING_ERR, queue, fd);
    }

    public void setVringEnable(final int queue, final boolean enable) throws IOException {
        vringState(Request.SET_VRING_ENABLE, queue, enable ? 1 : 0);
    }

    /** GET_VRING_BASE: stops queue {@code queue} and returns the avail index the back end stopped at. */
    public int stopQueue(final int queue) throws IOException {
        payload.set(JAVA_INT_UNALIGNED, 0, queue);
        payload.set(JAVA_INT_UNALIGNED, 4, 0);
        final Reply r = call(Request.GET_VRING_BASE, 8, 8);
        final ByteBuffer b = ByteBuffer.wrap(r.payload()).order(ByteOrder.LITTLE_ENDIAN);
        if (b.getInt(0) != queue) {
            throw new IOException("GET_VRING_BASE for queue " + queue + " answered for queue " + b.getInt(0));
        }
        return b.getInt(4);
    }

    private void vringState(final Request r, final int queue, final int num) throws IOException {
        payload.set(JAVA_INT_UNALIGNED, 0, queue);
        payload.set(JAVA_INT_UNALIGNED, 4, num);
        send(r, 8);
    }

    private void vringFd(final Request r, final int queue, final int fd) throws IOException {
        payload.set(JAVA_LONG_UNALIGNED, 0, (queue & Protocol.VRING_IDX_MASK) | (fd < 0 ? Protocol.VRING_NOFD_MASK : 0));
        if (fd < 0) {
            send(r, 8);
        } else {
            send(r, 8, fd);
        }
    }

    // ---------------------------------------------------------------- framing

    private int flags() {
        return Protocol.VERSION | (replyAck ? Protocol.FLAG_NEED_REPLY : 0);
    }

    /** Sends a message that has no reply of its own; with REPLY_ACK waits for its ack and fails on a NAK. */
    private void send(final Request r, final int size, final int... fds) throws IOException {
        channel.send(r.code, flags(), size, fds);
        if (replyAck) {
            final long status = ack(r);
            if (status != 0) {
                throw new IOException("back end refused " + r + " (REPLY_ACK status " + status + ")");
            }
        }
    }

    private long ack(final Request r) throws IOException {
        return call0(r, 8).u64();
    }

    /** Sends a request whose reply carries a u64, and reads it. */
    private Reply call(final Request r, final int size) throws IOException {
        return call(r, size, 8);
    }

    /** Sends a request and reads its reply; {@code replySize} -1 accepts any size. */
    private Reply call(final Request r, final int size, final int replySize) throws IOException {
        channel.send(r.code, Protocol.VERSION, size);
        return call0(r, replySize);
    }

    private Reply call0(final Request r, final int replySize) throws IOException {
        final Reply reply = channel.read(r.toString());
        if (reply == null) {
            throw new IOException("back end closed the connection instead of answering " + r);
        }
        if (reply.code() != r.code || (reply.flags() & Protocol.VERSION_MASK) != Protocol.VERSION
            || (reply.flags() & Protocol.FLAG_REPLY) == 0) {
            throw new IOException("back end answered " + r + " with request " + reply.code() + ", flags 0x"
                + Integer.toHexString(reply.flags()));
        }
        if (replySize >= 0 && reply.payload().length != replySize) {
            throw new IOException("reply to " + r + " has " + reply.payload().length + " payload bytes, expected " + replySize);
        }
        return reply;
    }

    // ---------------------------------------------------------------- raw access for hostile-input tests

    /** Sends a header {code, flags, payload.length} and {@code payload}, with {@code fds}; no reply is read. */
    public void sendRaw(final int code, final int flags, final byte[] payloadBytes, final int... fds) throws IOException {
        final ByteBuffer b = ByteBuffer.allocate(Protocol.HEADER_SIZE + payloadBytes.length).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(code).putInt(flags).putInt(payloadBytes.length).put(payloadBytes);
        channel.sendBytes(b.array(), fds);
    }

    /** Sends {@code bytes} as they are (a header with any size field, a partial header, garbage). */
    public void sendRawBytes(final byte[] bytes, final int... fds) throws IOException {
        channel.sendBytes(bytes, fds);
    }

    /**
     * Reads the next message from the back end within the reply timeout.
     *
     * @return the message, or {@code null} if the back end closed the connection
     * @throws ReplyTimeoutException if nothing arrived in time
     */
    public Reply readReply() throws IOException {
        return channel.read("a reply to a raw message");
    }

    /** Whether the back end has closed the connection, waiting up to {@code timeout} for it to do so. */
    public boolean isClosedByPeer(final Duration timeout) {
        return channel.isClosedByPeer(timeout);
    }

    // ---------------------------------------------------------------- state

    public DriverQueue queue(final int i) {
        return queues[i];
    }

    public int queueCount() {
        return queues.length;
    }

    public GuestRam ram() {
        return ram;
    }

    /** Virtio features the back end offered in GET_FEATURES. */
    public long offeredFeatures() {
        return offeredFeatures;
    }

    /** Virtio features we acked with SET_FEATURES. */
    public long features() {
        return features;
    }

    public boolean hasFeature(final int bit) {
        return Protocol.has(features, bit);
    }

    public long offeredProtocolFeatures() {
        return offeredProtocolFeatures;
    }

    public long protocolFeatures() {
        return protocolFeatures;
    }

    /** Queues the back end supports (GET_QUEUE_NUM, or 1 without MQ). */
    public int queueNum() {
        return queueNum;
    }

    /** GET_MAX_MEM_SLOTS, or 0 when CONFIGURE_MEM_SLOTS was not negotiated. */
    public long maxMemSlots() {
        return maxMemSlots;
    }

    /** The config space read during the handshake. */
    public BlkConfig blkConfig() {
        return BlkConfig.parse(config);
    }

    /** Closes the socket (the back end sees a disconnect), the queues' eventfds and the guest RAM. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        channel.close();
        for (final DriverQueue q : queues) {
            q.close();
        }
        ram.close();
    }
}
