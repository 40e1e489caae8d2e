package io.lazyblk.tools.frontend;

import io.lazyblk.tools.Engine;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The bench front end against real engines in this JVM (real sockets, memfds, eventfds, an image file): the
 * interrupt-driven mode completes requests and sleeps on the call eventfd instead of spinning, and several engines
 * are driven at once over one window.
 */
class BenchRunnerEngineTest {
    private static final long IMAGE_BYTES = 32L << 20;

    @TempDir
    Path dir;
    private final List<Engine> engines = new ArrayList<>();

    @AfterEach
    void stop() {
        for (final Engine e : engines) {
            e.close();
        }
    }

    private Path engine(final String name) throws IOException {
        final Path image = dir.resolve(name + ".img");
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(IMAGE_BYTES);
        }
        final Path socket = dir.resolve(name + ".sock");
        engines.add(Engine.start(Engine.Options.file(socket, image)));
        return socket;
    }

    /**
     * At QD1 the queue thread has nothing to do between a submit and its completion, so an interrupt-driven front end
     * goes to sleep in poll(2) for about every request and the engine's signal wakes it; a polling one never sleeps.
     */
    @Test
    void shouldSleepOnTheCallEventfdAboutOncePerRequestAtQd1InInterruptModeAndNeverInPollMode() throws Exception {
        final Path socket = engine("e");
        final BenchOptions o = new BenchOptions(socket, BenchPattern.RANDREAD, 4096, 1, 2, 1, 5);

        final BenchResult interrupt = BenchRunner.run(o.withWait(BenchWait.INTERRUPT));
        final BenchResult poll = BenchRunner.run(o.withWait(BenchWait.POLL).withSocket(socket));

        assertTrue(interrupt.ops() > 100, interrupt.details());
        assertEquals(0, interrupt.errors(), interrupt.details());
        // ops counts the 2 measured seconds; sleeps and wake-ups the warm-up and drain too, so they can only be larger.
        assertTrue(interrupt.sleeps() >= interrupt.ops() / 2, "slept for at least every other request: " + interrupt.details());
        assertTrue(interrupt.wakeups() >= interrupt.ops() / 2, "woken by the engine's signal: " + interrupt.details());
        assertTrue(poll.ops() > 100, poll.details());
        assertEquals(0, poll.sleeps(), "a polling front end never sleeps: " + poll.details());
    }

    @Test
    void shouldDriveTwoEnginesAtOnceAndReportEachOverTheSameWindow() throws Exception {
        final Path a = engine("a");
        final Path b = engine("b");
        final BenchOptions o = new BenchOptions(a, BenchPattern.RANDREAD, 4096, 4, 1, 1, 9).withWait(BenchWait.INTERRUPT);

        final List<BenchResult> rs = BenchRunner.runAll(o, List.of(a, b));

        assertEquals(2, rs.size());
        for (final BenchResult r : rs) {
            assertTrue(r.ops() > 100, r.details());
            assertEquals(0, r.errors(), r.details());
            assertTrue(r.sleeps() > 0, r.details());
        }
        final String summary = BenchCommand.summary(rs);
        assertTrue(summary.matches("sockets=2 total_iops=\\d+ min_iops=\\d+ mean_iops=\\d+ slowest_over_mean=[01]\\.\\d\\d"), summary);
    }
}
