package io.lazyblk.vhost;

import io.lazyblk.vhost.device.VhostUserDevice;
import io.lazyblk.vhost.mem.GuestMemory;
import io.lazyblk.vhost.mem.MemoryRegion;
import io.lazyblk.vhost.proto.Protocol;
import io.lazyblk.vhost.proto.Request;
import io.lazyblk.sys.LibC;
import io.lazyblk.sys.NativeException;
import io.lazyblk.sys.UnixSocket;
import org.agrona.ErrorHandler;
import org.agrona.concurrent.AgentRunner;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.HashSet;
import java.util.Set;

import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;

/**
 * The control agent of one front-end connection: reads vhost-user messages, validates each one completely, and
 * applies it. Queue agents are started and stopped only from here; a memory-table change stops the running
 * queues (draining their in-flight requests), swaps the table, and restarts them, so no request ever touches
 * an unmapped region. Runs on one thread; {@link #close()} may be called from another to end it.
 */
public final class VhostUserConnection implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(VhostUserConnection.class);
    static final long PROTOCOL_FEATURES = (1L << Protocol.PF_MQ) | (1L << Protocol.PF_REPLY_ACK)
        | (1L << Protocol.PF_CONFIG) | (1L << Protocol.PF_RESET_DEVICE) | (1L << Protocol.PF_CONFIGURE_MEM_SLOTS)
        | (1L << Protocol.PF_INFLIGHT_SHMFD);
    /**
     * How long a tracked queue finishes its requests when the front end goes away or the engine stops: what local I/O
     * can answer in that time is answered; a read parked on a fetch from a stalled provider is left marked in the
     * in-flight region, and the next engine runs it again. (Untracked queues wait QueueAgent's full drain: nobody
     * else would answer them.)
     */
    static final long TRACKED_TEARDOWN_DRAIN_NANOS = 1_000_000_000L;

    private final UnixSocket socket;
    private final VhostUserDevice device;
    private final long spinNanos;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment buf = arena.allocate(Protocol.HEADER_SIZE + Protocol.MAX_PAYLOAD, 8);
    private final MemorySegment payload = buf.asSlice(Protocol.HEADER_SIZE);
    private final int[] fds = new int[UnixSocket.MAX_FDS];
    private final int[] fdCount = new int[1];
    private final int[] replyFd = new int[1];
    private final QueueState[] queues;
    private final InflightTracking inflight;
    private final DirtyLogging dirtyLogs = new DirtyLogging();
    private final long offeredFeatures;
    /** The protocol features offered: {@link #PROTOCOL_FEATURES}, with LOG_SHMFD for a device that can migrate. */
    private final long offeredProtocolFeatures;
    private long ackedFeatures;
    private long protocolFeatures;
    private GuestMemory memory = GuestMemory.EMPTY;

    public VhostUserConnection(final UnixSocket socket, final VhostUserDevice device, final long spinNanos) {
        this.socket = socket;
        this.device = device;
        this.spinNanos = spinNanos;
        // Dirty logging only for a device that can migrate: QEMU refuses to migrate a VM whose backend offers none.
        final boolean migratable = device.migratable();
        this.offeredFeatures = device.features() | (1L << Protocol.F_PROTOCOL_FEATURES) | (migratable ? 1L << Protocol.F_LOG_ALL : 0);
        this.offeredProtocolFeatures = PROTOCOL_FEATURES | (migratable ? 1L << Protocol.PF_LOG_SHMFD : 0);
        this.queues = new QueueState[device.numQueues()];
        for (int i = 0; i < queues.length; i++) {
            queues[i] = new QueueState(i);
        }
        this.inflight = new InflightTracking(queues.length);
    }

    /** Serves messages until the front end disconnects or breaks the protocol; then releases everything. */
    public void run() {
        try {
            while (readMessage()) {
                // handled
            }
            LOG.info("front end disconnected");
        } catch (final ProtocolException e) {
            LOG.warn("closing vhost-user connection: {}", e.getMessage());
        } catch (final IOException e) {
            LOG.warn("closing vhost-user connection: {}", e.getMessage());
        } catch (final RuntimeException e) {
            // A bug of ours, not the front end's: end this connection, keep the server serving the next one.
            LOG.error("closing vhost-user connection after an internal error", e);
        } finally {
            teardown();
        }
    }

    private boolean readMessage() throws IOException, ProtocolException {
        final long got = socket.receive(buf, Protocol.HEADER_SIZE, fds, fdCount);
        final int nfds = fdCount[0];
        try {
            if (got == 0) {
                return false;
            }
            if (got < Protocol.HEADER_SIZE && !socket.readFully(buf.asSlice(got), Protocol.HEADER_SIZE - got)) {
                throw new ProtocolException("short message header (" + got + " bytes)");
            }
            final int code = buf.get(JAVA_INT_UNALIGNED, Protocol.HDR_REQUEST);
            final int flags = buf.get(JAVA_INT_UNALIGNED, Protocol.HDR_FLAGS);
            final int size = buf.get(JAVA_INT_UNALIGNED, Protocol.HDR_SIZE);
            if ((flags & Protocol.VERSION_MASK) != Protocol.VERSION) {
                throw new ProtocolException("message with protocol version " + (flags & Protocol.VERSION_MASK) + ", expected 1");
            }
            if (size < 0 || size > Protocol.MAX_PAYLOAD) {
                throw new ProtocolException("message payload of " + Integer.toUnsignedString(size) + " bytes, at most "
                    + Protocol.MAX_PAYLOAD + " accepted");
            }
            if (size > 0 && !socket.readFully(payload, size)) {
                throw new ProtocolException("peer closed the socket before the payload");
            }
            final Request req = Request.of(code);
            if (req == null) {
                throw new ProtocolException("unknown request code " + code);
            }
            if (req.payloadSize >= 0 && size != req.payloadSize) {
                throw new ProtocolException(req + " with a " + size + "-byte payload, expected " + req.payloadSize);
            }
            if (nfds > req.maxFds) {
                throw new ProtocolException(req + " carried " + nfds + " fds, at most " + req.maxFds + " allowed");
            }
            final boolean needReply = (flags & Protocol.FLAG_NEED_REPLY) != 0
                && Protocol.has(protocolFeatures, Protocol.PF_REPLY_ACK);
            LOG.debug("{}: {}-byte payload, {} fds, flags 0x{}", req, size, nfds, Integer.toHexString(flags));
            final long status = handle(req, size, nfds);
            if (needReply && !hasOwnReply(req)) {
                payload.set(JAVA_LONG_UNALIGNED, 0, status);
                reply(req, 8);
            }
            return true;
        } finally {
            for (int i = 0; i < nfds; i++) {
                LibC.close(fds[i]); // every fd a handler kept was replaced by -1
            }
        }
    }

    private static boolean hasOwnReply(final Request r) {
        return switch (r) {
            case GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_VRING_BASE, GET_CONFIG, GET_MAX_MEM_SLOTS,
                 GET_INFLIGHT_FD, SET_LOG_BASE -> true;
            default -> false;
        };
    }

    private int takeFd(final int i) {
        final int fd = fds[i];
        fds[i] = -1;
        return fd;
    }

    private QueueState queue(final long index, final Request r) throws ProtocolException {
        if (index < 0 || index >= queues.length) {
            throw new ProtocolException(r + " for queue " + index + ", but the device has " + queues.length + " queues");
        }
        return queues[(int) index];
    }

    /** Applies one validated message; returns the REPLY_ACK status (0 = success). */
    private long handle(final Request r, final int size, final int nfds) throws IOException, ProtocolException {
        switch (r) {
            case GET_FEATURES -> replyU64(r, offeredFeatures);
            case SET_FEATURES -> {
                final long f = payload.get(JAVA_LONG_UNALIGNED, 0);
                if ((f & ~offeredFeatures) != 0) {
                    throw new ProtocolException("SET_FEATURES acks features never offered: 0x" + Long.toHexString(f & ~offeredFeatures));
                }
                ackedFeatures = f;
                device.featuresAcked(f);
                applyLog(); // LOG_ALL on or off; running queues are not restarted and keep their indices
            }
            case GET_PROTOCOL_FEATURES -> replyU64(r, offeredProtocolFeatures);
            case SET_PROTOCOL_FEATURES -> {
                final long f = payload.get(JAVA_LONG_UNALIGNED, 0);
                if ((f & ~offeredProtocolFeatures) != 0) {
                    throw new ProtocolException("SET_PROTOCOL_FEATURES acks features never offered: 0x"
                        + Long.toHexString(f & ~offeredProtocolFeatures));
                }
                protocolFeatures = f;
            }
            case SET_OWNER -> {
            }
            case RESET_OWNER, RESET_DEVICE -> resetDevice();
            case GET_QUEUE_NUM -> replyU64(r, queues.length);
            case GET_MAX_MEM_SLOTS -> replyU64(r, Protocol.MAX_MEM_SLOTS);
            case SET_MEM_TABLE -> swapMemory(MemoryMessages.setMemTable(payload, size, nfds, this::takeFd));
            case ADD_MEM_REG -> swapMemory(MemoryMessages.addMemReg(memory, payload, nfds, this::takeFd));
            case REM_MEM_REG -> {
                final GuestMemory without = MemoryMessages.remMemReg(memory, payload);
                if (without == null) {
                    return 1;
                }
                swapMemory(without);
            }
            case SET_VRING_NUM -> {
                final QueueState q = queue(payload.get(JAVA_INT_UNALIGNED, 0) & 0xffffffffL, r);
                final int num = payload.get(JAVA_INT_UNALIGNED, 4);
                if (q.running()) {
                    throw new ProtocolException("SET_VRING_NUM on running queue " + q.ring.index);
                }
                if (!io.lazyblk.vhost.ring.SplitVirtqueue.validSize(num)) {
                    throw new ProtocolException("SET_VRING_NUM " + num + ": size must be a power of two up to "
                        + io.lazyblk.vhost.ring.SplitVirtqueue.MAX_SIZE);
                }
                q.size = num;
            }
            case SET_VRING_ADDR -> {
                final QueueState q = queue(payload.get(JAVA_INT_UNALIGNED, 0) & 0xffffffffL, r);
                if (q.setAddresses(payload)) {
                    return 0; // a running ring's log flag, applied in place
                }
                final String err = resolve(q, memory);
                if (err != null) {
                    q.addressesSet = false;
                    LOG.warn("queue {}: {}", q.ring.index, err);
                    return 1;
                }
            }
            case SET_VRING_BASE -> {
                final QueueState q = queue(payload.get(JAVA_INT_UNALIGNED, 0) & 0xffffffffL, r);
                if (q.running()) {
                    throw new ProtocolException("SET_VRING_BASE on running queue " + q.ring.index);
                }
                final int base = payload.get(JAVA_INT_UNALIGNED, 4);
                if (base < 0 || base > 0xffff) {
                    throw new ProtocolException("SET_VRING_BASE " + base + " is not a 16-bit ring index");
                }
                q.base = base;
            }
            case GET_VRING_BASE -> {
                final QueueState q = queue(payload.get(JAVA_INT_UNALIGNED, 0) & 0xffffffffL, r);
                stopQueue(q);
                LibC.close(q.kickFd);
                q.kickFd = -1;
                q.kickSet = false;
                // Before the reply: QEMU takes the answers as done when it has it (at a migration's switchover it then
                // reads the used index and syncs the dirty log for the last time).
                device.queueStopped(q.ring.index);
                if (dirtyLogs.active(ackedFeatures) != null && noQueueRunning()) {
                    device.switchedOver(); // logging and nothing runs: the switchover (a plain stop never logs)
                }
                payload.set(JAVA_INT_UNALIGNED, 0, q.ring.index);
                payload.set(JAVA_INT_UNALIGNED, 4, q.base);
                reply(r, 8);
            }
            case SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR -> {
                final long v = payload.get(JAVA_LONG_UNALIGNED, 0);
                if ((v & ~(Protocol.VRING_IDX_MASK | Protocol.VRING_NOFD_MASK)) != 0) {
                    throw new ProtocolException(r + " with unknown bits 0x" + Long.toHexString(v));
                }
                final QueueState q = queue(v & Protocol.VRING_IDX_MASK, r);
                final boolean noFd = (v & Protocol.VRING_NOFD_MASK) != 0;
                if (noFd != (nfds == 0)) {
                    throw new ProtocolException(r + (noFd ? " says no fd but carried one" : " carried no fd"));
                }
                if (!noFd) {
                    RingEventFds.check(r, fds[0]);
                }
                final int fd = noFd ? -1 : takeFd(0);
                setRingFd(r, q, fd);
            }
            case SET_VRING_ENABLE -> {
                final QueueState q = queue(payload.get(JAVA_INT_UNALIGNED, 0) & 0xffffffffL, r);
                final int on = payload.get(JAVA_INT_UNALIGNED, 4);
                if (on != 0 && on != 1) {
                    throw new ProtocolException("SET_VRING_ENABLE with value " + on);
                }
                q.enabled = on == 1;
                if (q.enabled) {
                    maybeStart(q);
                } else {
                    stopQueue(q);
                }
            }
            case SET_LOG_BASE -> {
                if (!Protocol.has(protocolFeatures, Protocol.PF_LOG_SHMFD)) {
                    throw new ProtocolException("SET_LOG_BASE without LOG_SHMFD negotiated");
                }
                if (nfds != 1) {
                    throw new ProtocolException("SET_LOG_BASE without its fd");
                }
                if (dirtyLogs.setBase(payload, takeFd(0), memory)) {
                    stopAll(); // no queue marks a replaced log once stopped: unmap them
                    dirtyLogs.releaseRetired();
                    applyLog();
                    startAllThatShould("dirty logs were released");
                } else {
                    applyLog();
                }
                // QEMU waits for a reply with this request code (no need_reply flag): a u64 0.
                replyU64(r, 0);
            }
            case SET_LOG_FD -> {
                // An eventfd to tell the front end the log changed; QEMU polls the log instead. Closed with the message.
                if (!Protocol.has(protocolFeatures, Protocol.PF_LOG_SHMFD)) {
                    throw new ProtocolException("SET_LOG_FD without LOG_SHMFD negotiated");
                }
                if (size > 8) {
                    throw new ProtocolException("SET_LOG_FD with a " + size + "-byte payload");
                }
            }
            case SET_BACKEND_REQ_FD -> {
                // Not offered (no BACKEND_REQ); the fd is closed with the message.
            }
            case GET_INFLIGHT_FD -> {
                requireInflight(r);
                stopAll();
                replyFd[0] = inflight.create(payload);
                buf.set(JAVA_INT_UNALIGNED, Protocol.HDR_REQUEST, r.code);
                buf.set(JAVA_INT_UNALIGNED, Protocol.HDR_FLAGS, Protocol.VERSION | Protocol.FLAG_REPLY);
                buf.set(JAVA_INT_UNALIGNED, Protocol.HDR_SIZE, Protocol.INFLIGHT_SIZE);
                socket.send(buf, Protocol.HEADER_SIZE + Protocol.INFLIGHT_SIZE, replyFd, 1);
                startAllThatShould("the in-flight region changed");
            }
            case SET_INFLIGHT_FD -> {
                requireInflight(r);
                if (nfds != 1) {
                    throw new ProtocolException("SET_INFLIGHT_FD without its fd");
                }
                stopAll();
                inflight.adopt(payload, takeFd(0));
                startAllThatShould("the in-flight region changed");
            }
            case GET_CONFIG -> getConfig(r, size);
            case SET_CONFIG -> {
                return setConfig(size);
            }
            default -> throw new ProtocolException("unhandled request " + r);
        }
        return 0;
    }

    /** Points every queue's ring at the log to mark (null while the front end does not log). */
    private void applyLog() {
        final io.lazyblk.vhost.mem.DirtyLog active = dirtyLogs.active(ackedFeatures);
        for (final QueueState q : queues) {
            q.ring.setLog(active);
        }
    }

    private void requireInflight(final Request r) throws ProtocolException {
        if (!Protocol.has(protocolFeatures, Protocol.PF_INFLIGHT_SHMFD)) {
            throw new ProtocolException(r + " without INFLIGHT_SHMFD negotiated");
        }
    }

    private void setRingFd(final Request r, final QueueState q, final int fd) throws ProtocolException {
        switch (r) {
            case SET_VRING_KICK -> {
                stopQueue(q);
                LibC.close(q.kickFd);
                q.kickFd = fd;
                q.kickSet = true;
                if (!Protocol.has(ackedFeatures, Protocol.F_PROTOCOL_FEATURES)) {
                    q.enabled = true; // without protocol features a ring starts enabled
                }
                maybeStart(q);
            }
            case SET_VRING_CALL -> {
                // The agent reads callFd only while running: swap it with the queue stopped.
                final boolean wasRunning = q.running();
                stopQueue(q);
                LibC.close(q.callFd);
                q.callFd = fd;
                if (wasRunning) {
                    maybeStart(q);
                }
            }
            default -> {
                // The agent signals errFd when the queue breaks: swap it with the queue stopped, as the call fd.
                final boolean wasRunning = q.running();
                stopQueue(q);
                LibC.close(q.errFd);
                q.errFd = fd;
                if (wasRunning) {
                    maybeStart(q);
                }
            }
        }
    }

    private static String resolve(final QueueState q, final GuestMemory mem) {
        q.ring.configure(q.size, false, false);
        return q.ring.setAddresses(mem, q.descUva, q.availUva, q.usedUva);
    }

    /** Starts {@code q} if it is not running and everything it needs is set (see {@link QueueState#shouldRun()}). */
    private void maybeStart(final QueueState q) throws ProtocolException {
        if (q.running() || !q.shouldRun()) {
            return;
        }
        q.ring.configure(q.size, Protocol.has(ackedFeatures, Protocol.F_EVENT_IDX),
            Protocol.has(ackedFeatures, Protocol.F_INDIRECT_DESC));
        final String err = q.ring.setAddresses(memory, q.descUva, q.availUva, q.usedUva);
        if (err != null) {
            throw new ProtocolException("queue " + q.ring.index + " cannot start: " + err);
        }
        q.ring.setBase(q.base);
        q.ring.setUsedLog(q.usedLogGpa);
        final boolean resumed = inflight.attach(q);
        q.ring.setCallFd(q.callFd);
        if (resumed && q.callFd >= 0) {
            // A previous device may have published answers whose interrupt the front end never delivered (it stopped
            // watching the call eventfd first): one spurious interrupt makes the guest look at its used ring.
            io.lazyblk.sys.EventFd.signal(q.callFd);
        }
        try {
            final QueueAgent agent = new QueueAgent(q.ring, waker -> device.openQueue(q.ring, waker), q.kickFd, q.errFd, spinNanos);
            final ErrorHandler onError = t -> LOG.error("queue " + q.ring.index + " agent failed", t);
            q.agent = agent;
            q.runner = new AgentRunner(agent.idleStrategy(), onError, null, agent);
            AgentRunner.startOnThread(q.runner);
        } catch (final NativeException e) {
            throw new ProtocolException("queue " + q.ring.index + " cannot start: " + e.getMessage());
        } catch (final java.io.UncheckedIOException e) {
            // The device could not open its storage (a live migration's destination whose source never let go of the
            // image): one line with the device's reason, not an internal error's stack trace.
            throw new ProtocolException("queue " + q.ring.index + " cannot start: " + e.getCause().getMessage());
        }
    }

    /** Stops the queue's agent, waiting for its in-flight requests, and records where the ring stopped. */
    private void stopQueue(final QueueState q) {
        stopQueue(q, false);
    }

    /**
     * @param leaving the front end went away or the engine stops: a queue whose requests the in-flight region tracks
     *     waits only {@link #TRACKED_TEARDOWN_DRAIN_NANOS} for them
     */
    private void stopQueue(final QueueState q, final boolean leaving) {
        if (!q.running()) {
            return;
        }
        if (leaving && inflight.tracks(q.ring.index)) {
            q.agent.limitDrain(TRACKED_TEARDOWN_DRAIN_NANOS);
        }
        q.agent.interruptSleep();
        // The agent drains its in-flight requests for up to QueueAgent.DRAIN_NANOS before it stops: wait that out in
        // one join, rather than Agrona's default of printing a retry line to stderr every 5 s meanwhile.
        q.runner.close(QueueAgent.CLOSE_WAIT_MILLIS, t -> LOG.warn("queue {}: its agent has not stopped {} s after the stop request; still waiting",
            q.ring.index, QueueAgent.CLOSE_WAIT_MILLIS / 1000));
        final Thread t = q.runner.thread();
        if (t == null || !t.isAlive()) { // alive only if this thread was interrupted while waiting: leave it be
            q.agent.releaseAfterStop(); // a no-op unless its thread died of an Error, which skips the agent's onClose
        }
        q.base = q.ring.base();
        q.runner = null;
        q.agent = null;
    }

    private boolean noQueueRunning() {
        for (final QueueState q : queues) {
            if (q.running()) {
                return false;
            }
        }
        return true;
    }

    private void stopAll() {
        for (final QueueState q : queues) {
            stopQueue(q);
        }
    }

    private void resetDevice() {
        stopAll();
        for (final QueueState q : queues) {
            q.reset();
        }
        inflight.close();
        ackedFeatures = 0;
        applyLog();
        dirtyLogs.close(); // the front end asks for a new region after a reset (QEMU frees its copy)
        ackedFeatures = 0;
        applyLog();
        dirtyLogs.close();
        device.reset();
    }

    /**
     * Installs {@code table}: stops running queues (each finishes its in-flight requests, which may point into the
     * old table), unmaps regions the new table dropped, then starts every queue that should run: not only those
     * that ran before, but also one that could not start on an earlier table (its ring was outside it, say, after a
     * REM_MEM_REG) and can on this one.
     */
    private void swapMemory(final GuestMemory table) {
        stopAll();
        final GuestMemory old = memory;
        memory = table;
        final Set<MemoryRegion> keep = new HashSet<>(table.regions());
        for (final MemoryRegion r : old.regions()) {
            if (!keep.contains(r)) {
                r.close();
            }
        }
        startAllThatShould("the memory table changed");
    }

    private void startAllThatShould(final String why) {
        for (final QueueState q : queues) {
            try {
                maybeStart(q);
            } catch (final ProtocolException e) {
                LOG.warn("queue {} stays stopped after {}: {}", q.ring.index, why, e.getMessage());
            }
        }
    }

    private void getConfig(final Request r, final int size) throws ProtocolException, IOException {
        final int len = ConfigMessages.range(payload, size, device.configSize(), r);
        if (len < 0) {
            reply(r, 0); // an empty reply tells the front end the read failed
            return;
        }
        device.readConfig(payload.get(JAVA_INT_UNALIGNED, 0), payload.asSlice(Protocol.CONFIG_HEADER, len));
        reply(r, size);
    }

    private long setConfig(final int size) throws ProtocolException {
        final int len = ConfigMessages.range(payload, size, device.configSize(), Request.SET_CONFIG);
        if (len < 0) {
            return 1;
        }
        return device.writeConfig(payload.get(JAVA_INT_UNALIGNED, 0), payload.asSlice(Protocol.CONFIG_HEADER, len)) ? 0 : 1;
    }

    private void replyU64(final Request r, final long v) throws IOException {
        payload.set(JAVA_LONG_UNALIGNED, 0, v);
        reply(r, 8);
    }

    private void reply(final Request r, final int size) throws IOException {
        buf.set(JAVA_INT_UNALIGNED, Protocol.HDR_REQUEST, r.code);
        buf.set(JAVA_INT_UNALIGNED, Protocol.HDR_FLAGS, Protocol.VERSION | Protocol.FLAG_REPLY);
        buf.set(JAVA_INT_UNALIGNED, Protocol.HDR_SIZE, size);
        socket.send(buf, Protocol.HEADER_SIZE + size, fds, 0);
    }

    private void teardown() {
        for (final QueueState q : queues) {
            stopQueue(q, true);
        }
        for (final QueueState q : queues) {
            q.reset();
        }
        inflight.close();
        ackedFeatures = 0;
        applyLog();
        dirtyLogs.close();
        for (final MemoryRegion r : memory.regions()) {
            r.close();
        }
        memory = GuestMemory.EMPTY;
        device.reset();
        socket.close();
        arena.close();
    }

    /**
     * Ends {@link #run()} from another thread, the front end still connected while the queues finish: only this end's
     * reading is shut down, so the control thread leaves its loop and stops the queues (their last answers reach the
     * guest through call eventfds the front end still watches) before the socket closes. Shutting down both ways
     * would tell QEMU first: it stops watching the call eventfds, and an answer published after that never
     * interrupts the guest, which then waits for it forever.
     */
    @Override
    public void close() {
        socket.shutdownInput();
    }
}
