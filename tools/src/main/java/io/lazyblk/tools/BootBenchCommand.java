package io.lazyblk.tools;

import io.lazyblk.blk.LazyStore;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.persistence.PageStateFile;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.tcp.TcpPageSource;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.tools.frontend.BenchOptions;
import io.lazyblk.tools.frontend.BenchPattern;
import io.lazyblk.tools.frontend.BenchResult;
import io.lazyblk.tools.frontend.BenchRunner;
import io.lazyblk.tools.guest.QemuGuest;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.InetSocketAddress;
import java.nio.channels.FileChannel;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.SecureRandom;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * {@code lazyblk bench-boot}: the lazy engine against its peers in one run, in interleaved rounds (medians). Per round:
 * a guest boots (a) from a complete local copy (made and synced once, before the rounds, so no boot pays for its
 * writeback) and (b) lazily from a provider on loopback, default settings; the fill alone (serve start to disk-only, no
 * guest) races {@code qemu-img convert} from {@code qemu-nbd} on loopback to a sparse file, both synced. Before the
 * rounds, two fresh engines boot one after the other at {@code --fill-rate 1M} against a provider that has no boot
 * profile yet: the second boot's on-demand bytes against the first's show what the learned profile saves. Then the
 * demand-miss latency against the provider's raw round trip.
 */
@Command(name = "bench-boot", mixinStandardHelpOptions = true,
    description = {"Boot time local vs lazy (medians of interleaved rounds), fill alone vs qemu-img convert from qemu-nbd,",
        "the filled file's sparseness, what a learned boot profile saves, demand-miss latency vs raw round trip (needs QEMU).",
        "--realboot uses a Debian minbase system with 2 GiB of ballast in a 4 GiB image (tools/guest/build-realboot.sh)."})
public final class BootBenchCommand implements Callable<Integer> {
    @Option(names = "--size", defaultValue = "1G", description = "root-disk image size of the busybox image (default ${DEFAULT-VALUE})")
    String size;

    @Option(names = "--realboot", description = "boot a Debian minbase system, 4 GiB image with 2 GiB ballast (built once; needs root, debootstrap)")
    boolean realboot;

    @Option(names = "--image", description = "boot this golden image (a root disk from tools/guest/build-rootdisk.sh) instead of building one")
    Path image;

    @Option(names = "--test", description = "the disk's test: boot (time to its init) or realboot (time to ready); default: realboot for --realboot, else boot")
    String test;

    @Option(names = "--rounds", defaultValue = "3", description = "interleaved rounds; medians are reported (default ${DEFAULT-VALUE})")
    int rounds;

    @Option(names = "--work-dir", defaultValue = "${java.io.tmpdir}/lazyblk-bench-boot-${user.name}", description = "scratch space (default ${DEFAULT-VALUE})")
    Path workDir;

    @Option(names = "--miss-only", description = "measure only the demand-miss latency against the raw round trip (no guest boots)")
    boolean missOnly;

    @Option(names = "--no-misses", description = "skip the demand-miss latency measurement")
    boolean noMisses;

    @Option(names = "--boots-only", description = "only the boots (local and lazy, and the profile's two): skip the fill-alone race against qemu-img")
    boolean bootsOnly;

    @Option(names = "--timeout", defaultValue = "180s", converter = DurationConverter.class, paramLabel = "DURATION", description = "how long per guest boot or fill before giving up (default ${DEFAULT-VALUE})")
    java.time.Duration timeout;
    private long timeoutSeconds() {
        return timeout.toSeconds();
    }

