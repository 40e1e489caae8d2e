package io.lazyblk.tools;

import io.lazyblk.tools.guest.QemuGuest;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Future;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Live migration of a running QEMU guest between two QEMUs on this host, each with its own engine: the guest runs its
 * write-and-verify loop ({@code lazyblk.test=verify}) from before the migration until after it, QMP {@code migrate}
 * moves it from QEMU-A to QEMU-B (started with {@code -incoming}), and the loop finishes on B. Four cases, and QEMU's own
 * virtio-blk as the reference for the downtime: shared storage with local engines and with lazy engines mid-fill (both
 * engines on the same file; B stands by until A lets go at the switchover), and no shared storage from a local source
 * engine and from one still filling from a provider (A's {@code migrate-export}, B an ordinary lazy engine on its own
 * file). What a user would check: the migration completes, the guest sees no I/O error and its checks pass on both
 * sides, every read returned the image's bytes, the file holds the last write (B's own file, for no shared storage,
 * once B reached disk-only and A said the migration is complete), and engine A stops with nothing lost.
 */
class LiveMigrationGuestTest {
    /** A failed migration can leave QEMU-A hung (a guest that powered off mid-migration did): fail in minutes, not more. */
    private static final Duration GUEST_TIMEOUT = Duration.ofSeconds(150);
    private static final Duration STEP = Duration.ofSeconds(60);
    /**
     * Rounds of the guest's loop (~0.5 s each here): it must outlast the ~5 s migration started at round 3 by far. A
     * guest that powers off while QEMU migrates makes the migration fail.
     */
    private static final int ROUNDS = 60;
    /** 48 MiB: the readers' 2 x 60 chunks of 256 KiB from 4 MiB end at 34 MiB. */
    private static final int IMAGE_BYTES = 48 << 20;
    private static final int WRITE_BLOCKS = 256;
    private static final int READ_BLOCKS = 1024;
    private static final long MIGRATION_BYTES_PER_SECOND = 20L << 20;

    private static QemuGuest guest;

    @TempDir
    Path dir;
    private LazyProcesses lazy;
    private ExecutorService pool;

    @BeforeAll
    static void findQemu() throws Exception {
        guest = VerifyWorkload.guest();
    }

    @BeforeEach
    void setUp(final TestInfo test) throws Exception {
        lazy = new LazyProcesses(dir, test);
        pool = lazy.threads(2);
    }

    @AfterEach
    void tearDown() {
        lazy.close();
    }

