package io.lazyblk.sys;

import java.io.IOException;
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
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The file system calls of the local image, one handle each, errno captured per thread (no allocation per call).
 * I/O calls take a raw {@code struct iovec} address: the caller has bounds-checked every buffer it names.
 * Thread-safe.
 */
public final class FileCalls {
    public static final int O_RDONLY = 0;
    public static final int O_RDWR = 2;
    public static final int O_CREAT = 0x40;
    public static final int O_CLOEXEC = 0x80000;
    public static final int SEEK_END = 2;
    /** lseek: the next offset at or after the given one that holds data (Linux 3.1+; a file system without holes says: itself). */
    public static final int SEEK_DATA = 3;
    /** lseek: the next offset at or after the given one that starts a hole (the end of the file counts as one). */
    public static final int SEEK_HOLE = 4;
    /** lseek(SEEK_DATA/SEEK_HOLE): the offset is at or past the end of the file (for SEEK_DATA: no data after it). */
    public static final int ENXIO = 6;
    public static final int EINTR = 4;
    public static final int EOPNOTSUPP = 95;
    public static final int FALLOC_FL_KEEP_SIZE = 1;
    public static final int FALLOC_FL_PUNCH_HOLE = 2;
    public static final int FALLOC_FL_ZERO_RANGE = 0x10;
    public static final int POSIX_FADV_DONTNEED = 4;
    public static final int PROT_READ = 1;
    public static final int MAP_SHARED = 1;

    private static final MethodHandle OPEN = Downcalls.open();
    private static final MethodHandle CLOSE = fn("close", JAVA_INT, JAVA_INT);
    private static final MethodHandle LSEEK = fn("lseek", JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_INT);
    // Data-path calls do not capture errno (the JDK may allocate a capture segment per call); on failure they
    // read errno through __errno_location() at once, before this thread makes another native call.
    private static final MethodHandle PREADV = plain("preadv", JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_LONG);
    private static final MethodHandle PWRITEV = plain("pwritev", JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_LONG);
    private static final MethodHandle FDATASYNC = plain("fdatasync", JAVA_INT, JAVA_INT);
    private static final MethodHandle SYNC_FILE_RANGE = plain("sync_file_range", JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_INT);
    /** sync_file_range(2): start writeback of dirty pages in the range; wait for none. */
    private static final int SYNC_FILE_RANGE_WRITE = 2;
    private static final MethodHandle FTRUNCATE = plain("ftruncate", JAVA_INT, JAVA_INT, JAVA_LONG);
    private static final MethodHandle FALLOCATE = plain("fallocate", JAVA_INT, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG);
    // posix_fadvise returns the error number itself (it does not set errno).
    private static final MethodHandle FADVISE = plain("posix_fadvise", JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_INT);
    private static final MethodHandle MMAP = plain("mmap", JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_LONG);
    private static final MethodHandle MINCORE = plain("mincore", JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG);
    private static final MethodHandle MUNMAP = plain("munmap", JAVA_INT, JAVA_LONG, JAVA_LONG);
    private static final MethodHandle FSTAT = fn("fstat", JAVA_INT, JAVA_INT, JAVA_LONG);
    // fcntl is variadic: the third argument (a struct flock pointer) must be passed the varargs way.
    private static final MethodHandle FCNTL_PTR = Downcalls.variadic("fcntl", 2, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_LONG);
    private static final MethodHandle FSETXATTR = fn("fsetxattr", JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_INT);
    private static final MethodHandle FGETXATTR = fn("fgetxattr", JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG);
    private static final MethodHandle FREMOVEXATTR = fn("fremovexattr", JAVA_INT, JAVA_INT, JAVA_LONG);
    /** Open file description locks (Linux 3.15+): owned by the open file, not the process, and released when it closes. */
    private static final int F_OFD_GETLK = 36;
    private static final int F_OFD_SETLK = 37;
    public static final short F_RDLCK = 0;
    public static final short F_WRLCK = 1;
    public static final short F_UNLCK = 2;
    /** x86-64 {@code struct flock}: l_type s16 at 0, l_whence s16 at 2, l_start at 8, l_len at 16, l_pid s32 at 24; 32 bytes. */
    private static final int FLOCK_BYTES = 32;
    public static final int EAGAIN = 11;
    public static final int EACCES = 13;
    public static final int ENODATA = 61;
    /** x86-64 {@code struct stat}: 144 bytes, {@code st_blocks} (512-byte units, whatever the file system's block) at 64. */
    private static final int STAT_BYTES = 144;
    private static final int ST_BLOCKS = 64;

    private FileCalls() {
    }

    public static String strerror(final int errno) {
        return Downcalls.strerror(errno);
    }

    /** An IOException naming {@code call} and {@code strerror(errno)}. */
    public static IOException failure(final String call, final int errno) {
        return new IOException(call + " failed: " + strerror(errno) + " (errno " + errno + ")");
    }

