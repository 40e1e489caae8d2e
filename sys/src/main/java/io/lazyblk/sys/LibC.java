package io.lazyblk.sys;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;

import static io.lazyblk.sys.Downcalls.errno;
import static io.lazyblk.sys.Downcalls.fn;
import static io.lazyblk.sys.Downcalls.lastErrno;
import static io.lazyblk.sys.Downcalls.plain;
import static io.lazyblk.sys.Downcalls.rethrow;
import static io.lazyblk.sys.Downcalls.state;
import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The C library calls lazyblk makes, one {@code static final} handle each, looked up once.
 *
 * <p>Every call captures {@code errno} into a per-thread state segment (allocated once per thread), so a
 * call on the data path allocates nothing. Checked variants throw {@link NativeException} naming the call;
 * the {@code raw...} variants return {@code -errno} instead, for hot paths that expect {@code EAGAIN}.
 * Buffer arguments of the hot I/O calls are passed as raw {@code long} addresses: the caller has already
 * bounds-checked them against a guest region or its own segment, and this avoids a segment object per call.
 * Thread-safe.
 */
public final class LibC {
    public static final int EINTR = 4;
    public static final int EAGAIN = 11;
    public static final int EPIPE = 32;
    public static final int ECONNRESET = 104;
    public static final int EOPNOTSUPP = 95;

    public static final int AF_UNIX = 1;
    public static final int SOCK_STREAM = 1;
    public static final int SOCK_CLOEXEC = 0x80000;
    public static final int SOL_SOCKET = 1;
    public static final int SCM_RIGHTS = 1;
    /** {@code getsockopt} option: the peer's {@code struct ucred} (pid, uid, gid; 3 x 4 bytes) as of connect(2). */
    public static final int SO_PEERCRED = 17;
    public static final int MSG_CTRUNC = 0x8;
    public static final int MSG_NOSIGNAL = 0x4000;
    public static final int MSG_CMSG_CLOEXEC = 0x40000000;

    public static final int PROT_READ = 1;
    public static final int PROT_WRITE = 2;
    public static final int MAP_SHARED = 1;
    public static final long MAP_FAILED = -1L;

    public static final int EFD_NONBLOCK = 0x800;
    public static final int EFD_CLOEXEC = 0x80000;
    public static final int MFD_CLOEXEC = 1;
    /** memfd_create: the memfd accepts seals (without it, its seal set starts as {@link #F_SEAL_SEAL}). */
    public static final int MFD_ALLOW_SEALING = 2;

    /** fcntl commands: file status flags, and memfd/shmem seals ({@code F_LINUX_SPECIFIC_BASE} 1024 + 9 and + 10). */
    public static final int F_GETFL = 3;
    public static final int F_SETFL = 4;
    public static final int F_ADD_SEALS = 1033;
    public static final int F_GET_SEALS = 1034;
    public static final int O_NONBLOCK = 0x800;
    public static final int F_SEAL_SEAL = 1;
    public static final int F_SEAL_SHRINK = 2;
    public static final int F_SEAL_GROW = 4;

    public static final short POLLIN = 1;

    public static final int FALLOC_FL_KEEP_SIZE = 1;
    public static final int FALLOC_FL_PUNCH_HOLE = 2;
    public static final int FALLOC_FL_ZERO_RANGE = 0x10;

