package io.lazyblk.tools;

import io.lazyblk.tools.guest.QemuGuest;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Future;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The engine restarted under a running QEMU guest (chardev {@code reconnect=1}), killed with SIGKILL or stopped with
 * SIGTERM several times while the guest runs its write-and-verify loop ({@code lazyblk.test=verify} in
 * tools/guest/init: a writer that writes, reads back and checks 1 MiB a round, and two readers reading chunks never
 * read before). For a lazy engine in the middle of its fill the provider is stopped (SIGSTOP) before each stop, so the
 * readers' requests are parked on fetches while the writer's complete: requests complete out of order, and the ones
 * in flight at the stop are found in the in-flight region and run again by the next engine. What a user would check:
 * the guest sees no I/O error and its checks pass, every read returned the image's bytes, and the host file holds
 * what the guest wrote last.
 */
class EngineRestartGuestTest {
    private static final Duration GUEST_TIMEOUT = Duration.ofSeconds(300);
    private static final Duration STEP = Duration.ofSeconds(60);
    private static final int ROUNDS = 12;
    /** The writer's 1 MiB at 1 MiB, the readers from 4 MiB: 2 x 12 chunks of 256 KiB end at 10 MiB of the 16 MiB image. */
    private static final int WRITE_BLOCKS = 256;
    private static final int READ_BLOCKS = 1024;
    /** 16 KiB/s: the fill needs 4 s a page and never reaches the readers' area while the test runs. */
    private static final String SLOW_FILL = "16k";
    private static final Pattern RESUBMITTED = Pattern.compile("(\\d+) requests were in flight when the previous engine stopped");

    private static QemuGuest guest;

    @TempDir
    Path dir;
    private LazyProcesses lazy;
    private ExecutorService pool;

    enum Stop { KILL, TERM }

    @BeforeAll
    static void findQemu() throws Exception {
        guest = VerifyWorkload.guest();
    }

    @BeforeEach
    void setUp(final TestInfo test) throws Exception {
        lazy = new LazyProcesses(dir, test);
        pool = lazy.threads(1);
    }

    @AfterEach
    void tearDown() {
        lazy.close();
    }

    @ParameterizedTest
    @EnumSource(Stop.class)
    void shouldKeepALocalEnginesGuestWritingAndVerifyingAcrossRestarts(final Stop stop) throws Exception {
        run(false, 1, stop, stop, stop, stop);
    }

    @ParameterizedTest
    @EnumSource(Stop.class)
    void shouldRunAgainTheReadsParkedOnFetchesWhenALazyEngineRestartsMidFill(final Stop stop) throws Exception {
        final int resubmitted = run(true, 1, stop, stop, stop, stop);
        assertTrue(resubmitted > 0, "some requests were in flight at a stop and ran again after it");
    }

    @Test
    void shouldSurviveRestartsOfALocalEngineWithTwoQueues() throws Exception {
        run(false, 2, Stop.KILL, Stop.TERM, Stop.KILL, Stop.TERM);
    }

    @Test
    void shouldSurviveRestartsOfALazyEngineWithTwoQueues() throws Exception {
        final int resubmitted = run(true, 2, Stop.KILL, Stop.TERM, Stop.KILL, Stop.TERM);
        assertTrue(resubmitted > 0, "some requests were in flight at a stop and ran again after it");
    }

    /** Runs the guest through {@code stops.length} engine restarts; returns how many requests the new engines ran again. */
    private int run(final boolean lazyEngine, final int queues, final Stop... stops) throws Exception {
        final Path local = dir.resolve("local.img");
        final Path socket = dir.resolve("engine.sock");
        final LazyblkProcess provider = lazyEngine ? lazy.startProvider("provider", 0) : null;
        if (!lazyEngine) {
            Files.copy(lazy.goldenFile, local);
        }
        final LinkedBlockingQueue<String> console = new LinkedBlockingQueue<>();
        final List<LazyblkProcess> engines = new java.util.ArrayList<>();
        LazyblkProcess engine = startEngine(0, provider, local, socket, queues);
        engines.add(engine);
        final Future<QemuGuest.Result> run = pool.submit(() -> guest.boot(socket, "verify", queues, GUEST_TIMEOUT,
            new QemuGuest.RunOptions(true, queues, console::add),
            "lazyblk.off=" + WRITE_BLOCKS, "lazyblk.roff=" + READ_BLOCKS, "lazyblk.rounds=" + ROUNDS));
        int resubmitted = 0;
        int round = 0;
        for (int i = 0; i < stops.length; i++) {
            round = VerifyWorkload.awaitRound(console, round + 1, STEP);
            if (provider != null) {
                provider.signal("STOP");
                // Two rounds of the writer after the provider stopped: the second began after it, so its readers' reads
                // wait on fetches nobody answers while the writer's requests complete around them.
                round = VerifyWorkload.awaitRound(console, round + 2, STEP);
            }
            if (stops[i] == Stop.KILL) {
                engine.kill();
            } else {
                engine.stop();
            }
            if (provider != null) {
                provider.signal("CONT");
            }
            engine = startEngine(i + 1, provider, local, socket, queues);
            engines.add(engine);
        }
        final QemuGuest.Result r = run.get(GUEST_TIMEOUT.toSeconds() + 30, TimeUnit.SECONDS);
        VerifyWorkload.assertNoDiskErrors(r.consoleLines(), "log " + r.logFile());
        assertTrue(r.ok(), () -> "the guest's checks failed: " + r.resultLine().orElse("no result line") + "; log " + r.logFile());
        assertEquals(2 * ROUNDS, VerifyWorkload.checkReads(r.consoleLines(), lazy.golden), "every read of both readers reported");
        for (final LazyblkProcess e : engines) {
            final Matcher m = RESUBMITTED.matcher(e.output());
            while (m.find()) {
                resubmitted += Integer.parseInt(m.group(1));
            }
        }
        engine.stop();
        final byte[] expected = VerifyWorkload.roundPattern(ROUNDS);
        assertEquals(VerifyWorkload.md5(expected), r.writeMd5(), "the guest's last write is the last round's pattern");
        final byte[] onHost = new byte[expected.length];
        try (var f = java.nio.channels.FileChannel.open(local)) {
            f.read(java.nio.ByteBuffer.wrap(onHost), (long) WRITE_BLOCKS * 4096);
        }
        assertEquals(VerifyWorkload.md5(expected), VerifyWorkload.md5(onHost), "the host file holds what the guest wrote last");
        return resubmitted;
    }

    private LazyblkProcess startEngine(final int generation, final LazyblkProcess provider, final Path local, final Path socket,
                                       final int queues) throws Exception {
        final String name = "engine-" + generation;
        if (provider != null) {
            return lazy.startEngine(name, local, socket, LazyProcesses.portOf(provider), SLOW_FILL, 120, queues);
        }
        final LazyblkProcess e = lazy.start(name, Map.of(), "serve", "--socket", socket.toString(), "--local", local.toString(),
            "--queues", Integer.toString(queues));
        e.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);
        return e;
    }
}