    public static int open(final String path, final int flags, final int mode) throws IOException {
        final MemorySegment st = state();
        try (Arena a = Arena.ofConfined()) {
            final int fd = (int) OPEN.invokeExact(st, a.allocateFrom(path), flags | O_CLOEXEC, mode);
            if (fd < 0) {
                throw failure("open(" + path + ")", errno(st));
            }
            return fd;
        } catch (final IOException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    public static void close(final int fd) {
        try {
            final int ignored = (int) CLOSE.invokeExact(state(), fd);
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    public static long size(final int fd) throws IOException {
        final MemorySegment st = state();
        try {
            final long n = (long) LSEEK.invokeExact(st, fd, 0L, SEEK_END);
            if (n < 0) {
                throw failure("lseek(SEEK_END)", errno(st));
            }
            return n;
        } catch (final IOException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * {@code lseek(fd, offset, SEEK_DATA)}: the first offset at or after {@code offset} that holds data, or -1 if there
     * is none before the end of the file (ENXIO). A file system that does not track holes reports the whole file as
     * data. Not for the data path (errno captured).
     *
     * @throws IOException naming the call and strerror for any other failure
     */
    public static long seekData(final int fd, final long offset) throws IOException {
        return seek(fd, offset, SEEK_DATA, "SEEK_DATA");
    }

    /**
     * {@code lseek(fd, offset, SEEK_HOLE)}: the first offset at or after {@code offset} that starts a hole (the file's
     * end counts as one), or -1 if {@code offset} is at or past the end (ENXIO).
     */
    public static long seekHole(final int fd, final long offset) throws IOException {
        return seek(fd, offset, SEEK_HOLE, "SEEK_HOLE");
    }

    private static long seek(final int fd, final long offset, final int whence, final String name) throws IOException {
        final MemorySegment st = state();
        try {
            final long n = (long) LSEEK.invokeExact(st, fd, offset, whence);
            if (n < 0) {
                final int e = errno(st);
                if (e == ENXIO) {
                    return -1;
                }
                throw failure("lseek(" + offset + ", " + name + ")", e);
            }
            return n;
        } catch (final IOException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** Returns bytes transferred or {@code -errno}. */
    public static long preadv(final int fd, final long iov, final int cnt, final long off) {
        try {
            final long n = (long) PREADV.invokeExact(fd, iov, cnt, off);
            return n < 0 ? -lastErrno() : n;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** Returns bytes transferred or {@code -errno}. */
    public static long pwritev(final int fd, final long iov, final int cnt, final long off) {
        try {
            final long n = (long) PWRITEV.invokeExact(fd, iov, cnt, off);
            return n < 0 ? -lastErrno() : n;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** Returns 0 or {@code -errno}. */
    public static int fdatasync(final int fd) {
        try {
            final int rc = (int) FDATASYNC.invokeExact(fd);
            return rc < 0 ? -lastErrno() : 0;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * Starts writing back the dirty pages of {@code [off, off + len)} and returns without waiting
     * ({@code sync_file_range(SYNC_FILE_RANGE_WRITE)}): a later {@code fdatasync} then finds less to do. Durability is
     * not this call's business, and it consumes no error report: waiting is what checks (and advances) a file's
     * writeback error, and this does not wait, so the {@code fdatasync} after it still sees any failure.
     *
     * @return 0 or {@code -errno}
     */
    public static int startWriteback(final int fd, final long off, final long len) {
        try {
            final int rc = (int) SYNC_FILE_RANGE.invokeExact(fd, off, len, SYNC_FILE_RANGE_WRITE);
            return rc < 0 ? -lastErrno() : 0;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** Sets the file's length; 0 or {@code -errno}. */
    public static int ftruncate(final int fd, final long length) {
        try {
            final int rc = (int) FTRUNCATE.invokeExact(fd, length);
            return rc < 0 ? -lastErrno() : 0;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** Returns 0 or {@code -errno}. */
    public static int fallocate(final int fd, final int mode, final long off, final long len) {
        try {
            final int rc = (int) FALLOCATE.invokeExact(fd, mode, off, len);
            return rc < 0 ? -lastErrno() : 0;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** Tells the kernel a range's cached pages are not needed (clean ones are dropped at once); 0 or an error number. */
    public static int fadviseDontNeed(final int fd, final long off, final long len) {
        try {
            return (int) FADVISE.invokeExact(fd, off, len, POSIX_FADV_DONTNEED);
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * How many of the file's first {@code size} bytes' 4 KiB pages are in the page cache ({@code mincore} over a
     * read-only shared mapping that is never touched); -1 if the kernel refuses. Not for the data path.
     */
    public static long residentPages(final int fd, final long size) {
        if (size <= 0) {
            return 0;
        }
        try (Arena a = Arena.ofConfined()) {
            final long addr = (long) MMAP.invokeExact(0L, size, PROT_READ, MAP_SHARED, fd, 0L);
            if (addr == -1L) {
                return -1;
            }
            try {
                final long pages = (size + 4095) / 4096;
                final MemorySegment vec = a.allocate(pages);
                if ((int) MINCORE.invokeExact(addr, size, vec.address()) != 0) {
                    return -1;
                }
                long n = 0;
                for (long i = 0; i < pages; i++) {
                    n += vec.get(ValueLayout.JAVA_BYTE, i) & 1;
                }
                return n;
            } finally {
                final int ignored = (int) MUNMAP.invokeExact(addr, size);
            }
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * Bytes the file system allocated to the file ({@code st_blocks} x 512 from {@code fstat}): what a sparse file
     * really takes on disk (holes take nothing; blocks reserved with {@code fallocate} count). Not for the data path.
     */
    public static long allocatedBytes(final int fd) throws IOException {
        final MemorySegment st = state();
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment stat = a.allocate(STAT_BYTES, 8);
            if ((int) FSTAT.invokeExact(st, fd, stat.address()) != 0) {
                throw failure("fstat", errno(st));
            }
            return stat.get(JAVA_LONG, ST_BLOCKS) * 512;
        } catch (final IOException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * {@code fcntl(fd, F_OFD_SETLK)} over the whole file: takes ({@link #F_RDLCK}, {@link #F_WRLCK}) or drops
     * ({@link #F_UNLCK}) an open file description lock without waiting. Returns true if taken, false if another open
     * file (in this process or any other, on this host or, on NFS, another) holds a conflicting one.
     */
    public static boolean ofdLock(final int fd, final short type) throws IOException {
        final MemorySegment st = state();
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment fl = a.allocate(FLOCK_BYTES, 8); // zeroed: whence SEEK_SET, start 0, len 0 (to the end), pid 0
            fl.set(ValueLayout.JAVA_SHORT, 0, type);
            if ((int) FCNTL_PTR.invokeExact(st, fd, F_OFD_SETLK, fl.address()) == 0) {
                return true;
            }
            final int errno = errno(st);
            if (errno == EAGAIN || errno == EACCES) {
                return false;
            }
            throw failure("fcntl(F_OFD_SETLK)", errno);
        } catch (final IOException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** Whether an open file description lock of {@code type} on the whole file would be refused now ({@code F_OFD_GETLK}). */
    public static boolean ofdLockHeld(final int fd, final short type) throws IOException {
        final MemorySegment st = state();
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment fl = a.allocate(FLOCK_BYTES, 8);
            fl.set(ValueLayout.JAVA_SHORT, 0, type);
            if ((int) FCNTL_PTR.invokeExact(st, fd, F_OFD_GETLK, fl.address()) != 0) {
                throw failure("fcntl(F_OFD_GETLK)", errno(st));
            }
            return fl.get(ValueLayout.JAVA_SHORT, 0) != F_UNLCK;
        } catch (final IOException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code fsetxattr}: sets extended attribute {@code name} (e.g. {@code user.x}) of the open file to {@code value}. */
    public static void setXattr(final int fd, final String name, final byte[] value) throws IOException {
        final MemorySegment st = state();
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment v = a.allocate(Math.max(1, value.length));
            MemorySegment.copy(value, 0, v, ValueLayout.JAVA_BYTE, 0, value.length);
            if ((int) FSETXATTR.invokeExact(st, fd, a.allocateFrom(name).address(), v.address(), (long) value.length, 0) != 0) {
                throw failure("fsetxattr(" + name + ")", errno(st));
            }
        } catch (final IOException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code fgetxattr}: the value of extended attribute {@code name} (at most {@code max} bytes), or null if it has none. */
    public static byte[] getXattr(final int fd, final String name, final int max) throws IOException {
        final MemorySegment st = state();
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment v = a.allocate(max);
            final long n = (long) FGETXATTR.invokeExact(st, fd, a.allocateFrom(name).address(), v.address(), (long) max);
            if (n < 0) {
                final int errno = errno(st);
                if (errno == ENODATA) {
                    return null;
                }
                throw failure("fgetxattr(" + name + ")", errno);
            }
            return v.asSlice(0, n).toArray(ValueLayout.JAVA_BYTE);
        } catch (final IOException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code fremovexattr}; an attribute that is not there is no error. */
    public static void removeXattr(final int fd, final String name) throws IOException {
        final MemorySegment st = state();
        try (Arena a = Arena.ofConfined()) {
            if ((int) FREMOVEXATTR.invokeExact(st, fd, a.allocateFrom(name).address()) != 0) {
                final int errno = errno(st);
                if (errno != ENODATA) {
                    throw failure("fremovexattr(" + name + ")", errno);
                }
            }
        } catch (final IOException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }
}
