package io.lazyblk.sys;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * A connected or listening {@code AF_UNIX} stream socket that passes file descriptors with {@code SCM_RIGHTS}.
 *
 * <p>Owns its fd and a small native scratch area ({@code msghdr}, {@code iovec}, control buffer). Not
 * thread-safe: one thread sends and receives; {@link #shutdown()} may be called from any thread to wake it.
 */
public final class UnixSocket implements AutoCloseable {
    /** Most fds one message may carry; a vhost-user message carries at most 8 (one per memory region). */
    public static final int MAX_FDS = 8;
    /** Room for 4x the fds we accept, so a sender that passes too many is seen (and refused) rather than truncated. */
    private static final int CONTROL_ROOM_FDS = 4 * MAX_FDS;
    private static final int CMSG_HDR = 16; // cmsg_len(8) cmsg_level(4) cmsg_type(4) on x86-64
    private static final int CONTROL_BYTES = CMSG_HDR + CONTROL_ROOM_FDS * 4;
    // struct msghdr on x86-64 (56 bytes): name(8) namelen(4)+pad(4) iov(8) iovlen(8) control(8) controllen(8) flags(4)+pad(4)
    private static final long MSG_IOV = 16;
    private static final long MSG_IOVLEN = 24;
    private static final long MSG_CONTROL = 32;
    private static final long MSG_CONTROLLEN = 40;
    private static final long MSG_FLAGS = 48;

    private final int fd;
    private final Arena arena;
    private final MemorySegment msghdr;
    private final MemorySegment iov;
    private final MemorySegment control;
    private final int[] scratch = new int[CONTROL_ROOM_FDS];
    private volatile boolean closed;

    private UnixSocket(final int fd) {
        this.fd = fd;
        this.arena = Arena.ofShared();
        this.msghdr = arena.allocate(56, 8);
        this.iov = arena.allocate(16, 8);
        this.control = arena.allocate(CONTROL_BYTES, 8);
    }

    /**
     * Removes a stale socket file left at {@code path} by an earlier run, so that it can be bound again. Anything else
     * there (a file, a directory, a link) is not ours to remove: an IOException says so, and nothing is touched.
     */
    public static void removeStale(final Path path) throws IOException {
        final Object mode;
        try {
            mode = java.nio.file.Files.getAttribute(path, "unix:mode", java.nio.file.LinkOption.NOFOLLOW_LINKS);
        } catch (final java.nio.file.NoSuchFileException e) {
            return;
        }
        if ((((Integer) mode) & S_IFMT) != S_IFSOCK) {
            throw new IOException(path + " exists and is not a socket: refusing to replace it. Give a path that is free"
                + " (or a socket a stopped engine left behind)");
        }
        java.nio.file.Files.deleteIfExists(path);
    }

    /** {@code st_mode}'s file type bits, and the type of a socket (stat(2)). */
    private static final int S_IFMT = 0170000;
    private static final int S_IFSOCK = 0140000;

    /** Binds and listens on {@code path}, replacing a stale socket file left by an earlier run (only a socket). */
    public static UnixSocket listen(final Path path) throws IOException {
        removeStale(path);
        final int fd = LibC.socketUnix();
        try {
            LibC.bind(fd, path.toString());
            LibC.listen(fd, 4);
            return new UnixSocket(fd);
        } catch (final NativeException e) {
            LibC.close(fd);
            final Path parent = path.toAbsolutePath().getParent();
            if (e.errno() == 2) { // ENOENT
                throw new IOException("cannot create socket " + path + ": its directory " + parent + " does not exist (mkdir -p "
                    + parent + ", or give another path)", e);
            }
            if (e.errno() == 13) { // EACCES
                throw new IOException("cannot create socket " + path + ": this user may not write in " + parent
                    + " (give a directory it may write, e.g. one under /run made for it)", e);
            }
            throw e;
        } catch (final IOException e) {
            LibC.close(fd);
            throw e;
        }
    }

    public static UnixSocket connect(final Path path) throws IOException {
        final int fd = LibC.socketUnix();
        try {
            LibC.connect(fd, path.toString());
            return new UnixSocket(fd);
        } catch (final IOException e) {
            LibC.close(fd);
            throw e;
        }
    }

    /** Two connected sockets ({@code socketpair(2)}), e.g. a front end and the back end it talks to, in one process. */
    public static UnixSocket[] pair() throws NativeException {
        final int[] fds = LibC.socketPairUnix();
        return new UnixSocket[] {new UnixSocket(fds[0]), new UnixSocket(fds[1])};
    }

    /** Blocks for the next connection on a listening socket. */
    public UnixSocket accept() throws IOException {
        return new UnixSocket(LibC.accept(fd));
    }

    public int fd() {
        return fd;
    }

    /** The uid of the connected peer ({@code SO_PEERCRED}): who it is, as the kernel saw it connect. */
    public int peerUid() throws IOException {
        return LibC.peerUid(fd);
    }

    /**
     * Receives up to {@code length} bytes into {@code buf} and any fds that came with them.
     *
     * @param fdsOut receives the fds; the caller owns them from here on
     * @param fdCount {@code fdCount[0]} is set to the number of fds received
     * @return bytes received, 0 at end of stream
     * @throws IOException on a socket error, or when more than {@link #MAX_FDS} fds or a truncated control
     *         message arrived (every received fd is closed first)
     */
    public long receive(final MemorySegment buf, final long length, final int[] fdsOut, final int[] fdCount)
        throws IOException {
        fdCount[0] = 0;
        msghdr.fill((byte) 0);
        iov.set(JAVA_LONG, 0, buf.address());
        iov.set(JAVA_LONG, 8, length);
        msghdr.set(JAVA_LONG, MSG_IOV, iov.address());
        msghdr.set(JAVA_LONG, MSG_IOVLEN, 1);
        msghdr.set(JAVA_LONG, MSG_CONTROL, control.address());
        msghdr.set(JAVA_LONG, MSG_CONTROLLEN, CONTROL_BYTES);
        long n;
        do {
            n = LibC.rawRecvmsg(fd, msghdr, LibC.MSG_CMSG_CLOEXEC);
        } while (n == -LibC.EINTR);
        if (n < 0) {
            throw new NativeException("recvmsg(unix socket)", (int) -n);
        }
        final int flags = msghdr.get(JAVA_INT, MSG_FLAGS);
        final long controlLen = msghdr.get(JAVA_LONG, MSG_CONTROLLEN);
        int received = 0;
        boolean tooMany = false;
        long off = 0;
        while (off + CMSG_HDR <= controlLen) {
            final long cmsgLen = control.get(JAVA_LONG, off);
            final int level = control.get(JAVA_INT, off + 8);
            final int type = control.get(JAVA_INT, off + 12);
            if (cmsgLen < CMSG_HDR || off + cmsgLen > controlLen) {
                break;
            }
            if (level == LibC.SOL_SOCKET && type == LibC.SCM_RIGHTS) {
                final int count = (int) ((cmsgLen - CMSG_HDR) / 4);
                for (int i = 0; i < count; i++) {
                    final int f = control.get(JAVA_INT, off + CMSG_HDR + 4L * i);
                    if (received < scratch.length) {
                        scratch[received++] = f;
                    } else {
                        LibC.close(f);
                        tooMany = true;
                    }
                }
            }
            off += (cmsgLen + 7) & ~7L;
        }
        if (tooMany || received > MAX_FDS || received > fdsOut.length || (flags & LibC.MSG_CTRUNC) != 0) {
            for (int i = 0; i < received; i++) {
                LibC.close(scratch[i]);
            }
            throw new IOException("peer passed too many file descriptors (more than " + Math.min(MAX_FDS, fdsOut.length)
                + ") or a truncated control message");
        }
        System.arraycopy(scratch, 0, fdsOut, 0, received);
        fdCount[0] = received;
        return n;
    }

    /** Reads exactly {@code length} bytes; returns false on end of stream before the first byte. */
    public boolean readFully(final MemorySegment buf, final long length) throws IOException {
        long done = 0;
        while (done < length) {
            final long n = LibC.rawRead(fd, buf.address() + done, length - done);
            if (n == -LibC.EINTR) {
                continue;
            }
            if (n < 0) {
                throw new NativeException("read(unix socket)", (int) -n);
            }
            if (n == 0) {
                if (done == 0) {
                    return false;
                }
                throw new IOException("peer closed the socket in the middle of a message (" + done + " of " + length + " bytes)");
            }
            done += n;
        }
        return true;
    }

    /**
     * Sends {@code length} bytes of {@code buf} with {@code fdCount} fds from {@code fds} (not closed here). Up to
     * the control buffer's room, more than a receiver accepts: a test front end sends too many on purpose.
     */
    public void send(final MemorySegment buf, final long length, final int[] fds, final int fdCount) throws IOException {
        if (fdCount > CONTROL_ROOM_FDS) {
            throw new IllegalArgumentException("at most " + CONTROL_ROOM_FDS + " fds per message");
        }
        long done = 0;
        boolean first = true;
        while (done < length) {
            msghdr.fill((byte) 0);
            iov.set(JAVA_LONG, 0, buf.address() + done);
            iov.set(JAVA_LONG, 8, length - done);
            msghdr.set(JAVA_LONG, MSG_IOV, iov.address());
            msghdr.set(JAVA_LONG, MSG_IOVLEN, 1);
            if (first && fdCount > 0) {
                final long cmsgLen = CMSG_HDR + 4L * fdCount;
                control.set(JAVA_LONG, 0, cmsgLen);
                control.set(JAVA_INT, 8, LibC.SOL_SOCKET);
                control.set(JAVA_INT, 12, LibC.SCM_RIGHTS);
                for (int i = 0; i < fdCount; i++) {
                    control.set(JAVA_INT, CMSG_HDR + 4L * i, fds[i]);
                }
                msghdr.set(JAVA_LONG, MSG_CONTROL, control.address());
                msghdr.set(JAVA_LONG, MSG_CONTROLLEN, (cmsgLen + 7) & ~7L);
            }
            final long n = LibC.rawSendmsg(fd, msghdr, LibC.MSG_NOSIGNAL);
            if (n == -LibC.EINTR) {
                continue;
            }
            if (n < 0) {
                throw new NativeException("sendmsg(unix socket)", (int) -n);
            }
            first = false;
            done += n;
        }
    }

    /** Wakes any thread blocked on this socket; safe from any thread. */
    public void shutdown() {
        if (!closed) {
            LibC.shutdown(fd);
        }
    }

    /**
     * Ends this end's reading: a thread blocked receiving reads end of stream, while the peer keeps the connection (it
     * notices only when it writes or this end closes). Safe from any thread.
     */
    public void shutdownInput() {
        if (!closed) {
            LibC.shutdownRead(fd);
        }
    }

    /** Half-closes: the peer reads end of stream after what was sent, and this end can still read its answers. */
    public void shutdownOutput() {
        if (!closed) {
            LibC.shutdownWrite(fd);
        }
    }

    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            LibC.close(fd);
            arena.close();
        }
    }
}
