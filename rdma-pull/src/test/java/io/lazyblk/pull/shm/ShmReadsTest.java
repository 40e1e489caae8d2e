package io.lazyblk.pull.shm;

import io.lazyblk.sys.LibC;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Reads of a real file through its fd with pread(2): the bytes, a shrinking file, a heap buffer, close under readers. */
class ShmReadsTest {
    private static final int PAGE = 64 << 10;

    @TempDir
    Path dir;

    private Path image(final int pages) throws Exception {
        final byte[] content = new byte[pages * PAGE];
        new Random(3).nextBytes(content);
        final Path p = dir.resolve("img.raw");
        Files.write(p, content);
        return p;
    }

    @Test
    void shouldReadThePagesBytesAndFailPastTheEndOfAShrunkFile() throws Exception {
        final Path p = image(8);
        final byte[] content = Files.readAllBytes(p);
        final ShmReads reads = new ShmReads(LibC.openReadOnly(p.toString()), "test", 4);
        try (Arena a = Arena.ofShared()) {
            final MemorySegment dst = a.allocate(PAGE);
            assertTrue(reads.readNow(5L * PAGE, dst, PAGE));
            assertEquals(-1, MemorySegment.mismatch(dst, 0, PAGE, MemorySegment.ofArray(content), 5L * PAGE, 6L * PAGE));
            try (var ch = java.nio.channels.FileChannel.open(p, java.nio.file.StandardOpenOption.WRITE)) {
                ch.truncate(5L * PAGE + 100); // someone shrinks the cached image in the middle of page 5
            }
            assertFalse(reads.readNow(5L * PAGE, dst, PAGE), "a page the file no longer holds whole fails");
            assertFalse(reads.healthy(), "and the source turns unhealthy, so the engine uses its next source");
            assertFalse(reads.readNow(0, dst, PAGE), "an unhealthy source reads nothing more");
        } finally {
            reads.close();
        }
    }

    @Test
    void shouldFailAReadIntoTheJavaHeapRatherThanWriteToNoAddress() throws Exception {
        final ShmReads reads = new ShmReads(LibC.openReadOnly(image(2).toString()), "test", 4);
        try {
            final byte[] heap = new byte[PAGE];
            assertFalse(reads.readNow(0, MemorySegment.ofArray(heap), PAGE));
            assertTrue(reads.healthy(), "the caller's mistake does not take the source down");
        } finally {
            reads.close();
        }
    }

    /** close() waits for reads in progress before closing the fd, and every read after it fails; twice is harmless. */
    @Test
    void shouldCloseTheFdOnlyOnceNoReadUsesIt() throws Exception {
        final Path p = image(64);
        final byte[] content = Files.readAllBytes(p);
        final int fd = LibC.openReadOnly(p.toString());
        final ShmReads reads = new ShmReads(fd, "test", 4);
        final AtomicBoolean closed = new AtomicBoolean();
        final AtomicInteger afterClose = new AtomicInteger();
        final AtomicInteger good = new AtomicInteger();
        final AtomicReference<Throwable> failure = new AtomicReference<>();
        final List<Thread> readers = new ArrayList<>();
        for (int t = 0; t < 3; t++) {
            final int seed = t;
            readers.add(Thread.ofPlatform().start(() -> {
                try (Arena a = Arena.ofConfined()) {
                    final MemorySegment dst = a.allocate(PAGE);
                    final Random r = new Random(seed);
                    while (true) {
                        final boolean wasClosed = closed.get();
                        final int page = r.nextInt(64);
                        if (reads.readNow((long) page * PAGE, dst, PAGE)) {
                            if (wasClosed) {
                                throw new AssertionError("a read started after close() succeeded");
                            }
                            final long at = MemorySegment.mismatch(dst, 0, PAGE, MemorySegment.ofArray(content), (long) page * PAGE,
                                (long) (page + 1) * PAGE);
                            if (at != -1) {
                                throw new AssertionError("page " + page + ": wrong byte at " + at);
                            }
                            good.incrementAndGet();
                        } else if (wasClosed && afterClose.incrementAndGet() > 100) {
                            return;
                        }
                    }
                } catch (final Throwable e) {
                    failure.set(e);
                }
            }));
        }
        io.lazyblk.pagemap.Await.until("the readers read 300 pages", java.time.Duration.ofSeconds(30), () -> good.get() >= 300);
        reads.close();
        closed.set(true);
        reads.close();
        for (final Thread t : readers) {
            t.join(30_000);
            assertFalse(t.isAlive(), "a reader still runs 30 s after close()");
        }
        assertNull(failure.get(), () -> "a reader failed: " + failure.get());
        assertTrue(Files.notExists(Path.of("/proc/self/fd/" + fd)) || !LibC.describeFd(fd).equals(p.toString()),
            "the fd is closed");
    }
}