    private static final MethodHandle SOCKET = fn("socket", JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT);
    private static final MethodHandle SOCKETPAIR = fn("socketpair", JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS);
    private static final MethodHandle BIND = fn("bind", JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT);
    private static final MethodHandle LISTEN = fn("listen", JAVA_INT, JAVA_INT, JAVA_INT);
    private static final MethodHandle ACCEPT4 = fn("accept4", JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, JAVA_INT);
    private static final MethodHandle CONNECT = fn("connect", JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT);
    private static final MethodHandle GETSOCKOPT = fn("getsockopt", JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, ADDRESS);
    private static final MethodHandle SHUTDOWN = fn("shutdown", JAVA_INT, JAVA_INT, JAVA_INT);
    private static final MethodHandle CLOSE = fn("close", JAVA_INT, JAVA_INT);
    private static final MethodHandle READ = plain("read", JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_LONG);
    private static final MethodHandle PREAD = plain("pread", JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG);
    private static final MethodHandle WRITE = plain("write", JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_LONG);
    private static final MethodHandle SENDMSG = fn("sendmsg", JAVA_LONG, JAVA_INT, ADDRESS, JAVA_INT);
    private static final MethodHandle RECVMSG = fn("recvmsg", JAVA_LONG, JAVA_INT, ADDRESS, JAVA_INT);
    private static final MethodHandle MMAP = fn("mmap", JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_LONG);
    private static final MethodHandle MUNMAP = fn("munmap", JAVA_INT, JAVA_LONG, JAVA_LONG);
    private static final MethodHandle EVENTFD = fn("eventfd", JAVA_INT, JAVA_INT, JAVA_INT);
    private static final MethodHandle OPEN = Downcalls.open();
    // fcntl is variadic: the handle with a third argument says so, or the call would not follow the varargs ABI.
    private static final MethodHandle FCNTL = fn("fcntl", JAVA_INT, JAVA_INT, JAVA_INT);
    private static final MethodHandle FCNTL_ARG = Downcalls.variadic("fcntl", 2, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT);
    private static final MethodHandle MEMFD_CREATE = fn("memfd_create", JAVA_INT, ADDRESS, JAVA_INT);
    private static final MethodHandle FTRUNCATE = fn("ftruncate", JAVA_INT, JAVA_INT, JAVA_LONG);
    private static final MethodHandle POLL = plain("poll", JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT);
    private static final MethodHandle LSEEK = fn("lseek", JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_INT);

    private LibC() {
    }

    public static String strerror(final int errno) {
        return Downcalls.strerror(errno);
    }

    private static int check(final String call, final int rc, final MemorySegment st) throws NativeException {
        if (rc < 0) {
            throw new NativeException(call, errno(st));
        }
        return rc;
    }

    private static long check(final String call, final long rc, final MemorySegment st) throws NativeException {
        if (rc < 0) {
            throw new NativeException(call, errno(st));
        }
        return rc;
    }

