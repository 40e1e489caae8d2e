package io.lazyblk.tools;

import io.lazyblk.blk.LazyStore;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.tools.guest.QemuGuest;

import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import static io.lazyblk.tools.DemoCommand.step;

/**
 * The demo's mission path: an image provider on loopback exports the sample image; the engine starts with an
 * empty local file and fills it lazily while a QEMU guest (or, without QEMU, the built-in front end) works on
 * the disk; then the demo reports the boot, the bytes pulled on demand, the fill time and the switch to disk-only,
 * and checks the local file on the host.
 */
final class LazyDemo {
    private final Path workDir;
    private final Path sample;
    private final long size;
    private Path golden;
    private final Path socket;
    private final int queues;
    private final int timeoutSeconds;
    private final long fillRate;
    private final boolean forceFrontEnd;
    /** Where the guest (or front end) wrote the test pattern. */
    private long patternOffset = QemuGuest.patternOffsetBytes(QemuGuest.DEFAULT_PATTERN_OFFSET_BLOCKS);

    LazyDemo(final Path workDir, final Path sample, final long size, final Path socket, final int queues, final int timeoutSeconds,
             final long fillRate, final boolean forceFrontEnd) {
        this.workDir = workDir;
        this.sample = sample;
        this.size = size;
        this.socket = socket;
        this.queues = queues;
        this.timeoutSeconds = timeoutSeconds;
        this.fillRate = fillRate;
        this.forceFrontEnd = forceFrontEnd;
    }

    int run() throws Exception {
        final boolean qemu = !forceFrontEnd && QemuGuest.available();
        final Path scripts = QemuGuest.findGuestScriptsDir().orElse(null);
        final QemuGuest guest = qemu && scripts != null ? new QemuGuest(scripts, QemuGuest.defaultGuestDir(), workDir.resolve("logs")) : null;
        if (guest != null) {
            golden = workDir.resolve("rootdisk-" + (size >> 20) + "M.img");
            step("1/4", "building a bootable root-disk image " + golden + " (" + (size >> 20) + " MiB: busybox, an init, and ballast the boot never reads; cached)");
            guest.buildRootDisk(golden, (size >> 20) + "M");
        } else {
            golden = sample;
            step("1/4", "creating sample image " + golden + " (" + (size >> 20) + " MiB)");
            DemoCommand.createSampleImage(golden, size);
        }
        final byte[] secret = new byte[32];
        new SecureRandom().nextBytes(secret);
        final Path local = workDir.resolve("local.img");
        Files.deleteIfExists(local);
        Files.deleteIfExists(io.lazyblk.persistence.PageStateFile.beside(local));
        step("2/4", "starting an image provider on loopback and the engine with an empty local file " + local
            + " (background fill capped at " + (fillRate >> 20) + " MiB/s)");
        try (ImageServer server = ImageServer.start(new InetSocketAddress("127.0.0.1", 0), Map.of("sample", golden), secret,
            ManifestBuilder.DEFAULT_PAGE_SIZE, new ManifestBuilder(workDir.resolve("manifests")))) {
            final String token = AccessToken.mint(secret, "sample", Instant.now().plusSeconds(3600));
            final Engine.LazySource src = new Engine.LazySource(new InetSocketAddress("127.0.0.1", server.port()), "sample", token,
                64L << 20, fillRate, Duration.ofSeconds(30));
            final long start = System.nanoTime();
            try (Engine engine = Engine.startLazy(Engine.Options.file(socket, local).withQueues(queues), src)) {
                final LazyStore store = engine.lazyStore();
                final int rc = guest != null ? boot(guest, store) : frontEnd();
                if (rc != 0) {
                    return rc;
                }
                if (!store.awaitDiskOnly(TimeUnit.SECONDS.toNanos(timeoutSeconds))) {
                    System.out.println("FAILED: the fill did not finish in " + timeoutSeconds + " s (" + store.localPages() + " of "
                        + store.pageCount() + " pages local)");
                    return 1;
                }
                System.out.printf("      fill finished and the engine switched to disk-only %.1f s after it started: %.1f MiB pulled on demand,"
                        + " %.1f MiB in the background; its connections to the sources are closed%n", (System.nanoTime() - start) / 1e9,
                    store.bytesFetchedOnDemand() / 1048576.0, store.bytesFetchedInBackground() / 1048576.0);
            }
        }
        step("4/4", "checking the local file on the host");
        final byte[] pattern = QemuGuest.expectedPattern();
        final boolean patternOk = Arrays.equals(pattern, DemoCommand.readAt(local, patternOffset, pattern.length));
        final boolean restOk = guest != null // a root disk changes as the guest mounts it: compare its untouched head only
            ? Arrays.equals(DemoCommand.readAt(golden, 0, 1024), DemoCommand.readAt(local, 0, 1024))
            : Arrays.equals(DemoCommand.readAt(golden, 0, 1 << 20), DemoCommand.readAt(local, 0, 1 << 20));
        System.out.printf("      guest's pattern at byte %d: %s; the image's own bytes elsewhere: %s%n", patternOffset,
            patternOk ? "present" : "MISSING", restOk ? "identical" : "DIFFERENT");
        if (patternOk && restOk) {
            System.out.println("OK: the guest ran from an image pulled lazily from the provider; the local file is now complete and served from disk.");
            return 0;
        }
        System.out.println("FAILED: the local file does not hold the image plus the guest's writes");
        return 1;
    }

    private int boot(final QemuGuest guest, final LazyStore store) throws Exception {
        guest.prepare();
        step("3/4", "booting a QEMU guest (TCG) with the lazily filled disk as its root file system while the fill runs");
        final AtomicLong demandAtInit = new AtomicLong(-1);
        final QemuGuest.Result r = guest.bootFromDisk(socket, "rw", queues, Duration.ofSeconds(timeoutSeconds),
            () -> demandAtInit.set(store.bytesFetchedOnDemand()), "lazyblk.diskmd5=0");
        System.out.printf("      the disk's init ran %d ms after QEMU started, with %.1f KiB pulled on demand by then;"
                + " %d of %d pages were local when the guest finished%n",
            r.millisToInitMarker(), demandAtInit.get() / 1024.0, store.localPages(), store.pageCount());
        System.out.println("      guest says: " + r.resultLine().orElse("(no result line; console log: " + r.logFile() + ")"));
        if (!r.ok()) {
            System.out.println("FAILED: the guest test did not pass; its console log is " + r.logFile());
            return 1;
        }
        patternOffset = Long.parseLong(r.resultField("pattern_off").orElse("-1"));
        return 0;
    }

    private int frontEnd() throws Exception {
        step("3/4", (QemuGuest.available() ? "" : "QEMU is not installed (" + QemuGuest.unavailableReason() + "); ")
            + "driving the lazily filled disk with the built-in front end while the fill runs");
        return FrontEndDemo.exercise(socket, golden);
    }

}
