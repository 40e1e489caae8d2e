package io.lazyblk.tools.frontend;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** Short benchmark runs against qemu-storage-daemon: the runner completes, measures, and really does I/O. */
class BenchRunnerQsdTest {
    private static final long IMAGE_BYTES = 32L << 20;

    @TempDir
    Path dir;
    private QsdProcess qsd;

    @BeforeEach
    void requireQsd() {
        assumeTrue(QsdProcess.installed(), "qemu-storage-daemon not installed");
    }

    @AfterEach
    void stop() {
        if (qsd != null) {
            qsd.close();
        }
    }

    @Test
    void shouldMeasureRandomReadsForTwoSeconds() throws Exception {
        final Path image = image();
        qsd = QsdProcess.file(dir, image, 1);

        final BenchResult r = BenchRunner.run(new BenchOptions(qsd.socket(), BenchPattern.RANDREAD, 4096, 4, 2, 1, 42));

        assertTrue(r.iops() > 0, r.line());
        assertEquals(0, r.errors());
        assertTrue(r.p50Us() > 0 && r.p50Us() <= r.p99Us(), r.line());
        assertEquals(r.ops() * 4096, r.bytes());
        assertTrue(r.line().matches("iops=\\d+ mbps=\\d+\\.\\d p50_us=\\d+\\.\\d p99_us=\\d+\\.\\d"), r.line());
    }

    @Test
    void shouldWriteDataThatReachesTheImageInSequentialWriteRun() throws Exception {
        final Path image = image();
        qsd = QsdProcess.file(dir, image, 1);

        final BenchResult r = BenchRunner.run(new BenchOptions(qsd.socket(), BenchPattern.WRITE, 65536, 2, 1, 1, 1));

        assertTrue(r.ops() > 0, r.line());
        assertEquals(0, r.errors());
        final ByteBuffer first = ByteBuffer.allocate(65536);
        try (FileChannel ch = FileChannel.open(image, StandardOpenOption.READ)) {
            ch.read(first, 0);
        }
        assertTrue(first.array()[0] != 0 || first.array()[8] != 0, "the first block holds the bench's data, not zeros");
    }

    /** A single pass reads each block once, front to back, and stops: as many reads as the disk has blocks. */
    @Test
    void shouldStopASinglePassAtTheEndOfTheDisk() throws Exception {
        qsd = QsdProcess.nullDevice(dir, IMAGE_BYTES, 1);

        final BenchResult r = BenchRunner.run(new BenchOptions(qsd.socket(), BenchPattern.READ, 65536, 1, 30, 1, 1).withSinglePass());

        assertEquals(IMAGE_BYTES / 65536, r.ops(), r.details());
        assertEquals(0, r.errors());
    }

    @Test
    void shouldDriveTwoQueuesWithOneThreadEach() throws Exception {
        qsd = QsdProcess.nullDevice(dir, IMAGE_BYTES, 2);

        final BenchResult r = BenchRunner.run(new BenchOptions(qsd.socket(), BenchPattern.RANDREAD, 4096, 8, 1, 2, 7));

        assertTrue(r.iops() > 0, r.line());
        assertEquals(0, r.errors());
    }

    @Test
    void shouldNotAllocatePerRequestOnTheQueueThread() throws Exception {
        qsd = QsdProcess.nullDevice(dir, IMAGE_BYTES, 1);

        final BenchResult r = BenchRunner.run(new BenchOptions(qsd.socket(), BenchPattern.RANDREAD, 4096, 16, 1, 1, 3));

        // Any object per request would cost at least 16 bytes each; what is left is JIT and kick noise.
        assertTrue(r.ops() > 10_000, r.details());
        assertTrue(r.allocatedBytes() * 10 < r.ops(), "under 0.1 byte per request: " + r.details());
    }

    /**
     * Against a back end that takes 2 ms per request, a queue thread that sleeps between completions uses a sliver of
     * a core; the same run polling spins for all of it. The polling run is the control: it shows the measure can tell.
     */
    @Test
    void shouldUseLittleCpuWaitingForASlowBackEndInInterruptModeAndMuchMoreWhenPolling() throws Exception {
        qsd = QsdProcess.start(dir, "driver=null-co,node-name=f0,size=" + IMAGE_BYTES + ",latency-ns=2000000", 1);
        final BenchOptions o = new BenchOptions(qsd.socket(), BenchPattern.RANDREAD, 4096, 1, 2, 1, 11);

        final BenchResult interrupt = BenchRunner.run(o.withWait(BenchWait.INTERRUPT));
        final BenchResult poll = BenchRunner.run(o.withWait(BenchWait.POLL));

        assertTrue(interrupt.ops() > 100, interrupt.details());
        assertEquals(0, interrupt.errors());
        assertTrue(interrupt.cpuSeconds() >= 0 && interrupt.cpuSeconds() < 0.2,
            "under a tenth of the 2 measured seconds on the CPU: " + interrupt.details());
        assertTrue(interrupt.wakeups() >= interrupt.ops(), "woken by the back end for every request: " + interrupt.details());
        assertTrue(poll.cpuSeconds() > 5 * interrupt.cpuSeconds() + 0.1, "polling spins: " + poll.details()
            + " against " + interrupt.details());
    }

    private Path image() throws IOException {
        final Path image = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(IMAGE_BYTES);
        }
        return image;
    }
}