    @Override
    public Integer call() throws Exception {
        if (!QemuGuest.available()) {
            System.err.println("lazyblk bench-boot: needs QEMU (" + QemuGuest.unavailableReason() + "): apt-get install qemu-system-x86");
            return 1;
        }
        final Path scripts = QemuGuest.findGuestScriptsDir().orElse(null);
        if (scripts == null) {
            System.err.println("lazyblk bench-boot: run it from inside the lazyblk repository (it needs tools/guest)");
            return 2;
        }
        if (rounds < 1) {
            System.err.println("lazyblk bench-boot: --rounds must be at least 1");
            return 2;
        }
        WorkDir.prepare(workDir);
        final QemuGuest guest = new QemuGuest(scripts);
        final Path golden = golden(guest, scripts);
        if (golden == null) {
            return 1;
        }
        final String testName = test != null ? test : realboot ? "realboot" : "boot";
        final long imageBytes = Files.size(golden);
        final long goldenAllocated = allocatedBytes(golden);
        final byte[] secret = new byte[32];
        new SecureRandom().nextBytes(secret);
        final Duration timeout = Duration.ofSeconds(timeoutSeconds());
        final Path manifests = workDir.resolve("manifests");
        forgetProfiles(golden, manifests); // the first boot below must be the provider's first of this image
        try (ImageServer server = ImageServer.start(new InetSocketAddress("127.0.0.1", 0), Map.of("golden", golden), secret,
            ManifestBuilder.DEFAULT_PAGE_SIZE, new ManifestBuilder(manifests))) {
            final InetSocketAddress addr = new InetSocketAddress("127.0.0.1", server.port());
            final String token = AccessToken.mint(secret, "golden", Instant.now().plusSeconds(7200));
            if (missOnly) {
                reportMisses(workDir, addr, token);
                return 0;
            }
            final Runner run = new Runner(guest, testName, timeout, addr, token);

            System.err.println("bench-boot: two fresh engines boot one after the other at --fill-rate 1M (the provider learns a boot profile)");
            final long[] firstDemand = run.demandAtReady(1 << 20);
            waitForProfile(server);
            final long[] secondDemand = run.demandAtReady(1 << 20);

            System.err.println("bench-boot: local copy, made once and synced before the rounds");
            final Path local = workDir.resolve("local.img");
            copySparse(golden, local);
            settle();
            final long[] msLocal = new long[rounds];
            final long[] msLazy = new long[rounds];
            final double[] toLocalWithGuest = new double[rounds];
            final double[] fillAlone = new double[rounds];
            final double[] convert = new double[rounds];
            final long[] filledAllocated = new long[rounds];
            final long[] background = new long[rounds];
            final long[] demandAtReady = new long[rounds];
            final Path nbd = QemuGuest.findOnPath("qemu-nbd").orElse(null);
            final Path qemuImg = QemuGuest.findOnPath("qemu-img").orElse(null);
            for (int r = 0; r < rounds; r++) {
                // Alternate the order of each pair, so neither side always runs first after a settle.
                final boolean flip = (r & 1) == 1;
                for (int half = 0; half < 2; half++) {
                    settle();
                    if ((half == 0) != flip) {
                        System.err.printf("bench-boot: round %d/%d: boot from the local copy%n", r + 1, rounds);
                        msLocal[r] = run.bootLocal(local);
                        System.err.printf("bench-boot:   local boot %d ms%n", msLocal[r]);
                    } else {
                        System.err.printf("bench-boot: round %d/%d: boot lazily (default settings), then wait for disk-only%n", r + 1, rounds);
                        final long[] lazy = run.bootLazy();
                        msLazy[r] = lazy[0];
                        demandAtReady[r] = lazy[1];
                        toLocalWithGuest[r] = lazy[2] / 1e9;
                        background[r] = lazy[3];
                        filledAllocated[r] = lazy[4];
                        System.err.printf("bench-boot:   lazy boot %d ms (%.1f MB on demand), fully local after %.2f s%n", msLazy[r],
                            demandAtReady[r] / 1e6, toLocalWithGuest[r]);
                    }
                }
                for (int half = 0; half < 2 && !bootsOnly; half++) {
                    settle();
                    if ((half == 0) != flip) {
                        System.err.printf("bench-boot: round %d/%d: fill alone (no guest)%n", r + 1, rounds);
                        fillAlone[r] = run.fillAlone() / 1e9;
                        System.err.printf("bench-boot:   fill alone %.2f s%n", fillAlone[r]);
                    } else if (nbd != null && qemuImg != null) {
                        System.err.printf("bench-boot: round %d/%d: qemu-img convert from qemu-nbd%n", r + 1, rounds);
                        convert[r] = convertFromNbd(nbd, qemuImg, golden, workDir.resolve("convert.img"));
                        System.err.printf("bench-boot:   qemu-img convert %.2f s%n", convert[r]);
                    }
                }
            }
            Files.deleteIfExists(local);

            System.out.printf("%nimage %s: %d bytes, %d allocated; engine page %d KiB; provider on loopback TCP; test %s; %d round(s), medians%n",
                golden.getFileName(), imageBytes, goldenAllocated, Engine.DEFAULT_PAGE_SIZE >> 10, testName, rounds);
            final String to = "realboot".equals(testName) ? "ready" : "init";
            System.out.printf("%-62s %12s%n", "measure", "value");
            final double[] paired = new double[rounds];
            for (int r = 0; r < rounds; r++) {
                paired[r] = (double) msLazy[r] / msLocal[r];
            }
            System.out.printf("%-62s %12.2f   (%d ms / %d ms; QEMU start to %s)%n", "lazy boot / local boot, default settings",
                (double) median(msLazy) / median(msLocal), median(msLazy), median(msLocal), to);
            System.out.printf("%-62s %12.2f   (each round's lazy boot over its local one: %s)%n", "  the same, median of the rounds' ratios",
                median(paired), Arrays.toString(Arrays.stream(paired).map(x -> Math.round(x * 100) / 100.0).toArray()));
            if (bootsOnly) {
                System.out.printf("%-62s %12s%n", "fill alone / qemu-img convert", "skipped (--boots-only)");
            } else if (nbd != null && qemuImg != null) {
                System.out.printf("%-62s %12.2f   (%.2f s / %.2f s)%n", "fill alone (serve start -> disk-only) / qemu-img convert",
                    median(fillAlone) / median(convert), median(fillAlone), median(convert));
            } else {
                System.out.printf("%-62s %12s   (fill alone %.2f s; apt-get install qemu-utils for the comparison)%n",
                    "fill alone / qemu-img convert", "n/a", median(fillAlone));
            }
            System.out.printf("%-62s %12.2f   (%d / %d bytes)%n", "allocated bytes of the filled local file / golden's",
                (double) median(filledAllocated) / goldenAllocated, median(filledAllocated), goldenAllocated);
            System.out.printf("%-62s %12.2f   (%d / %d bytes)%n", "bytes the background fill moved / golden's allocated",
                (double) median(background) / goldenAllocated, median(background), goldenAllocated);
            System.out.printf("%-62s %12.2f   (%.1f MB -> %.1f MB at %s)%n", "second boot's on-demand bytes / first boot's (--fill-rate 1M)",
                (double) secondDemand[0] / Math.max(1, firstDemand[0]), firstDemand[0] / 1e6, secondDemand[0] / 1e6, to);
            System.out.printf("%-62s %12.2f   %s%n", "time to fully local with a guest booting meanwhile (s)",
                median(toLocalWithGuest), bootsOnly ? "" : String.format("(fill alone %.2f s)", median(fillAlone)));
            System.out.printf("%-62s %12.1f   (first boots, no profile: %d ms; with it: %d ms, --fill-rate 1M)%n",
                "on-demand MB before ready, default settings", median(demandAtReady) / 1e6, firstDemand[1], secondDemand[1]);
            if (!noMisses) {
                settle();
                reportMisses(workDir, addr, token);
            }
        }
        return 0;
    }

