package io.lazyblk.tools.frontend;

import io.lazyblk.vhost.proto.Protocol;
import io.lazyblk.sys.LibC;
import io.lazyblk.sys.NativeException;
import io.lazyblk.sys.UnixSocket;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.time.Duration;

import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;

/**
 * Front-end framing of vhost-user messages over one {@link UnixSocket}: a header {@code {u32 request, u32 flags,
 * u32 size}} and a payload, with fds as {@code SCM_RIGHTS}. Every read waits in {@code poll(2)} against a
 * deadline, so a back end that neither answers nor hangs up costs a timeout, never a hang.
 *
 * <p>Owns the socket and a native message buffer. Not thread-safe (control messages go one at a time, as in QEMU).
 */
final class VhostUserChannel implements AutoCloseable {
    private static final short POLLIN = 0x1;
    private static final short POLLERR = 0x8;
    private static final short POLLHUP = 0x10;
    /** Peer shut down its writing side (Linux {@code POLLRDHUP}); asked for alone it ignores pending data. */
    private static final short POLLRDHUP = 0x2000;

    private final UnixSocket socket;
    private final long timeoutNanos;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment buf = arena.allocate(Protocol.HEADER_SIZE + Protocol.MAX_PAYLOAD, 8);
    private final MemorySegment pollFd = arena.allocate(8, 4);
    private boolean closed;

    private VhostUserChannel(final UnixSocket socket, final Duration replyTimeout) {
        this.socket = socket;
        this.timeoutNanos = replyTimeout.toNanos();
    }

    static VhostUserChannel connect(final Path path, final Duration replyTimeout) throws IOException {
        return new VhostUserChannel(UnixSocket.connect(path), replyTimeout);
    }

    /** Where the caller builds the payload of the next {@link #send}. */
    MemorySegment payload() {
        return buf.asSlice(Protocol.HEADER_SIZE, Protocol.MAX_PAYLOAD);
    }

    /** Sends a header and the first {@code size} bytes of {@link #payload()}, with {@code fds} (not closed here). */
    void send(final int code, final int flags, final int size, final int... fds) throws IOException {
        buf.set(JAVA_INT_UNALIGNED, Protocol.HDR_REQUEST, code);
        buf.set(JAVA_INT_UNALIGNED, Protocol.HDR_FLAGS, flags);
        buf.set(JAVA_INT_UNALIGNED, Protocol.HDR_SIZE, size);
        socket.send(buf, Protocol.HEADER_SIZE + size, fds, fds.length);
    }

    /** Sends {@code bytes} exactly as given (any header, any length), with {@code fds}. */
    void sendBytes(final byte[] bytes, final int... fds) throws IOException {
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment seg = a.allocate(Math.max(1, bytes.length), 8);
            MemorySegment.copy(bytes, 0, seg, ValueLayout.JAVA_BYTE, 0, bytes.length);
            socket.send(seg, bytes.length, fds, fds.length);
        }
    }

    /**
     * Reads one message within the reply timeout.
     *
     * @return the message, or {@code null} if the back end closed the connection before sending a byte of it
     * @throws ReplyTimeoutException if nothing (or only part of a message) arrived in time
     * @throws IOException if the connection ended inside a message or the header announces an absurd size
     */
    Reply read(final String waitingFor) throws IOException {
        final long deadline = System.nanoTime() + timeoutNanos;
        if (!readExactly(buf, 0, Protocol.HEADER_SIZE, deadline, waitingFor)) {
            return null;
        }
        final int code = buf.get(JAVA_INT_UNALIGNED, Protocol.HDR_REQUEST);
        final int flags = buf.get(JAVA_INT_UNALIGNED, Protocol.HDR_FLAGS);
        final int size = buf.get(JAVA_INT_UNALIGNED, Protocol.HDR_SIZE);
        if (size < 0 || size > Protocol.MAX_PAYLOAD) {
            throw new IOException("back end sent a message (request " + code + ") announcing " + Integer.toUnsignedString(size)
                + " payload bytes while we waited for " + waitingFor);
        }
        if (size > 0 && !readExactly(buf, Protocol.HEADER_SIZE, size, deadline, waitingFor)) {
            throw new IOException("back end closed the connection between header and payload of its reply to " + waitingFor);
        }
        final byte[] p = new byte[size];
        MemorySegment.copy(buf, ValueLayout.JAVA_BYTE, Protocol.HEADER_SIZE, p, 0, size);
        return new Reply(code, flags, p);
    }

    /** Reads {@code length} bytes into {@code dst} at {@code offset}; false on EOF before the first byte. */
    private boolean readExactly(final MemorySegment dst, final long offset, final long length, final long deadline,
                                final String waitingFor) throws IOException {
        long done = 0;
        while (done < length) {
            final long left = deadline - System.nanoTime();
            final int revents = left <= 0 ? 0 : poll(POLLIN, left);
            if (revents < 0) {
                continue; // EINTR
            }
            if (revents == 0) {
                throw new ReplyTimeoutException("no reply from the back end within " + timeoutNanos / 1_000_000 + " ms while waiting for "
                    + waitingFor + (done > 0 ? " (got " + done + " of " + length + " bytes)" : ""));
            }
            final long n = LibC.rawRead(socket.fd(), dst.address() + offset + done, length - done);
            if (n == -LibC.EINTR || n == -LibC.EAGAIN) {
                continue;
            }
            if (n < 0) {
                throw new NativeException("read(vhost-user socket) waiting for " + waitingFor, (int) -n);
            }
            if (n == 0) {
                if (done == 0) {
                    return false;
                }
                throw new IOException("back end closed the connection in the middle of its reply to " + waitingFor
                    + " (" + done + " of " + length + " bytes)");
            }
            done += n;
        }
        return true;
    }

    /** True once the back end has hung up, waiting at most {@code timeout}; unread replies are left unread. */
    boolean isClosedByPeer(final Duration timeout) {
        final long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            final long left = deadline - System.nanoTime();
            final int revents = poll(POLLRDHUP, Math.max(0, left));
            if (revents > 0 && (revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
                return true;
            }
            if (left <= 0) {
                return false;
            }
        }
    }

    /** poll(2) on the socket; returns revents, 0 on timeout, -1 if interrupted. */
    private int poll(final short events, final long timeoutNanos) {
        pollFd.set(ValueLayout.JAVA_INT, 0, socket.fd());
        pollFd.set(ValueLayout.JAVA_SHORT, 4, events);
        pollFd.set(ValueLayout.JAVA_SHORT, 6, (short) 0);
        final int millis = (int) Math.min(Integer.MAX_VALUE, (timeoutNanos + 999_999) / 1_000_000);
        final int rc = LibC.rawPoll(pollFd, 1, millis);
        if (rc == -LibC.EINTR) {
            return -1;
        }
        if (rc < 0) {
            return POLLERR;
        }
        return rc == 0 ? 0 : pollFd.get(ValueLayout.JAVA_SHORT, 6);
    }

    @Override
    public void close() {
        if (!closed) {
            closed = true;
            socket.close();
            arena.close();
        }
    }
}