    private LazyblkProcess engine(final String name, final Path socket, final Path image) throws Exception {
        final LazyblkProcess e = lazy.start(name, Map.of(), "serve", "--socket", socket.toString(), "--local", image.toString());
        e.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);
        return e;
    }

    private Future<QemuGuest.Result> qemu(final Path socket, final Path ownDisk, final List<String> console,
                                          final LinkedBlockingQueue<String> lines, final String... extraArgs) {
        return pool.submit(() -> guest.boot(socket, "verify", 1, GUEST_TIMEOUT,
            new QemuGuest.RunOptions(false, 1, l -> {
                console.add(l);
                lines.add(l);
            }, List.of(extraArgs), ownDisk),
            "lazyblk.off=" + WRITE_BLOCKS, "lazyblk.roff=" + READ_BLOCKS, "lazyblk.rounds=" + ROUNDS));
    }

    /** What a migration left: QEMU's figures, and each side's console. */
    private record Migration(String downtime, String totalTime, QemuGuest.Result destination, List<String> sourceConsole,
                             List<String> destinationConsole) {
    }

    /**
     * Boots the guest on QEMU-A (the disk from engine socket {@code socketA}, or QEMU's own {@code ownDisk}), starts
     * QEMU-B with {@code -incoming} (socket {@code socketB}, or the same {@code ownDisk}), migrates A to B over QMP once
     * the loop reached round 3, quits A, and waits for the guest to finish on B.
     */
    private Migration migrate(final Path socketA, final Path socketB, final Path ownDisk) throws Exception {
        return migrate(socketA, socketB, ownDisk, () -> { });
    }

    /** A step run just before {@code migrate} is sent (a check of the source's state), then the time the migration ended. */
    @FunctionalInterface
    private interface BeforeMigrate {
        void run() throws Exception;
    }

    private Migration migrate(final Path socketA, final Path socketB, final Path ownDisk, final BeforeMigrate before) throws Exception {
        final Path qmpA = dir.resolve("qmp-a.sock");
        final Path migration = dir.resolve("migration.sock");
        final List<String> consoleA = Collections.synchronizedList(new ArrayList<>());
        final List<String> consoleB = Collections.synchronizedList(new ArrayList<>());
        final LinkedBlockingQueue<String> linesA = new LinkedBlockingQueue<>();
        final Path unusedA = socketA != null ? socketA : dir.resolve("none-a.sock");
        final Path unusedB = socketB != null ? socketB : dir.resolve("none-b.sock");
        final Future<QemuGuest.Result> vmA = qemu(unusedA, ownDisk, consoleA, linesA, "-qmp", "unix:" + qmpA + ",server=on,wait=off");
        final Future<QemuGuest.Result> vmB = qemu(unusedB, ownDisk, consoleB, new LinkedBlockingQueue<>(),
            "-qmp", "unix:" + dir.resolve("qmp-b.sock") + ",server=on,wait=off", "-incoming", "unix:" + migration);

        VerifyWorkload.awaitRound(linesA, 3, STEP);
        final String done;
        try (Qmp a = Qmp.connect(qmpA, STEP)) {
            // 20 MB/s: the ~100 MB of non-zero guest RAM takes ~5 s to copy, so the guest's I/O runs through the whole
            // precopy and the engine writes into pages QEMU already sent: only the dirty log makes it send them again.
            a.execute("migrate-set-parameters", "{\"max-bandwidth\":" + MIGRATION_BYTES_PER_SECOND + "}");
            before.run();
            a.execute("migrate", "{\"uri\":\"unix:" + migration + "\"}");
            final String[] status = {null};
            io.lazyblk.pagemap.Await.until("the migration ends", Duration.ofSeconds(120), () -> {
                status[0] = Qmp.field(a.execute("query-migrate", null), "status");
                return "completed".equals(status[0]) || "failed".equals(status[0]) || "cancelled".equals(status[0]);
            });
            assertEquals("completed", status[0], "QMP query-migrate's status");
            // query-migrate may say completed before it fills in the downtime: read it once the VM is in postmigrate.
            io.lazyblk.pagemap.Await.until("QEMU-A in postmigrate", Duration.ofSeconds(30),
                () -> "postmigrate".equals(Qmp.field(a.execute("query-status", null), "status")));
            done = a.execute("query-migrate", null);
            a.execute("quit", null); // as libvirt does once the migration completed
        }
        final QemuGuest.Result b = vmB.get(GUEST_TIMEOUT.toSeconds() + 30, TimeUnit.SECONDS);
        vmA.get(30, TimeUnit.SECONDS);
        VerifyWorkload.assertNoDiskErrors(consoleA, "source, before the migration");
        VerifyWorkload.assertNoDiskErrors(b.consoleLines(), "destination, log " + b.logFile());
        assertTrue(b.ok(), () -> "the guest's checks failed on the destination: " + b.resultLine().orElse("no result line")
            + "; log " + b.logFile());
        assertTrue(consoleA.stream().anyMatch(l -> l.contains("LAZYBLK-ROUND 3 ")), "the loop ran on the source");
        assertTrue(consoleB.stream().anyMatch(l -> l.contains("LAZYBLK-ROUND ")), "the loop went on running on the destination");
        return new Migration(Qmp.field(done, "downtime"), Qmp.field(done, "total-time"), b, consoleA, consoleB);
    }

    /** Checks both sides' reads against {@code original} and that {@code image} holds the loop's last write. */
    private static void assertDiskAfter(final Migration m, final byte[] original, final Path image) throws Exception {
        assertEquals(2 * ROUNDS, VerifyWorkload.checkReads(m.sourceConsole(), original)
            + VerifyWorkload.checkReads(m.destinationConsole(), original),
            "every read of both readers, on either side, returned the image's bytes");
        final byte[] expected = VerifyWorkload.roundPattern(ROUNDS);
        assertEquals(VerifyWorkload.md5(expected), m.destination().writeMd5(), "the guest's last write is the last round's pattern");
        final byte[] onHost = new byte[expected.length];
        try (var f = java.nio.channels.FileChannel.open(image)) {
            f.read(java.nio.ByteBuffer.wrap(onHost), (long) WRITE_BLOCKS * 4096);
        }
        assertEquals(VerifyWorkload.md5(expected), VerifyWorkload.md5(onHost), "the shared file holds what the guest wrote last");
    }

    @Test
    void shouldMigrateARunningGuestBetweenTwoEnginesOnSharedStorageWithoutAnError() throws Exception {
        final byte[] original = TestImage.pattern(IMAGE_BYTES, 44);
        final Path image = Files.write(dir.resolve("shared.img"), original);
        final Path socketA = dir.resolve("a.sock");
        final Path socketB = dir.resolve("b.sock");
        final LazyblkProcess engineA = engine("engine-a", socketA, image);
        final LazyblkProcess engineB = engine("engine-b", socketB, image);
        final Migration m = migrate(socketA, socketB, null);
        System.out.println("live migration, shared storage, local engine: downtime " + m.downtime() + " ms, total "
            + m.totalTime() + " ms");
        engineA.stop(); // SIGTERM, as a service manager stops it; the JVM then exits with 143 after its shutdown hook
        engineA.awaitExit(Duration.ofSeconds(10));
        assertTrue(engineA.output().lines().noneMatch(l -> l.contains(" WARN ") || l.contains(" ERROR ")),
            "engine A stops with nothing to warn about once its QEMU is gone:\n" + engineA.output());
        engineB.stop();
        assertDiskAfter(m, original, image);
    }

    /**
     * Shared storage with lazy engines mid-fill: both engines run the same {@code serve --local IMG --source ...} command;
     * B stands by (A holds the image's lock), A lets go at the switchover with its state file current, and B takes both
     * and finishes the fill. A fills at 2 MB/s, so the switchover finds it mid-fill.
     */
    @Test
    void shouldMigrateARunningGuestBetweenTwoLazyEnginesMidFillOnSharedStorage() throws Exception {
        final byte[] original = TestImage.pattern(IMAGE_BYTES, 45);
        final Path golden = Files.write(dir.resolve("golden-48m.raw"), original);
        final LazyblkProcess provider = lazy.start("provider", Map.of(), "image-server", "--listen", "127.0.0.1:0",
            "--export", "vm-image=" + golden, "--secret-file", dir.resolve("secret").toString(), "--page-size", "64k",
            "--cache-dir", dir.resolve("manifests").toString());
        final String serving = provider.awaitLine("serving vm-image ", LazyblkProcess.START_TIMEOUT);
        final String source = "tcp://127.0.0.1:" + serving.substring(serving.lastIndexOf(':') + 1).strip() + "/vm-image";
        final Path image = dir.resolve("shared.img");
        final Path socketA = dir.resolve("a.sock");
        final Path socketB = dir.resolve("b.sock");
        final String[] common = {"--local", image.toString(), "--source", source, "--token", lazy.token("vm-image"),
            "--fill-rate", "2M", "--memory-budget", "16M"};
        final LazyblkProcess engineA = lazy.start("engine-a", Map.of(), concat(new String[] {"serve", "--socket", socketA.toString()}, common));
        engineA.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);
        final LazyblkProcess engineB = lazy.start("engine-b", Map.of(), concat(new String[] {"serve", "--socket", socketB.toString()}, common));
        engineB.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);
        assertEquals("standby", status(socketB).get("mode"), "B stands by: A holds the image");

        final Migration m = migrate(socketA, socketB, null,
            () -> assertEquals("lazy", status(socketA).get("mode"), "the migration starts with A mid-fill"));
        io.lazyblk.pagemap.Await.until("B reaches disk-only", Duration.ofSeconds(120), () -> "disk-only".equals(status(socketB).get("mode")));
        final double toDiskOnly = secondsBetween(engineB, "took " + image, "switched to disk-only");
        System.out.printf("live migration, shared storage, lazy engines mid-fill: downtime %s ms, total %s ms; B switchover to"
            + " disk-only %.1f s (its fill capped at 2 MB/s)%n", m.downtime(), m.totalTime(), toDiskOnly);
        assertEquals("handed-over", status(socketA).get("mode"), "A let go of the image at the switchover");
        engineA.stop();
        engineA.awaitExit(Duration.ofSeconds(10));
        engineB.stop();
        engineB.awaitExit(Duration.ofSeconds(10));
        assertDiskAfter(m, original, image);
        final byte[] onHost = Files.readAllBytes(image);
        final byte[] expected = original.clone();
        final byte[] last = VerifyWorkload.roundPattern(ROUNDS);
        System.arraycopy(last, 0, expected, WRITE_BLOCKS * 4096, last.length);
        assertEquals(VerifyWorkload.md5(expected), VerifyWorkload.md5(onHost), "the filled file is the image with the guest's writes");
    }

    /**
     * No shared storage: A serves its own file ({@code sourceLazy}: fills it from a provider at 2 MB/s, so the migration
     * finds it mid-fill), {@code migrate-export} makes it export its live disk, and B is an ordinary lazy engine with A's
     * export as its source, on a file of its own. B fills while the guest runs on A, takes the final set of changed pages
     * at the switchover, reaches disk-only and tells A; B's file is then the disk the guest saw.
     */
    @org.junit.jupiter.params.ParameterizedTest(name = "source engine lazy mid-fill: {0}")
    @org.junit.jupiter.params.provider.ValueSource(booleans = {false, true})
    void shouldMigrateARunningGuestWithoutSharedStorageFromTheSourceEnginesLiveExport(final boolean sourceLazy) throws Exception {
        final byte[] original = TestImage.pattern(IMAGE_BYTES, 46);
        final Path imageA = dir.resolve("a.img");
        final Path imageB = dir.resolve("b.img");
        final Path socketA = dir.resolve("a.sock");
        final Path socketB = dir.resolve("b.sock");
        final LazyblkProcess engineA;
        if (sourceLazy) {
            final Path golden = Files.write(dir.resolve("golden-48m.raw"), original);
            final LazyblkProcess provider = lazy.start("provider", Map.of(), "image-server", "--listen", "127.0.0.1:0",
                "--export", "vm-image=" + golden, "--secret-file", dir.resolve("secret").toString(), "--page-size", "64k",
                "--cache-dir", dir.resolve("manifests").toString());
            final String serving = provider.awaitLine("serving vm-image ", LazyblkProcess.START_TIMEOUT);
            engineA = lazy.start("engine-a", Map.of(), "serve", "--socket", socketA.toString(), "--local", imageA.toString(),
                "--source", "tcp://127.0.0.1:" + serving.substring(serving.lastIndexOf(':') + 1).strip() + "/vm-image",
                "--token", lazy.token("vm-image"), "--fill-rate", "2M", "--memory-budget", "16M");
        } else {
            Files.write(imageA, original);
            engineA = lazy.start("engine-a", Map.of(), "serve", "--socket", socketA.toString(), "--local", imageA.toString());
        }
        engineA.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);
        final LazyblkProcess export = lazy.start("migrate-export", Map.of(), "migrate-export", "--socket", socketA.toString(),
            "--listen", "127.0.0.1:0", "--name", "vm1-move", "--secret-file", dir.resolve("secret").toString(),
            // The copy's cap while the guest runs on A: B then starts the migration partly filled, and a lazy A (whose
            // pages B's requests pull through it) still mid-fill.
            "--rate", "1M");
        assertEquals(0, export.awaitExit(LazyblkProcess.START_TIMEOUT), export.output());
        final String on = export.awaitLine("exporting the live disk", Duration.ZERO);
        final String listen = on.substring(on.lastIndexOf(" on ") + 4).strip();
        final LazyblkProcess engineB = lazy.start("engine-b", Map.of(), "serve", "--socket", socketB.toString(), "--local",
            imageB.toString(), "--source", "tcp://" + listen + "/vm1-move", "--token", lazy.token("vm1-move"), "--memory-budget", "16M");
        engineB.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);

        final Migration m = migrate(socketA, socketB, null, () -> {
            assertEquals("exporting", status(socketA).get("migration"));
            if (sourceLazy) {
                assertEquals("lazy", status(socketA).get("mode"), "the migration starts with A mid-fill");
            }
        });
        io.lazyblk.pagemap.Await.until("B reaches disk-only", Duration.ofSeconds(120), () -> "disk-only".equals(status(socketB).get("mode")));
        final double toDiskOnly = secondsBetween(engineB, "migration switchover:", "switched to disk-only");
        io.lazyblk.pagemap.Await.until("A's status says the migration is complete", Duration.ofSeconds(30),
            () -> "complete".equals(status(socketA).get("migration")));
        System.out.printf("live migration, no shared storage, source engine %s: downtime %s ms, total %s ms; B switchover to"
            + " disk-only %.1f s; final set %s pages%n", sourceLazy ? "lazy mid-fill" : "local", m.downtime(), m.totalTime(),
            toDiskOnly, status(socketA).get("migration_final_pages"));
        engineA.stop();
        engineA.awaitExit(Duration.ofSeconds(10));
        engineB.stop();
        engineB.awaitExit(Duration.ofSeconds(10));
        assertDiskAfter(m, original, imageB);
        final byte[] expected = original.clone();
        final byte[] last = VerifyWorkload.roundPattern(ROUNDS);
        System.arraycopy(last, 0, expected, WRITE_BLOCKS * 4096, last.length);
        assertEquals(VerifyWorkload.md5(expected), VerifyWorkload.md5(Files.readAllBytes(imageB)),
            "B's file is the disk the guest saw: the image with the guest's writes");
    }

    /**
     * Seconds between the log lines of {@code engine} that contain {@code from} and {@code to} (their date and time
     * stamps): for B, from taking the disk at the switchover to its switch to disk-only.
     */
    private static double secondsBetween(final LazyblkProcess engine, final String from, final String to) {
        final java.time.format.DateTimeFormatter f = java.time.format.DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss.SSS");
        final java.time.LocalDateTime a = java.time.LocalDateTime.parse(engine.awaitLine(from, Duration.ZERO).substring(0, 23), f);
        final java.time.LocalDateTime b = java.time.LocalDateTime.parse(engine.awaitLine(to, Duration.ofSeconds(10)).substring(0, 23), f);
        return Duration.between(a, b).toMillis() / 1000.0;
    }

    private static Map<String, String> status(final Path socket) throws java.io.IOException {
        return StatusCommand.read(StatusServer.controlSocket(socket));
    }

    private static String[] concat(final String[] a, final String[] b) {
        final String[] r = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }

    /** The reference the engine's downtime is read against: the same guest, image and migration, QEMU's own virtio-blk. */
    @Test
    void shouldMigrateTheSameWayWithQemusOwnVirtioBlkForComparison() throws Exception {
        final byte[] original = TestImage.pattern(IMAGE_BYTES, 44);
        final Path image = Files.write(dir.resolve("shared.img"), original);
        final Migration m = migrate(null, null, image);
        System.out.println("live migration, shared storage, QEMU's own virtio-blk: downtime " + m.downtime() + " ms, total "
            + m.totalTime() + " ms");
        assertDiskAfter(m, original, image);
    }
}