    /** The golden image: {@code --image}, or the realboot image, or the busybox root disk of {@code --size}; null if it cannot be had. */
    private Path golden(final QemuGuest guest, final Path scripts) throws Exception {
        if (image != null) {
            if (!Files.isRegularFile(image)) {
                System.err.println("lazyblk bench-boot: --image " + image + " is not a file");
                return null;
            }
            return image;
        }
        if (realboot) {
            final Path out = workDir.resolve("realboot-4G.img");
            System.err.println("bench-boot: building the realboot image (cached; the first time debootstraps Debian minbase) ...");
            final int rc = new ProcessBuilder(scripts.resolve("build-realboot.sh").toString(), out.toString()).inheritIO().start().waitFor();
            if (rc != 0) {
                System.err.println("lazyblk bench-boot: tools/guest/build-realboot.sh failed (exit " + rc + "); see its output above");
                return null;
            }
            return out;
        }
        final Path out = workDir.resolve("golden-" + size + ".img");
        System.err.println("bench-boot: building the " + size + " root-disk image (cached) ...");
        guest.buildRootDisk(out, size);
        return out;
    }

    /** The guest boots and engines of one run, on one provider. */
    private final class Runner {
        private final QemuGuest guest;
        private final String testName;
        private final Duration timeout;
        private final InetSocketAddress addr;
        private final String token;

