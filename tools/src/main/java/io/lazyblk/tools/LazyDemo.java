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

import static io.lazyblk.tools.DemoCommand.step;

/**
 * The demo's mission path: an image provider on loopback exports the sample image; the engine starts with an
 * empty local file and fills it lazily while a QEMU guest (or, without QEMU, the built-in front end) works on
 * the disk; then the demo reports the boot, the bytes pulled on demand, the fill time and the switch to disk-only,
 * and checks the local file on the host.
 */
final class LazyDemo {
    private final Path workDir;
    private final Path golden;
    private final Path socket;
    private final int queues;
    private final int timeoutSeconds;
    private final long fillRate;
    private final boolean forceFrontEnd;

    LazyDemo(final Path workDir, final Path golden, final Path socket, final int queues, final int timeoutSeconds,
             final long fillRate, final boolean forceFrontEnd) {
        this.workDir = workDir;
        this.golden = golden;
        this.socket = socket;
        this.queues = queues;
        this.timeoutSeconds = timeoutSeconds;
        this.fillRate = fillRate;
        this.forceFrontEnd = forceFrontEnd;
    }

    int run() throws Exception {
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
                final int rc = !forceFrontEnd && QemuGuest.available() ? boot(store) : frontEnd();
                if (rc != 0) {
                    return rc;
                }
                if (!store.awaitDiskOnly(TimeUnit.SECONDS.toNanos(timeoutSeconds))) {
                    System.out.println("FAILED: the fill did not finish in " + timeoutSeconds + " s (" + store.localPages() + " of "
                        + store.pageCount() + " pages local)");
                    return 1;
                }
                System.out.printf("      fill finished and the engine switched to disk-only %.1f s after it started: %.1f MiB pulled on demand,"
                        + " %.1f MiB in the background; the provider connection is closed%n", (System.nanoTime() - start) / 1e9,
                    store.bytesFetchedOnDemand() / 1048576.0, store.bytesFetchedInBackground() / 1048576.0);
            }
        }
        step("4/4", "checking the local file on the host");
        final long off = QemuGuest.patternOffsetBytes(QemuGuest.DEFAULT_PATTERN_OFFSET_BLOCKS);
        final byte[] pattern = QemuGuest.expectedPattern();
        final boolean patternOk = Arrays.equals(pattern, DemoCommand.readAt(local, off, pattern.length));
        final boolean restOk = Arrays.equals(DemoCommand.readAt(golden, 0, (int) Math.min(off, 1 << 20)),
            DemoCommand.readAt(local, 0, (int) Math.min(off, 1 << 20)));
        System.out.printf("      guest's pattern at byte %d: %s; the image's own bytes elsewhere: %s%n", off,
            patternOk ? "present" : "MISSING", restOk ? "identical" : "DIFFERENT");
        if (patternOk && restOk) {
            System.out.println("OK: the guest ran from an image pulled lazily from the provider; the local file is now complete and served from disk.");
            return 0;
        }
        System.out.println("FAILED: the local file does not hold the image plus the guest's writes");
        return 1;
    }

    private int boot(final LazyStore store) throws Exception {
        final Path scripts = QemuGuest.findGuestScriptsDir().orElse(null);
        if (scripts == null) {
            System.err.println("lazyblk demo: cannot find tools/guest/build-guest.sh above " + Path.of("").toAbsolutePath()
                + "; run the demo from inside the lazyblk repository");
            return 2;
        }
        final QemuGuest guest = new QemuGuest(scripts, guestDir(), workDir.resolve("logs"));
        guest.prepare();
        step("3/4", "booting a QEMU guest (TCG) from the lazily filled disk while the fill runs");
        // Sample the on-demand counter as the guest boots, to report what it had pulled when its init ran.
        final long[] demandAt = new long[1 + timeoutSeconds * 100];
        final long t0 = System.nanoTime();
        final Thread sampler = new Thread(() -> {
            for (int i = 0; i < demandAt.length && !Thread.currentThread().isInterrupted(); i++) {
                demandAt[i] = store.bytesFetchedOnDemand();
                java.util.concurrent.locks.LockSupport.parkNanos(t0 + (i + 1) * 10_000_000L - System.nanoTime());
            }
        }, "demo-sampler");
        sampler.setDaemon(true);
        sampler.start();
        final QemuGuest.Result r = guest.boot(socket, "rw", queues, Duration.ofSeconds(timeoutSeconds));
        sampler.interrupt();
        final int initSlot = (int) Math.min(demandAt.length - 1, Math.max(0, r.millisToInitMarker() / 10));
        System.out.printf("      guest reached its init %d ms after QEMU started, with %.1f KiB pulled on demand by then"
                + " (its kernel and initramfs come from QEMU, not the disk); %d of %d pages were local when it finished%n",
            r.millisToInitMarker(), demandAt[initSlot] / 1024.0, store.localPages(), store.pageCount());
        System.out.println("      guest says: " + r.resultLine().orElse("(no result line; console log: " + r.logFile() + ")"));
        if (!r.ok()) {
            System.out.println("FAILED: the guest test did not pass; its console log is " + r.logFile());
            return 1;
        }
        return 0;
    }

    private int frontEnd() throws Exception {
        step("3/4", (QemuGuest.available() ? "" : "QEMU is not installed (" + QemuGuest.unavailableReason() + "); ")
            + "driving the lazily filled disk with the built-in front end while the fill runs");
        return FrontEndDemo.exercise(socket, golden);
    }

    private static Path guestDir() {
        final String env = System.getenv("LAZYBLK_GUEST_DIR");
        return env != null && !env.isEmpty() ? Path.of(env) : Path.of(System.getProperty("user.home"), ".cache", "lazyblk", "guest");
    }
}
