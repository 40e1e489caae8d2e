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
 * {@code lazyblk bench-boot}: the lazy engine against its peers in one run. Boots a QEMU guest whose root disk is
 * (a) a complete local file, (b) pulled lazily from a provider on loopback, (c) copied whole over TCP first; then
 * measures the demand-miss latency against the provider's raw round trip and the background fill rate against a
 * bulk TCP copy of the same image.
 */
@Command(name = "bench-boot", mixinStandardHelpOptions = true,
    description = "Boot time local vs lazy vs copy-first, demand-miss latency vs raw round trip, fill rate vs bulk copy (needs QEMU).")
public final class BootBenchCommand implements Callable<Integer> {
    @Option(names = "--size", defaultValue = "1G", description = "root-disk image size (default ${DEFAULT-VALUE})")
    String size;

    @Option(names = "--work-dir", defaultValue = "${java.io.tmpdir}/lazyblk-bench-boot", description = "scratch space (default ${DEFAULT-VALUE})")
    Path workDir;

    @Option(names = "--miss-only", description = "measure only the demand-miss latency against the raw round trip (no guest boots)")
    boolean missOnly;

    @Option(names = "--timeout", defaultValue = "180", description = "seconds per guest boot before giving up (default ${DEFAULT-VALUE})")
    int timeoutSeconds;

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
        Files.createDirectories(workDir);
        final QemuGuest guest = new QemuGuest(scripts);
        final Path golden = workDir.resolve("golden-" + size + ".img");
        System.err.println("bench-boot: building the " + size + " root-disk image (cached) ...");
        guest.buildRootDisk(golden, size);
        final long imageBytes = Files.size(golden);
        final byte[] secret = new byte[32];
        new SecureRandom().nextBytes(secret);
        final Duration timeout = Duration.ofSeconds(timeoutSeconds);
        try (ImageServer server = ImageServer.start(new InetSocketAddress("127.0.0.1", 0), Map.of("golden", golden), secret,
            ManifestBuilder.DEFAULT_PAGE_SIZE, new ManifestBuilder(workDir.resolve("manifests")))) {
            final InetSocketAddress addr = new InetSocketAddress("127.0.0.1", server.port());
            final String token = AccessToken.mint(secret, "golden", Instant.now().plusSeconds(3600));

            if (missOnly) {
                reportMisses(workDir, addr, token);
                return 0;
            }
            System.err.println("bench-boot: (a) boot from a complete local copy");
            final Path a = workDir.resolve("a.img");
            Files.copy(golden, a, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            settle();
            final long msA;
            try (Engine e = Engine.start(Engine.Options.file(workDir.resolve("a.sock"), a))) {
                msA = boot(guest, workDir.resolve("a.sock"), timeout, null).millisToInitMarker();
            }
            Files.delete(a); // each phase's copy goes once it is measured: 4 GiB of its page cache must not burden the next

            settle();
            System.err.println("bench-boot: (b) boot while pulling lazily from the provider");
            final Path b = fresh(workDir.resolve("b.img"));
            final AtomicLong demandAtInit = new AtomicLong(-1);
            final long msB;
            final double fillSeconds;
            try (Engine e = Engine.startLazy(Engine.Options.file(workDir.resolve("b.sock"), b), lazy(addr, token, 0))) {
                final LazyStore s = e.lazyStore();
                final long t0 = System.nanoTime();
                msB = boot(guest, workDir.resolve("b.sock"), timeout, () -> demandAtInit.set(s.bytesFetchedOnDemand())).millisToInitMarker();
                s.awaitDiskOnly(TimeUnit.SECONDS.toNanos(timeoutSeconds));
                fillSeconds = (System.nanoTime() - t0) / 1e9;
            }
            fresh(b);

            System.err.println("bench-boot: (c) copy the whole image over TCP, then boot");
            final Path c = workDir.resolve("c.img");
            settle();
            final double copySeconds = bulkCopy(golden, c);
            final long msCBoot;
            try (Engine e = Engine.start(Engine.Options.file(workDir.resolve("c.sock"), c))) {
                msCBoot = boot(guest, workDir.resolve("c.sock"), timeout, null).millisToInitMarker();
            }
            Files.delete(c);

            final double bulkMBps = imageBytes / copySeconds / 1e6;
            System.out.printf("%nimage %s (%d bytes), page %d KiB, TCP on loopback%n", golden.getFileName(), imageBytes,
                ManifestBuilder.DEFAULT_PAGE_SIZE >> 10);
            System.out.printf("%-44s %10s%n", "boot: QEMU start to the disk's init", "ms");
            System.out.printf("%-44s %10d%n", "(a) complete local file", msA);
            System.out.printf("%-44s %10d   (%.1f KiB pulled on demand before init)%n", "(b) lazy from the provider", msB, demandAtInit.get() / 1024.0);
            System.out.printf("%-44s %10d   (copy %.0f ms + boot %d ms)%n", "(c) copy whole image first, then boot", (long) (copySeconds * 1000) + msCBoot,
                copySeconds * 1000, msCBoot);
            System.out.printf("ratio (b)/(a) = %.2f   (c)/(a) = %.2f%n", (double) msB / msA, (copySeconds * 1000 + msCBoot) / msA);
            settle();
            reportMisses(workDir, addr, token);
            System.out.printf("%nbackground fill (during boot (b)): %.0f MB/s   bulk TCP copy: %.0f MB/s   ratio %.2f%n",
                imageBytes / fillSeconds / 1e6, bulkMBps, imageBytes / fillSeconds / 1e6 / bulkMBps);
        }
        return 0;
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
        return new Engine.LazySource(addr, "golden", token, 64L << 20, fillRate, Duration.ofSeconds(30));
    }

    private static QemuGuest.Result boot(final QemuGuest guest, final Path sock, final Duration timeout, final Runnable atInit)
        throws Exception {
        final QemuGuest.Result r = guest.bootFromDisk(sock, "boot", 1, timeout, atInit);
        if (!r.ok()) {
            throw new IllegalStateException("the guest did not boot: " + r.resultLine().orElse("no result") + "; log " + r.logFile());
        }
        return r;
    }

    /** Copies {@code src} over a loopback TCP connection into {@code dst} (sendfile both ways); returns seconds. */
    static double bulkCopy(final Path src, final Path dst) throws Exception {
        try (ServerSocketChannel ss = ServerSocketChannel.open().bind(new InetSocketAddress("127.0.0.1", 0))) {
            final long t0 = System.nanoTime();
            final Thread sender = Thread.ofPlatform().start(() -> {
                try (SocketChannel s = ss.accept(); FileChannel in = FileChannel.open(src)) {
                    long done = 0;
                    while (done < in.size()) {
                        done += in.transferTo(done, in.size() - done, s);
                    }
                } catch (final java.io.IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            });
            try (SocketChannel s = SocketChannel.open(ss.getLocalAddress());
                 FileChannel out = FileChannel.open(dst, StandardOpenOption.CREATE, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
                final long size = Files.size(src);
                long done = 0;
                while (done < size) {
                    final long n = out.transferFrom(s, done, size - done);
                    if (n <= 0) {
                        break;
                    }
                    done += n;
                }
                out.force(false);
            }
            sender.join();
            return (System.nanoTime() - t0) / 1e9;
        }
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