        Runner(final QemuGuest guest, final String testName, final Duration timeout, final InetSocketAddress addr, final String token) {
            this.guest = guest;
            this.testName = testName;
            this.timeout = timeout;
            this.addr = addr;
            this.token = token;
        }

        private long ready(final QemuGuest.Result r) {
            return "realboot".equals(testName) ? r.millisToResultMarker() : r.millisToInitMarker();
        }

        private QemuGuest.Result boot(final Path sock, final Runnable atReady) throws Exception {
            final QemuGuest.Result r = "realboot".equals(testName)
                ? guest.bootFromDisk(sock, testName, 1, timeout, null, atReady)
                : guest.bootFromDisk(sock, testName, 1, timeout, atReady);
            if (!r.ok()) {
                throw new IllegalStateException("the guest did not boot: " + r.resultLine().orElse("no result") + "; log " + r.logFile());
            }
            return r;
        }

        long bootLocal(final Path local) throws Exception {
            try (Engine e = Engine.start(Engine.Options.file(workDir.resolve("a.sock"), local))) {
                return ready(boot(workDir.resolve("a.sock"), null));
            }
        }

        /** A fresh engine boots the guest: {ms to ready, on-demand bytes at ready}. */
        long[] demandAtReady(final long fillRate) throws Exception {
            final Path f = fresh(workDir.resolve("p.img"));
            final AtomicLong demand = new AtomicLong(-1);
            final long ms;
            try (Engine e = Engine.startLazy(Engine.Options.file(workDir.resolve("p.sock"), f), lazy(addr, token, fillRate))) {
                final LazyStore s = e.lazyStore();
                ms = ready(boot(workDir.resolve("p.sock"), () -> demand.set(s.bytesFetchedOnDemand())));
            }
            fresh(f);
            return new long[] {demand.get(), ms};
        }

        /** {ms to ready, on-demand bytes at ready, ns from serve start to disk-only, background bytes, filled file's allocated bytes}. */
        long[] bootLazy() throws Exception {
            final Path f = fresh(workDir.resolve("b.img"));
            final AtomicLong demand = new AtomicLong(-1);
            final long t0 = System.nanoTime();
            final long ms;
            final long toLocal;
            final long bg;
            try (Engine e = Engine.startLazy(Engine.Options.file(workDir.resolve("b.sock"), f), lazy(addr, token, 0))) {
                final LazyStore s = e.lazyStore();
                ms = ready(boot(workDir.resolve("b.sock"), () -> demand.set(s.bytesFetchedOnDemand())));
                if (!s.awaitDiskOnly(TimeUnit.SECONDS.toNanos(timeoutSeconds()))) {
                    throw new IllegalStateException("the lazy engine did not reach disk-only within " + timeoutSeconds() + " s");
                }
                toLocal = System.nanoTime() - t0;
                bg = s.bytesFetchedInBackground();
            }
            final long allocated = allocatedBytes(f);
            fresh(f);
            return new long[] {ms, demand.get(), toLocal, bg, allocated};
        }

        /** Nanoseconds from serve start to disk-only, no guest. */
        long fillAlone() throws Exception {
            final Path f = fresh(workDir.resolve("f.img"));
            final long t0 = System.nanoTime();
            final long took;
            try (Engine e = Engine.startLazy(Engine.Options.file(workDir.resolve("f.sock"), f), lazy(addr, token, 0))) {
                if (!e.lazyStore().awaitDiskOnly(TimeUnit.SECONDS.toNanos(timeoutSeconds()))) {
                    throw new IllegalStateException("the fill did not reach disk-only within " + timeoutSeconds() + " s");
                }
                took = System.nanoTime() - t0;
            }
            fresh(f);
            return took;
        }
    }