    public static int socketUnix() throws NativeException {
        final MemorySegment st = state();
        try {
            return check("socket(AF_UNIX, SOCK_STREAM)", (int) SOCKET.invokeExact(st, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), st);
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * A connected pair of {@code AF_UNIX} stream sockets ({@code socketpair(2)}, close-on-exec): a front end and a back
     * end in one process, as a test drives a protocol over a real socket without a path in the file system.
     *
     * @return the two fds; the caller owns both
     */
    public static int[] socketPairUnix() throws NativeException {
        final MemorySegment st = state();
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment sv = a.allocate(JAVA_INT, 2);
            check("socketpair(AF_UNIX, SOCK_STREAM)", (int) SOCKETPAIR.invokeExact(st, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), st);
            return new int[] {sv.getAtIndex(JAVA_INT, 0), sv.getAtIndex(JAVA_INT, 1)};
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** Fills a {@code struct sockaddr_un} for {@code path}; rejects paths longer than 107 bytes. */
    public static MemorySegment sockaddrUn(final Arena arena, final String path) {
        final byte[] bytes = path.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        if (bytes.length > 107) {
            throw new IllegalArgumentException("socket path longer than 107 bytes: " + path);
        }
        final MemorySegment addr = arena.allocate(110);
        addr.set(ValueLayout.JAVA_SHORT, 0, (short) AF_UNIX);
        MemorySegment.copy(bytes, 0, addr, ValueLayout.JAVA_BYTE, 2, bytes.length);
        return addr;
    }

    public static void bind(final int fd, final String path) throws NativeException {
        final MemorySegment st = state();
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment addr = sockaddrUn(a, path);
            check("bind(" + path + ")", (int) BIND.invokeExact(st, fd, addr, (int) addr.byteSize()), st);
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    public static void listen(final int fd, final int backlog) throws NativeException {
        final MemorySegment st = state();
        try {
            check("listen", (int) LISTEN.invokeExact(st, fd, backlog), st);
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    public static int accept(final int fd) throws NativeException {
        final MemorySegment st = state();
        try {
            return check("accept4", (int) ACCEPT4.invokeExact(st, fd, MemorySegment.NULL, MemorySegment.NULL, SOCK_CLOEXEC), st);
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    public static void connect(final int fd, final String path) throws NativeException {
        final MemorySegment st = state();
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment addr = sockaddrUn(a, path);
            check("connect(" + path + ")", (int) CONNECT.invokeExact(st, fd, addr, (int) addr.byteSize()), st);
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** The uid of the process at the other end of the UNIX socket {@code fd}, as the kernel recorded it at connect. */
    public static int peerUid(final int fd) throws NativeException {
        final MemorySegment st = state();
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment ucred = a.allocate(12, 4); // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
            final MemorySegment len = a.allocate(JAVA_INT);
            len.set(JAVA_INT, 0, 12);
            check("getsockopt(SO_PEERCRED)", (int) GETSOCKOPT.invokeExact(st, fd, SOL_SOCKET, SO_PEERCRED, ucred, len), st);
            return ucred.get(JAVA_INT, 4);
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code shutdown(fd, SHUT_RDWR)}: wakes a thread blocked reading the socket. Errors are ignored. */
    public static void shutdown(final int fd) {
        try {
            final int ignored = (int) SHUTDOWN.invokeExact(state(), fd, 2);
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * {@code shutdown(fd, SHUT_RD)}: wakes a thread blocked reading the socket (it reads end of stream) while the peer
     * sees nothing until it writes or this end closes. Errors are ignored.
     */
    public static void shutdownRead(final int fd) {
        try {
            final int ignored = (int) SHUTDOWN.invokeExact(state(), fd, 0);
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code shutdown(fd, SHUT_WR)}: the peer reads end of stream after what was sent; this end can still read. Errors are ignored. */
    public static void shutdownWrite(final int fd) {
        try {
            final int ignored = (int) SHUTDOWN.invokeExact(state(), fd, 1);
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** Closes {@code fd} if it is not negative; errors are ignored (there is nothing to do about them). */
    public static void close(final int fd) {
        if (fd < 0) {
            return;
        }
        try {
            final int ignored = (int) CLOSE.invokeExact(state(), fd);
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** The size of the file behind {@code fd} ({@code lseek(fd, 0, SEEK_END)}). */
    public static long fileSize(final int fd) throws NativeException {
        final MemorySegment st = state();
        try {
            return check("lseek(fd " + fd + ", 0, SEEK_END)", (long) LSEEK.invokeExact(st, fd, 0L, 2), st);
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** What {@code fd} is, as {@code /proc/self/fd} names it (e.g. {@code anon_inode:[eventfd]}), or "" if unknown. */
    public static String describeFd(final int fd) {
        try {
            return java.nio.file.Files.readSymbolicLink(java.nio.file.Path.of("/proc/self/fd/" + fd)).toString();
        } catch (final java.io.IOException | UnsupportedOperationException e) {
            return "";
        }
    }

    /** {@code read(2)}; returns bytes read or {@code -errno}. */
    public static long rawRead(final int fd, final long address, final long length) {
        try {
            final long rc = (long) READ.invokeExact(fd, address, length);
            return rc < 0 ? -lastErrno() : rc;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code pread(2)}; returns bytes read (0 at the end of the file) or {@code -errno}. */
    public static long rawPread(final int fd, final long address, final long length, final long offset) {
        try {
            final long rc = (long) PREAD.invokeExact(fd, address, length, offset);
            return rc < 0 ? -lastErrno() : rc;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code write(2)}; returns bytes written or {@code -errno}. */
    public static long rawWrite(final int fd, final long address, final long length) {
        try {
            final long rc = (long) WRITE.invokeExact(fd, address, length);
            return rc < 0 ? -lastErrno() : rc;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code sendmsg(2)}; returns bytes sent or {@code -errno}. */
    public static long rawSendmsg(final int fd, final MemorySegment msghdr, final int flags) {
        final MemorySegment st = state();
        try {
            final long rc = (long) SENDMSG.invokeExact(st, fd, msghdr, flags);
            return rc < 0 ? -errno(st) : rc;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code recvmsg(2)}; returns bytes received or {@code -errno}. */
    public static long rawRecvmsg(final int fd, final MemorySegment msghdr, final int flags) {
        final MemorySegment st = state();
        try {
            final long rc = (long) RECVMSG.invokeExact(st, fd, msghdr, flags);
            return rc < 0 ? -errno(st) : rc;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code mmap(NULL, length, PROT_READ|PROT_WRITE, MAP_SHARED, fd, offset)}; returns the address. */
    public static long mmapShared(final int fd, final long length, final long offset) throws NativeException {
        final MemorySegment st = state();
        try {
            final long addr = (long) MMAP.invokeExact(st, 0L, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
            if (addr == MAP_FAILED) {
                throw new NativeException("mmap(fd " + fd + ", length " + length + ", offset " + offset + ")", errno(st));
            }
            return addr;
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code open(path, O_RDONLY | O_CLOEXEC)}; returns the fd. */
    public static int openReadOnly(final String path) throws NativeException {
        final MemorySegment st = state();
        try (Arena a = Arena.ofConfined()) {
            return check("open(" + path + ", O_RDONLY)", (int) OPEN.invokeExact(st, a.allocateFrom(path), 0x80000, 0), st);
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    public static void munmap(final long address, final long length) {
        try {
            final int ignored = (int) MUNMAP.invokeExact(state(), address, length);
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    public static int eventfd(final int flags) throws NativeException {
        final MemorySegment st = state();
        try {
            return check("eventfd", (int) EVENTFD.invokeExact(st, 0, flags | EFD_CLOEXEC), st);
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    public static int memfdCreate(final String name) throws NativeException {
        return memfdCreate(name, 0);
    }

    /** {@code memfd_create(name, MFD_CLOEXEC | flags)}, e.g. {@link #MFD_ALLOW_SEALING}. */
    public static int memfdCreate(final String name, final int flags) throws NativeException {
        final MemorySegment st = state();
        try (Arena a = Arena.ofConfined()) {
            return check("memfd_create(" + name + ")", (int) MEMFD_CREATE.invokeExact(st, a.allocateFrom(name), MFD_CLOEXEC | flags), st);
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    public static void ftruncate(final int fd, final long length) throws NativeException {
        final MemorySegment st = state();
        try {
            check("ftruncate(" + length + ")", (int) FTRUNCATE.invokeExact(st, fd, length), st);
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code fcntl(fd, F_GETFL)}: the file status flags of the open file description behind {@code fd}. */
    public static int fileStatusFlags(final int fd) throws NativeException {
        final MemorySegment st = state();
        try {
            return check("fcntl(fd " + fd + ", F_GETFL)", (int) FCNTL.invokeExact(st, fd, F_GETFL), st);
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * Sets {@link #O_NONBLOCK} on the open file description behind {@code fd} ({@code fcntl F_GETFL}, then
     * {@code F_SETFL}). The flag belongs to the description, so every process holding a duplicate of it sees it.
     */
    public static void setNonBlocking(final int fd) throws NativeException {
        final int flags = fileStatusFlags(fd);
        if ((flags & O_NONBLOCK) != 0) {
            return;
        }
        final MemorySegment st = state();
        try {
            check("fcntl(fd " + fd + ", F_SETFL, O_NONBLOCK)", (int) FCNTL_ARG.invokeExact(st, fd, F_SETFL, flags | O_NONBLOCK), st);
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code fcntl(fd, F_GET_SEALS)}: the seals of a memfd (or other shmem/hugetlbfs file); fails with EINVAL on other files. */
    public static int seals(final int fd) throws NativeException {
        final MemorySegment st = state();
        try {
            return check("fcntl(fd " + fd + ", F_GET_SEALS)", (int) FCNTL.invokeExact(st, fd, F_GET_SEALS), st);
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code fcntl(fd, F_ADD_SEALS, seals)} on a memfd created with {@link #MFD_ALLOW_SEALING}. */
    public static void addSeals(final int fd, final int seals) throws NativeException {
        final MemorySegment st = state();
        try {
            check("fcntl(fd " + fd + ", F_ADD_SEALS, 0x" + Integer.toHexString(seals) + ")",
                (int) FCNTL_ARG.invokeExact(st, fd, F_ADD_SEALS, seals), st);
        } catch (final NativeException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code poll(2)} over a native {@code struct pollfd} array; returns ready count, 0 on timeout, or {@code -errno}. */
    public static int rawPoll(final MemorySegment fds, final int nfds, final int timeoutMillis) {
        try {
            final int rc = (int) POLL.invokeExact(fds, (long) nfds, timeoutMillis);
            return rc < 0 ? -lastErrno() : rc;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }
}
