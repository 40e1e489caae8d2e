package io.lazyblk.persistence;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * A disk for tests that can lose power, fail and tear writes, put under {@link LocalImage} and {@link PageStateFile}
 * through {@link FileIo.Opener}. Modelled on SQLite's crash-test VFS and RocksDB's FaultInjectionTestFS:
 *
 * <ul>
 *   <li>Each file has what a process sees (its page cache) and what is on the platter. A write changes the first at
 *       once and joins the file's unsynced writes; a successful {@code fdatasync} puts every unsynced write on the
 *       platter.</li>
 *   <li>{@link #powerCut()} keeps the platter plus, for each unsynced write independently, all of it, none of it, or a
 *       random subset of its 512-byte sectors (writeback order is the kernel's, and a sector is the atomic unit). Every
 *       handle open before the cut fails from then on ({@code -EIO}); {@link #open} afterwards sees the platter.</li>
 *   <li>Faults on a plan: the Nth write or sync (counted over every file, from {@link #failWrite}/{@link #failSync})
 *       fails with the given errno. A failed sync behaves as Linux does: each unsynced write reached the platter or was
 *       dropped (decided then, at random), and the next sync has nothing to write for them and succeeds (fsyncgate).
 *       Writes may be made short ({@link #shortWrites}), and a cut can be planned after the Nth operation
 *       ({@link #cutAfter}) so it lands at an arbitrary point of whatever the engine is doing.</li>
 * </ul>
 * Thread-safe (one monitor); deterministic for one seed and one interleaving.
 */
public final class SimulatedDisk implements FileIo.Opener {
    public static final int EIO = 5;
    public static final int ENOSPC = 28;
    private static final int SECTOR = 512;
    private static final MemorySegment ALL = MemorySegment.NULL.reinterpret(Long.MAX_VALUE);

    private final Random random;
    private final Map<Path, FileState> files = new HashMap<>();
    /** Handles opened since the last cut carry this generation; older ones are dead. */
    private int generation;
    private long writes;
    private long syncs;
    private long operations;
    private long failWriteAt = -1;
    private int failWriteErrno;
    private long failSyncAt = -1;
    private int failSyncErrno;
    private long cutAt = -1;
    private boolean shortWrites;
    private boolean noFallocate;
    private int cuts;
    /** Faults and hooks limited to one file, or null for any. */
    private Path faultPath;
    private Path hookPath;
    private Runnable duringSync;

    public SimulatedDisk(final long seed) {
        this.random = new Random(seed);
    }

    /** The {@code n}th write from now (1 = the next) fails with {@code errno}. */
    public synchronized void failWrite(final long n, final int errno) {
        failWrite(null, n, errno);
    }

    /** The {@code n}th write to {@code path} (any file if null) from now fails with {@code errno}. */
    public synchronized void failWrite(final Path path, final long n, final int errno) {
        faultPath = path;
        failWriteAt = writes + n;
        failWriteErrno = errno;
    }

    /** The {@code n}th sync from now (1 = the next) fails with {@code errno}. */
    public synchronized void failSync(final long n, final int errno) {
        failSync(null, n, errno);
    }

    /** The {@code n}th sync of {@code path} (any file if null) from now fails with {@code errno}. */
    public synchronized void failSync(final Path path, final long n, final int errno) {
        faultPath = path;
        failSyncAt = syncs + n;
        failSyncErrno = errno;
    }

    /**
     * The next sync of {@code path} runs {@code hook} after it has taken the writes it covers and before it reports
     * success, without holding the disk: what the hook writes lands while the sync is in flight, and is not covered.
     */
    public synchronized void duringNextSync(final Path path, final Runnable hook) {
        hookPath = path;
        duringSync = hook;
    }

    /** From now on {@code fallocate} is refused (EOPNOTSUPP), as on file systems without it. */
    public synchronized void noFallocate(final boolean on) {
        noFallocate = on;
    }

    /** Loses power now, and with it every unsynced write (no chance involved): the harshest cut. */
    public synchronized void powerCutLosingUnsynced() {
        for (final FileState f : files.values()) {
            f.unsynced.clear();
            f.cache = f.platter.clone();
        }
        generation++;
        cuts++;
        cutAt = -1;
    }

    /** A new disk holding what is on this one's platter (what a cut that loses every unsynced write would leave). */
    public synchronized SimulatedDisk platterCopy() {
        final SimulatedDisk d = new SimulatedDisk(random.nextLong());
        for (final Map.Entry<Path, FileState> e : files.entrySet()) {
            d.put(e.getKey(), e.getValue().platter);
        }
        return d;
    }

    /** The power goes out right after the {@code n}th operation (write, sync, truncate) from now. */
    public synchronized void cutAfter(final long n) {
        cutAt = operations + n;
    }

    /** Whether a planned cut has happened. */
    public synchronized boolean cutHappened() {
        return cutAt < 0 && cuts > 0;
    }

    /** From now on writes transfer a random part of what they were asked (at least one byte), as the kernel may. */
    public synchronized void shortWrites(final boolean on) {
        shortWrites = on;
    }

    public synchronized int cuts() {
        return cuts;
    }

    /** Loses power now: see the class comment. */
    public synchronized void powerCut() {
        for (final FileState f : files.values()) {
            byte[] platter = f.platter;
            for (final Op op : f.unsynced) {
                final int choice = random.nextInt(3);
                if (choice == 0) {
                    continue; // lost
                }
                platter = choice == 1 ? op.apply(platter) : op.applySomeSectors(platter, random);
            }
            f.platter = platter;
            f.unsynced.clear();
            f.cache = platter.clone();
        }
        generation++;
        cuts++;
        cutAt = -1;
    }

    /** What a process sees in {@code path} now (null if there is no such file). */
    public synchronized byte[] contents(final Path path) {
        final FileState f = files.get(path);
        return f == null ? null : f.cache.clone();
    }

    /** Creates (or replaces) {@code path} with {@code bytes}, already on the platter. */
    public synchronized void put(final Path path, final byte[] bytes) {
        final FileState f = new FileState(path);
        f.platter = bytes.clone();
        f.cache = bytes.clone();
        files.put(path, f);
    }

    public synchronized boolean exists(final Path path) {
        return files.containsKey(path);
    }

    @Override
    public synchronized FileIo open(final Path path, final boolean readOnly, final boolean create) throws IOException {
        FileState f = files.get(path);
        if (f == null) {
            if (!create) {
                throw new NoSuchFileException(path.toString());
            }
            f = new FileState(path);
            files.put(path, f);
        }
        return new Handle(f, generation, readOnly);
    }

    /** Counts an operation; true if the power is already out for this handle (or goes out with this operation's end). */
    private boolean dead(final Handle h) {
        return h.generation != generation;
    }

    private void afterOperation() {
        operations++;
        if (cutAt >= 0 && operations >= cutAt) {
            powerCut();
        }
    }

    private static final class FileState {
        final Path path;
        byte[] cache = new byte[0];
        byte[] platter = new byte[0];
        final List<Op> unsynced = new ArrayList<>();

        FileState(final Path path) {
            this.path = path;
        }
    }

    /** An unsynced change: bytes at an offset, or a new length. */
    private record Op(long offset, byte[] data, long newLength) {
        static Op write(final long offset, final byte[] data) {
            return new Op(offset, data, -1);
        }

        static Op truncate(final long length) {
            return new Op(0, null, length);
        }

        byte[] apply(final byte[] to) {
            if (data == null) {
                return Arrays.copyOf(to, (int) newLength);
            }
            final byte[] out = to.length >= offset + data.length ? to.clone() : Arrays.copyOf(to, (int) (offset + data.length));
            System.arraycopy(data, 0, out, (int) offset, data.length);
            return out;
        }

        /** A torn write: a random subset of the sectors it touches (a truncate is all or nothing). */
        byte[] applySomeSectors(final byte[] to, final Random random) {
            if (data == null) {
                return random.nextBoolean() ? apply(to) : to;
            }
            final byte[] out = to.length >= offset + data.length ? to.clone() : Arrays.copyOf(to, (int) (offset + data.length));
            long at = offset;
            while (at < offset + data.length) {
                final long sectorEnd = Math.min(offset + data.length, (at / SECTOR + 1) * SECTOR);
                if (random.nextBoolean()) {
                    System.arraycopy(data, (int) (at - offset), out, (int) at, (int) (sectorEnd - at));
                }
                at = sectorEnd;
            }
            return out;
        }
    }

    private final class Handle implements FileIo {
        private final FileState f;
        private final int generation;
        private final boolean readOnly;

        Handle(final FileState f, final int generation, final boolean readOnly) {
            this.f = f;
            this.generation = generation;
            this.readOnly = readOnly;
        }

        @Override
        public long size() throws IOException {
            synchronized (SimulatedDisk.this) {
                if (dead(this)) {
                    throw new IOException("simulated disk: the power went out");
                }
                return f.cache.length;
            }
        }

        @Override
        public long preadv(final long iov, final int cnt, final long offset) {
            synchronized (SimulatedDisk.this) {
                if (dead(this)) {
                    return -EIO;
                }
                long at = offset;
                long total = 0;
                for (int i = 0; i < cnt; i++) {
                    final long base = ALL.get(JAVA_LONG, iov + 16L * i);
                    final long len = ALL.get(JAVA_LONG, iov + 16L * i + 8);
                    final long n = Math.max(0, Math.min(len, f.cache.length - at));
                    if (n > 0) {
                        MemorySegment.copy(f.cache, (int) at, ALL, JAVA_BYTE, base, (int) n);
                    }
                    at += n;
                    total += n;
                    if (n < len) {
                        break;
                    }
                }
                return total;
            }
        }

        @Override
        public long pwritev(final long iov, final int cnt, final long offset) {
            synchronized (SimulatedDisk.this) {
                if (dead(this) || readOnly) {
                    return readOnly ? -9 : -EIO; // EBADF for a read-only fd, as the kernel says
                }
                if (faultPath == null || faultPath.equals(f.path)) {
                    writes++;
                }
                if (writes == failWriteAt && (faultPath == null || faultPath.equals(f.path))) {
                    failWriteAt = -1;
                    afterOperation();
                    return -failWriteErrno;
                }
                long total = 0;
                for (int i = 0; i < cnt; i++) {
                    total += ALL.get(JAVA_LONG, iov + 16L * i + 8);
                }
                long take = total;
                if (shortWrites && total > 1 && random.nextBoolean()) {
                    take = 1 + random.nextInt((int) Math.min(Integer.MAX_VALUE, total - 1));
                }
                final byte[] data = new byte[(int) take];
                int at = 0;
                for (int i = 0; i < cnt && at < take; i++) {
                    final long base = ALL.get(JAVA_LONG, iov + 16L * i);
                    final long len = Math.min(ALL.get(JAVA_LONG, iov + 16L * i + 8), take - at);
                    MemorySegment.copy(ALL, JAVA_BYTE, base, data, at, (int) len);
                    at += (int) len;
                }
                final Op op = Op.write(offset, data);
                f.cache = op.apply(f.cache);
                f.unsynced.add(op);
                afterOperation();
                return take;
            }
        }

        @Override
        public int fdatasync() {
            final Runnable hook;
            final List<Op> covered;
            synchronized (SimulatedDisk.this) {
                if (dead(this) || duringSync == null || !f.path.equals(hookPath)) {
                    hook = null;
                    covered = null;
                } else {
                    hook = duringSync;
                    duringSync = null;
                    covered = new ArrayList<>(f.unsynced);
                }
            }
            if (hook != null) {
                hook.run();
                synchronized (SimulatedDisk.this) {
                    if (dead(this)) {
                        return -EIO;
                    }
                    for (final Op op : covered) {
                        f.platter = op.apply(f.platter);
                    }
                    for (final Op op : covered) {
                        f.unsynced.removeIf(o -> o == op); // by identity: only what this sync covered
                    }
                    afterOperation();
                    return 0;
                }
            }
            synchronized (SimulatedDisk.this) {
                if (dead(this)) {
                    return -EIO;
                }
                if (faultPath == null || faultPath.equals(f.path)) {
                    syncs++;
                }
                if (syncs == failSyncAt && (faultPath == null || faultPath.equals(f.path))) {
                    failSyncAt = -1;
                    // Linux after a writeback error: some pages made it, the rest are dropped, and none are dirty any more.
                    for (final Op op : f.unsynced) {
                        if (random.nextBoolean()) {
                            f.platter = op.apply(f.platter);
                        }
                    }
                    f.unsynced.clear();
                    afterOperation();
                    return -failSyncErrno;
                }
                for (final Op op : f.unsynced) {
                    f.platter = op.apply(f.platter);
                }
                f.unsynced.clear();
                afterOperation();
                return 0;
            }
        }

        @Override
        public int truncate(final long length) {
            synchronized (SimulatedDisk.this) {
                if (dead(this)) {
                    return -EIO;
                }
                final Op op = Op.truncate(length);
                f.cache = op.apply(f.cache);
                f.unsynced.add(op);
                afterOperation();
                return 0;
            }
        }

        @Override
        public int fallocate(final int mode, final long offset, final long length) {
            synchronized (SimulatedDisk.this) {
                if (dead(this)) {
                    return -EIO;
                }
                if (noFallocate) {
                    return -95; // EOPNOTSUPP
                }
                if ((mode & 0x12) != 0) { // PUNCH_HOLE or ZERO_RANGE: the range reads as zeros
                    final Op op = Op.write(offset, new byte[(int) Math.min(length, Math.max(0, f.cache.length - offset))]);
                    f.cache = op.apply(f.cache);
                    f.unsynced.add(op);
                    afterOperation();
                    return 0;
                }
                if (offset + length > f.cache.length) {
                    final Op op = Op.truncate(offset + length);
                    f.cache = op.apply(f.cache);
                    f.unsynced.add(op);
                }
                afterOperation();
                return 0;
            }
        }

        @Override
        public int fadviseDontNeed(final long offset, final long length) {
            return 0;
        }

        @Override
        public long residentPages(final long size) {
            return -1;
        }

        @Override
        public void close() {
        }
    }
}