    /**
     * Seconds for {@code qemu-img convert} to copy {@code golden} from {@code qemu-nbd} on loopback into a sparse raw
     * file, made durable at the end as the engine's switch to disk-only is (an fsync once it exits). qemu-nbd is up and
     * listening before the clock starts.
     */
    static double convertFromNbd(final Path nbd, final Path qemuImg, final Path golden, final Path out) throws Exception {
        Files.deleteIfExists(out);
        final int port;
        try (ServerSocketChannel probe = ServerSocketChannel.open().bind(new InetSocketAddress("127.0.0.1", 0))) {
            port = ((InetSocketAddress) probe.getLocalAddress()).getPort();
        }
        final Process server = new ProcessBuilder(nbd.toString(), "--read-only", "--persistent", "--shared=4", "--bind=127.0.0.1",
            "--port=" + port, "--format=raw", "--export-name=golden", golden.toString())
            .redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        try {
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (true) {
                try (SocketChannel c = SocketChannel.open(new InetSocketAddress("127.0.0.1", port))) {
                    break;
                } catch (final java.io.IOException notYet) {
                    if (System.nanoTime() > deadline || !server.isAlive()) {
                        throw new IllegalStateException("qemu-nbd did not start listening on port " + port);
                    }
                    Thread.sleep(20);
                }
            }
            final long t0 = System.nanoTime();
            // Its default cache mode for the target (unsafe: no flushes), then one fsync: faster here than -t writeback.
            final int rc = new ProcessBuilder(qemuImg.toString(), "convert", "-f", "raw", "-O", "raw",
                "nbd://127.0.0.1:" + port + "/golden", out.toString()).inheritIO().start().waitFor();
            if (rc != 0) {
                throw new IllegalStateException("qemu-img convert failed with exit " + rc);
            }
            try (FileChannel ch = FileChannel.open(out, StandardOpenOption.WRITE)) {
                ch.force(true);
            }
            final double s = (System.nanoTime() - t0) / 1e9;
            Files.delete(out);
            return s;
        } finally {
            server.destroy();
            server.waitFor();
        }
    }

    /** Bytes the file system allocated to {@code f} ({@code st_blocks} x 512): what "sparse" is measured by. */
    static long allocatedBytes(final Path f) throws Exception {
        final Process p = new ProcessBuilder("stat", "-c", "%b %B", f.toString()).redirectErrorStream(true).start();
        final String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8).trim();
        if (p.waitFor() != 0) {
            throw new IllegalStateException("stat " + f + ": " + out);
        }
        final String[] parts = out.split(" ");
        return Long.parseLong(parts[0]) * Long.parseLong(parts[1]);
    }

    private static void copySparse(final Path from, final Path to) throws Exception {
        Files.deleteIfExists(to);
        final int rc = new ProcessBuilder("cp", "--sparse=always", from.toString(), to.toString()).inheritIO().start().waitFor();
        if (rc != 0) {
            throw new IllegalStateException("cp --sparse=always " + from + " " + to + " failed with exit " + rc);
        }
    }

    /** Removes the provider's learned boot profiles of {@code golden}, so the next boot is its first. */
    private static void forgetProfiles(final Path golden, final Path manifests) throws java.io.IOException {
        Files.deleteIfExists(golden.resolveSibling(golden.getFileName() + ManifestBuilder.PROFILE_SUFFIX));
        if (Files.isDirectory(manifests)) {
            try (var in = Files.list(manifests)) {
                for (final Path f : (Iterable<Path>) in::iterator) {
                    final String n = f.getFileName().toString();
                    if (n.startsWith(golden.getFileName().toString()) && n.endsWith(ManifestBuilder.PROFILE_SUFFIX)) {
                        Files.delete(f);
                    }
                }
            }
        }
    }

    /** Waits (bounded) until the provider has a boot profile for {@code golden} to hand out. */
    private static void waitForProfile(final ImageServer server) throws Exception {
        // The first engine's connections closed with it: the provider merges that boot as it sees the close.
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (server.profileForTesting("golden", false).length == 0) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("the provider learned no boot profile from the first boot within 10 s");
            }
            Thread.sleep(20);
        }
    }

    private static long median(final long[] v) {
        final long[] c = v.clone();
        Arrays.sort(c);
        return c[c.length / 2];
    }

    private static double median(final double[] v) {
        final double[] c = v.clone();
        Arrays.sort(c);
        return c[c.length / 2];
    }

    /** Demand-miss latency through the engine (4 KiB random reads at QD1, fill stopped) and the raw round trip. */
    private static void reportMisses(final Path workDir, final InetSocketAddress addr, final String token) throws Exception {
        System.err.println("bench-boot: demand-miss latency through the engine vs the provider's raw round trip");
        final BenchResult miss;
        final Path m = fresh(workDir.resolve("m.img"));
        try (Engine e = Engine.startLazy(Engine.Options.file(workDir.resolve("m.sock"), m), lazy(addr, token, 1024))) {
            // --fill-rate 1k: the background fill stands still, so nearly every random read is a miss.
            miss = BenchRunner.run(new BenchOptions(workDir.resolve("m.sock"), BenchPattern.RANDREAD, 4096, 1, 2, 1, 7));
        }
        fresh(m);
        final long[] raw = rawRoundTrips(addr, token, 2000);
        System.out.printf("%ndemand miss through the engine (4 KiB read, QD1): p50 %.0f us  p99 %.0f us%n", miss.p50Us(), miss.p99Us());
        System.out.printf("provider raw round trip (one %d KiB page):   p50 %.0f us  p99 %.0f us   -> engine overhead p50 %.0f us%n",
            ManifestBuilder.DEFAULT_PAGE_SIZE >> 10, raw[0] / 1e3, raw[1] / 1e3, miss.p50Us() - raw[0] / 1e3);
    }

    /**
     * Writes back every dirty page on the host ({@code sync}) before a measured phase, so no phase pays for the one
     * before it (a 4 GiB copy leaves gigabytes of dirty pages that would otherwise be written back during the next boot).
     */
    static void settle() throws Exception {
        new ProcessBuilder("sync").inheritIO().start().waitFor();
    }

    static Path fresh(final Path local) throws java.io.IOException {
        Files.deleteIfExists(local);
        Files.deleteIfExists(PageStateFile.beside(local));
        Files.deleteIfExists(PeerExport.manifestBeside(local));
        return local;
    }

    private static Engine.LazySource lazy(final InetSocketAddress addr, final String token, final long fillRate) {
        return new Engine.LazySource(addr, "golden", token, 256L << 20, fillRate, Duration.ofSeconds(30)); // serve's defaults
    }

    /** p50 and p99 in ns of single-page demand fetches straight from a {@link TcpPageSource}, one at a time. */
    static long[] rawRoundTrips(final InetSocketAddress addr, final String token, final int n) throws Exception {
        try (TcpPageSource src = TcpPageSource.connect(addr, "golden", token); Arena arena = Arena.ofShared()) {
            final MemorySegment buf = arena.allocate(src.manifest().pageSize(), 4096);
            final long[] took = new long[n];
            final SplittableRandom r = new SplittableRandom(3);
            final java.util.concurrent.Semaphore done = new java.util.concurrent.Semaphore(0);
            final PageSource.Listener l = (tag, first, count, status) -> done.release();
            for (int i = 0; i < n; i++) {
                final long t0 = System.nanoTime();
                while (!src.fetch(r.nextInt(src.manifest().pageCount()), 1, buf, PageSource.DEMAND, i, l)) {
                    Thread.onSpinWait();
                }
                done.acquire();
                took[i] = System.nanoTime() - t0;
            }
            Arrays.sort(took);
            return new long[] {took[n / 2], took[n * 99 / 100]};
        }
    }
}
