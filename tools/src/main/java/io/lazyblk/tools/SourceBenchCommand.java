package io.lazyblk.tools;

import io.lazyblk.blk.LazyStore;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.tools.frontend.BenchOptions;
import io.lazyblk.tools.frontend.BenchPattern;
import io.lazyblk.tools.frontend.BenchResult;
import io.lazyblk.tools.frontend.BenchRunner;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.InetSocketAddress;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.SecureRandom;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;

/**
 * {@code lazyblk bench-sources}: the page sources side by side in one run, each against the raw cost of what it
 * does: tcp:// against a bare round trip and a bulk TCP copy on loopback, shm:// against pread of the image file (what
 * it does) and memcpy out of a mapping.
 * For each: the demand-miss latency through the engine (4 KiB random reads at QD1, fill stopped), in rounds that each
 * measure the raw cost right before the misses (medians over the rounds, and each round's overhead), and the engine's
 * fill throughput (the whole image, nothing else running).
 */
@Command(name = "bench-sources", mixinStandardHelpOptions = true,
    description = "Demand-miss latency and fill throughput through the engine for tcp:// and shm://, against a bare TCP round trip and"
        + " bulk copy, and pread and memcpy of the image (no QEMU needed).")
public final class SourceBenchCommand implements Callable<Integer> {
    @Option(names = "--size", defaultValue = "1G", converter = SizeConverter.class, description = "image size (default ${DEFAULT-VALUE})")
    long size;

    @Option(names = "--work-dir", defaultValue = "${java.io.tmpdir}/lazyblk-bench-sources-${user.name}", description = "scratch space for the image (default ${DEFAULT-VALUE})")
    Path workDir;

    @Option(names = "--local-dir", description = "where the engine's local files go (default: /dev/shm if it is there, so the"
        + " local disk does not bound the fill; else --work-dir)")
    Path localDir;

    @Option(names = "--seconds", defaultValue = "1", description = "seconds of demand misses measured per source, after a 1 s warm-up;"
        + " ends early once every page was read (default ${DEFAULT-VALUE})")
    int seconds;

    @Option(names = "--rounds", defaultValue = "5", description = "rounds of demand misses, each measured right after its raw cost"
        + " (a bare round trip of a new page of the file, a memcpy of a page first touched), so that a slow spell of the host"
        + " weighs on both sides of an overhead; the table gives the medians (default ${DEFAULT-VALUE})")
    int rounds;

    @Option(names = "--provider-page-size", defaultValue = "64k", converter = SizeConverter.class,
        description = "the provider's page size, the unit its SHA-256 hashes cover (default ${DEFAULT-VALUE}); the engine "
            + "still fetches 64 KiB pages (or the provider's, if larger), and answers a miss once the provider pages it "
            + "needs are checked: smaller provider pages mean less to hash per miss and a larger manifest")
    long providerPageSize;

    @Override
    public Integer call() throws Exception {
        if (rounds < 1 || rounds > 100) {
            System.err.println("bench-sources: --rounds must be 1..100, got " + rounds);
            return 2;
        }
        WorkDir.prepare(workDir);
        final Path local = localDir != null ? localDir : Files.isDirectory(Path.of("/dev/shm")) ? Path.of("/dev/shm") : workDir;
        final Path image = workDir.resolve("image-" + size + ".raw");
        if (!Files.exists(image) || Files.size(image) != size) {
            System.err.println("bench-sources: writing a " + (size >> 20) + " MiB image of random bytes ...");
            writeRandom(image, size);
        }
        warm(image);
        if (providerPageSize < io.lazyblk.pagemap.PageGeometry.MIN_PAGE || providerPageSize > io.lazyblk.pagemap.PageGeometry.MAX_PAGE
            || Long.bitCount(providerPageSize) != 1) {
            System.err.println("bench-sources: --provider-page-size must be a power of two from 4k to 4M, got " + providerPageSize);
            return 2;
        }
        final int page = (int) Math.max(Engine.DEFAULT_PAGE_SIZE, providerPageSize);
        enginePage = page;
        final byte[] secret = new byte[32];
        new SecureRandom().nextBytes(secret);
        final Path sock = workDir.resolve("cache.sock");
        final ImageExport export = ImageExport.of("golden", image, (int) providerPageSize, new ManifestBuilder(workDir.resolve("manifests")),
            ManifestBuilder.Progress.NONE);
        try (ImageServer server = ImageServer.start(new InetSocketAddress("127.0.0.1", 0), sock, List.of(export), secret)) {
            final InetSocketAddress addr = new InetSocketAddress("127.0.0.1", server.port());
            final String token = AccessToken.mint(secret, "golden", Instant.now().plusSeconds(3600));
            final SourceUri tcp = SourceUri.tcp(addr, "golden");
            final SourceUri shm = SourceUri.shm(sock, "golden");

            System.err.println("bench-sources: raw costs (bare TCP round trip and bulk copy, memcpy from a mapping)");
            final long[] rawTcp;
            final long[] rawTcpBusy;
            final double bulkTcp;
            try (BareTcp bare = new BareTcp(page)) {
                rawTcp = roundTrips(bare);
                // The same with one core taken by a busy-polling thread, as the polling front end takes one in the
                // engine's miss measurement: on a 2-core host, what is left for the provider and the client.
                final java.util.concurrent.atomic.AtomicBoolean spin = new java.util.concurrent.atomic.AtomicBoolean(true);
                final Thread poller = Thread.ofPlatform().daemon().start(() -> {
                    while (spin.get()) {
                        Thread.onSpinWait();
                    }
                });
                try {
                    rawTcpBusy = roundTrips(bare);
                } finally {
                    spin.set(false);
                    poller.join();
                }
                final long t0 = System.nanoTime();
                bare.exchange(size);
                bulkTcp = size / ((System.nanoTime() - t0) / 1e9) / 1e6;
            }
            final double[][] sourceFill = new double[2][];
            final double[] copy = memcpy(image, page);
            final double preadAll = preadMBps(image, page);
            // Rounds: each takes a source's raw cost and then its misses through the engine, one right after the other.
            // The overhead of a round is its miss p50 less its raw p50; the table gives the medians over the rounds.
            final double[][][] raw = new double[2][rounds][];
            final double[][][] miss = new double[2][rounds][];
            final double[][] mapped = new double[rounds][];
            try (BareTcp bare = new BareTcp(page, image)) {
                final int pages = (int) (size / page);
                for (int r = 0; r < rounds; r++) {
                    System.err.println("bench-sources: round " + (r + 1) + " of " + rounds + ": tcp:// then shm:// demand misses,"
                        + " each after its raw cost");
                    // From the image file at new pages each time, as a miss must: neither end finds the page in its caches.
                    final SplittableRandom order = new SplittableRandom(3 + r);
                    final long[] file = roundTrips(() -> bare.roundTrip((long) order.nextInt(pages) * page));
                    raw[0][r] = new double[] {file[0] / 1e3, file[1] / 1e3};
                    miss[0][r] = misses(local, tcp, token, 7 + r);
                    raw[1][r] = preadPages(image, page, 9 + r);
                    mapped[r] = firstTouch(image, page, 9 + r);
                    miss[1][r] = misses(local, shm, token, 7 + r);
                }
            }
            final double[] fill = new double[2];
            final double[][] seq = new double[2][];
            final double[] seqLocal = new double[2];
            final SourceUri[] uris = {tcp, shm};
            for (int i = 0; i < 2; i++) {
                System.err.println("bench-sources: " + uris[i].scheme() + ":// sequential reads, then a full fill");
                seq[i] = sequential(local, uris[i], token);
                final double[] f = fillMBps(local, uris[i], token);
                fill[i] = f[0];
                seqLocal[i] = f[1];
                sourceFill[i] = new double[] {sourceFillMBps(uris[i], token, page)};
            }
            System.err.println("bench-sources: tcp:// demand fetches while background fetches fill the window, over one connection"
                + " and over two lanes");
            final double[][] underFill = new double[2][];
            try (io.lazyblk.pagemap.PageSource one = io.lazyblk.pull.tcp.TcpPageSource.connect(addr, "golden", token)) {
                underFill[0] = demandUnderFill(one, page);
            }
            try (io.lazyblk.pagemap.PageSource two = tcp.open(token, Duration.ofSeconds(10))) {
                underFill[1] = demandUnderFill(two, page);
            }
            final double[] tcpMiss = medians(miss[0]);
            final double[] tcpFile = medians(raw[0]);
            final double[] shmMiss = medians(miss[1]);
            final double[] shmPread = medians(raw[1]);
            final double[] shmCopy = medians(mapped);
            final double[] tcpOverhead = overheads(miss[0], raw[0]);
            final double[] shmOverhead = overheads(miss[1], raw[1]);
            System.out.printf("%nimage %d MiB of random bytes, %d KiB pages (the provider's, each with its SHA-256: %d KiB); engine local"
                + " files in %s%n", size >> 20, page >> 10, providerPageSize >> 10, local);
            System.out.printf("%-10s %-44s %10s %10s%n", "source", "4 KiB read at QD1 through the engine (median of "
                + rounds + " rounds)", "p50 us", "p99 us");
            System.out.printf("%-10s %-44s %10.1f %10.1f   (%.0f misses a round)%n", "tcp://", "demand miss", tcpMiss[0], tcpMiss[1], tcpMiss[2]);
            System.out.printf("%-10s %-44s %10.1f %10.1f   miss overhead p50 %.1f us%n", "", "raw: bare round trip of a new page of the file",
                tcpFile[0], tcpFile[1], tcpOverhead[rounds / 2]);
            System.out.printf("%-10s %-44s %10.1f %10.1f   miss overhead p50 %.1f us%n", "", "raw: bare round trip of one page (TCP)",
                rawTcp[0] / 1e3, rawTcp[1] / 1e3, tcpMiss[0] - rawTcp[0] / 1e3);
            System.out.printf("%-10s %-44s %10.1f %10.1f   miss overhead p50 %.1f us%n", "", "(the same with one core busy-polling)",
                rawTcpBusy[0] / 1e3, rawTcpBusy[1] / 1e3, tcpMiss[0] - rawTcpBusy[0] / 1e3);
            System.out.printf("%-10s %-44s %10.1f %10.1f   (%.0f misses a round)%n", "shm://", "demand miss", shmMiss[0], shmMiss[1], shmMiss[2]);
            System.out.printf("%-10s %-44s %10.1f %10.1f   miss overhead p50 %.1f us%n", "", "raw: pread of a page of the file",
                shmPread[0], shmPread[1], shmOverhead[rounds / 2]);
            System.out.printf("%-10s %-44s %10.1f %10.1f   miss overhead p50 %.1f us%n", "", "(memcpy of a page first touched in a mapping)",
                shmCopy[0], shmCopy[1], shmMiss[0] - shmCopy[0]);
            System.out.printf("%-10s %-44s %10.1f %10.1f%n", "", "(memcpy of a page already touched)", copy[1], copy[2]);
            System.out.printf("%-10s %-44s %s%n", "", "tcp:// overhead over the file round trip, by round", perRound(miss[0], raw[0]));
            System.out.printf("%-10s %-44s %s%n", "", "shm:// overhead over the pread, by round", perRound(miss[1], raw[1]));
            System.out.printf("%n%-10s %-44s %10s %10s%n", "source", "4 KiB reads at QD1, front to back", "p50 us", "p99 us");
            for (int i = 0; i < 2; i++) {
                System.out.printf("%-10s %-44s %10.1f %10.1f   (a miss, then %d reads of its bytes; against %.1f us p50 once the"
                    + " disk is local)%n", uris[i].scheme() + "://", "absent pages", seq[i][0], seq[i][1], page / 4096 - 1, seqLocal[i]);
            }
            System.out.printf("%n%-10s %-44s %10s %10s%n", "source", "one demand fetch while the fill runs (source)", "p50 us", "p99 us");
            System.out.printf("%-10s %-44s %10.1f %10.1f   (idle: %.1f us p50)%n", "tcp://", "over one connection", underFill[0][0],
                underFill[0][1], underFill[0][2]);
            System.out.printf("%-10s %-44s %10.1f %10.1f   (idle: %.1f us p50; demand and background lanes, as the engine uses)%n", "",
                "over two lanes", underFill[1][0], underFill[1][1], underFill[1][2]);
            System.out.printf("%n%-10s %-44s %10s %10s%n", "source", "fill of the whole image", "MB/s", "ratio");
            System.out.printf("%-10s %-44s %10.0f %10.2f   (against a bare bulk TCP copy, %.0f MB/s)%n", "tcp://",
                "the source alone, into page buffers", sourceFill[0][0], sourceFill[0][0] / bulkTcp, bulkTcp);
            System.out.printf("%-10s %-44s %10.0f %10.2f%n", "", "through the engine (verify, write, sync)", fill[0], fill[0] / bulkTcp);
            System.out.printf("%-10s %-44s %10.0f %10.2f   (against single-core memcpy from a mapping already touched, %.0f MB/s;"
                + " %.2f against one from a fresh mapping, %.0f MB/s; %.2f against single-core pread of the file, %.0f MB/s)%n", "shm://",
                "the source alone, into page buffers", sourceFill[1][0], sourceFill[1][0] / copy[0], copy[0],
                sourceFill[1][0] / copy[3], copy[3], sourceFill[1][0] / preadAll, preadAll);
            System.out.printf("%-10s %-44s %10.0f %10.2f   (%.2f against the fresh mapping, %.2f against pread)%n", "",
                "through the engine (verify, write, sync)", fill[1], fill[1] / copy[0], fill[1] / copy[3], fill[1] / preadAll);
        }
        return 0;
    }

    private static long[] roundTrips(final BareTcp bare) throws java.io.IOException {
        return roundTrips(bare::roundTrip);
    }

    /** One round trip that may fail. */
    private interface RoundTrip {
        void run() throws java.io.IOException;
    }

    /** 4000 bare round trips, the first 1000 a warm-up: {p50 ns, p99 ns} of the rest. */
    private static long[] roundTrips(final RoundTrip trip) throws java.io.IOException {
        final long[] took = new long[4000];
        for (int i = 0; i < took.length; i++) {
            final long t0 = System.nanoTime();
            trip.run();
            took[i] = System.nanoTime() - t0;
        }
        Arrays.sort(took, 1000, took.length);
        return new long[] {took[1000 + (took.length - 1000) / 2], took[1000 + (took.length - 1000) * 99 / 100]};
    }

    /**
     * Reads the image once, so that it is in the page cache: the provider of a hot image serves it from there, and
     * neither the raw costs nor the engine's should include a disk read (or depend on which of them came first).
     */
    static void warm(final Path image) throws java.io.IOException {
        try (FileChannel ch = FileChannel.open(image)) {
            final java.nio.ByteBuffer b = java.nio.ByteBuffer.allocateDirect(1 << 20);
            while (ch.read(b.clear()) > 0) {
                // the read is the point
            }
        }
    }

    static void writeRandom(final Path image, final long size) throws java.io.IOException {
        final SplittableRandom r = new SplittableRandom(11);
        final byte[] chunk = new byte[1 << 20];
        try (FileChannel ch = FileChannel.open(image, StandardOpenOption.CREATE, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
            for (long done = 0; done < size; done += chunk.length) {
                for (int i = 0; i < chunk.length; i += 8) {
                    final long v = r.nextLong();
                    for (int b = 0; b < 8; b++) {
                        chunk[i + b] = (byte) (v >>> (8 * b));
                    }
                }
                ch.write(java.nio.ByteBuffer.wrap(chunk, 0, (int) Math.min(chunk.length, size - done)));
            }
        }
    }

    /**
     * Single-core memcpy of one page out of a fresh shared mapping of the image, at pages in a scattered order: a demand
     * miss over shm:// copies a page the engine's mapping never touched, so this is its raw cost. {p50 us, p99 us}.
     */
    private static double[] firstTouch(final Path image, final int page, final long seed) throws Exception {
        try (FileChannel ch = FileChannel.open(image); Arena arena = Arena.ofShared()) {
            final MemorySegment map = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(), arena);
            final MemorySegment buf = arena.allocate(page, 4096);
            return scattered((int) (map.byteSize() / page), seed, p -> MemorySegment.copy(map, p * page, buf, 0, page));
        }
    }

    /**
     * pread(2) of one page of the image file into a buffer, at pages in a scattered order: what a demand miss over
     * shm:// does (ShmReads), so this is its raw cost. {p50 us, p99 us}.
     */
    private static double[] preadPages(final Path image, final int page, final long seed) throws Exception {
        try (FileChannel ch = FileChannel.open(image)) {
            final java.nio.ByteBuffer buf = java.nio.ByteBuffer.allocateDirect(page);
            return scattered((int) (ch.size() / page), seed, p -> readPage(ch, buf, p * page));
        }
    }

    /** Something done to one page of the image, by index. */
    private interface PageOp {
        void on(long page) throws java.io.IOException;
    }

    /**
     * Times {@code op} once on each of up to 2000 distinct pages in a scattered order (page 0 excluded), after 20,000
     * runs on page 0 so that the JIT has compiled it: {p50 us, p99 us}.
     */
    private static double[] scattered(final int pages, final long seed, final PageOp op) throws java.io.IOException {
        for (int w = 0; w < 20_000; w++) {
            op.on(0);
        }
        final int[] order = new SplittableRandom(seed).ints(1, pages).distinct().limit(Math.min(pages - 1, 2000)).toArray();
        final long[] took = new long[order.length];
        for (int i = 0; i < order.length; i++) {
            final long t0 = System.nanoTime();
            op.on(order[i]);
            took[i] = System.nanoTime() - t0;
        }
        Arrays.sort(took);
        return new double[] {took[took.length / 2] / 1e3, took[took.length * 99 / 100] / 1e3};
    }

    /** Single-core pread(2) of the whole image, a page at a time, into one buffer: MB/s. */
    private static double preadMBps(final Path image, final int page) throws Exception {
        try (FileChannel ch = FileChannel.open(image)) {
            final java.nio.ByteBuffer buf = java.nio.ByteBuffer.allocateDirect(page);
            final long size = ch.size() / page * page;
            final long t0 = System.nanoTime();
            for (long at = 0; at < size; at += page) {
                readPage(ch, buf, at);
            }
            return size / ((System.nanoTime() - t0) / 1e9) / 1e6;
        }
    }

    /** A positional read of a direct buffer's worth at {@code at}: pread(2), as FileChannel does it. */
    private static void readPage(final FileChannel ch, final java.nio.ByteBuffer buf, final long at) throws java.io.IOException {
        buf.clear();
        while (buf.hasRemaining()) {
            if (ch.read(buf, at + buf.position()) < 0) {
                throw new java.io.EOFException("image shorter than expected");
            }
        }
    }

    /**
     * Single-core memcpy out of a shared mapping of the image: {MB/s over the whole image once every page was touched,
     * p50 us, p99 us of one page already touched, MB/s of the first pass over a fresh mapping}.
     */
    private static double[] memcpy(final Path image, final int page) throws Exception {
        try (FileChannel ch = FileChannel.open(image); Arena arena = Arena.ofShared()) {
            final MemorySegment map = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(), arena);
            final MemorySegment buf = arena.allocate(page, 4096);
            double best = 0;
            double firstRound = 0;
            for (int round = 0; round < 3; round++) { // the first round touches every page of a fresh mapping
                final long t0 = System.nanoTime();
                for (long at = 0; at + page <= map.byteSize(); at += page) {
                    MemorySegment.copy(map, at, buf, 0, page);
                }
                final double mbps = map.byteSize() / ((System.nanoTime() - t0) / 1e9) / 1e6;
                if (round == 0) {
                    firstRound = mbps;
                } else {
                    best = Math.max(best, mbps);
                }
            }
            final long[] took = new long[2000];
            final SplittableRandom r = new SplittableRandom(5);
            final long pages = map.byteSize() / page;
            for (int i = 0; i < took.length; i++) {
                final long at = r.nextLong(pages) * page;
                final long t0 = System.nanoTime();
                MemorySegment.copy(map, at, buf, 0, page);
                took[i] = System.nanoTime() - t0;
            }
            Arrays.sort(took);
            return new double[] {best, took[took.length / 2] / 1e3, took[took.length * 99 / 100] / 1e3, firstRound};
        }
    }

    /**
     * 4 KiB reads at QD1 through the polling front end, each in a page no earlier read touched (pages in a scattered
     * order), so every one is a demand miss: {p50 us, p99 us}.
     */
    private double[] misses(final Path local, final SourceUri uri, final String token, final long seed) throws Exception {
        final Path file = BootBenchCommand.fresh(local.resolve("miss-" + uri.scheme() + ".img"));
        final Path sock = workDir.resolve("miss-" + uri.scheme() + ".sock");
        // --fill-rate 1k: the background fill stands still, so no page is local before its read.
        try (Engine e = Engine.startLazy(Engine.Options.file(sock, file), source(uri, token, 1024))) {
            final BenchResult r = BenchRunner.run(new BenchOptions(sock, BenchPattern.RANDREAD, 4096, 1, seconds, 1, seed)
                .withDistinctStrides(e.lazyStore().pageSize()));
            return new double[] {r.p50Us(), r.p99Us(), r.ops()};
        } finally {
            cleanUp(file);
        }
    }

    /** Per column, the median over the rows. */
    private static double[] medians(final double[][] rows) {
        final double[] m = new double[rows[0].length];
        for (int c = 0; c < m.length; c++) {
            final double[] col = new double[rows.length];
            for (int r = 0; r < rows.length; r++) {
                col[r] = rows[r][c];
            }
            Arrays.sort(col);
            m[c] = col[col.length / 2];
        }
        return m;
    }

    /** Each round's miss p50 less its raw p50, sorted (the middle one is the median). */
    private static double[] overheads(final double[][] miss, final double[][] raw) {
        final double[] o = new double[miss.length];
        for (int r = 0; r < o.length; r++) {
            o[r] = miss[r][0] - raw[r][0];
        }
        Arrays.sort(o);
        return o;
    }

    /** Each round's overhead and its two p50s, in round order. */
    private static String perRound(final double[][] miss, final double[][] raw) {
        final StringBuilder b = new StringBuilder();
        for (int r = 0; r < miss.length; r++) {
            b.append(r == 0 ? "" : ", ").append(String.format("%.1f (%.1f - %.1f)", miss[r][0] - raw[r][0], miss[r][0], raw[r][0]));
        }
        return b.toString();
    }

    /**
     * 4 KiB reads at QD1 through the polling front end, front to back from the first page, fill stopped: one read in
     * 16 is a miss and the others read the page it brought in, as a guest reading a file in small pieces does.
     */
    private double[] sequential(final Path local, final SourceUri uri, final String token) throws Exception {
        final Path file = BootBenchCommand.fresh(local.resolve("seq-" + uri.scheme() + ".img"));
        final Path sock = workDir.resolve("seq-" + uri.scheme() + ".sock");
        try (Engine e = Engine.startLazy(Engine.Options.file(sock, file), source(uri, token, 1024))) {
            // One pass, so no read is of a page already local: at 1 GiB a pass takes about a second.
            final BenchResult r = BenchRunner.run(new BenchOptions(sock, BenchPattern.READ, 4096, 1, seconds, 1, 1).withSinglePass());
            return new double[] {r.p50Us(), r.p99Us()};
        } finally {
            cleanUp(file);
        }
    }

    /** {MB/s of the engine's fill of the whole image, p50 us of 4 KiB reads front to back once it is disk-only}. */
    private double[] fillMBps(final Path local, final SourceUri uri, final String token) throws Exception {
        final Path file = BootBenchCommand.fresh(local.resolve("fill-" + uri.scheme() + ".img"));
        try (Engine e = Engine.startLazy(Engine.Options.file(workDir.resolve("fill-" + uri.scheme() + ".sock"), file), source(uri, token, 0))) {
            final LazyStore s = e.lazyStore();
            final long t0 = System.nanoTime();
            if (!s.awaitDiskOnly(TimeUnit.MINUTES.toNanos(10))) {
                throw new IllegalStateException("the fill over " + uri + " did not finish in 10 minutes");
            }
            final double mbps = size / ((System.nanoTime() - t0) / 1e9) / 1e6;
            final BenchResult r = BenchRunner.run(new BenchOptions(workDir.resolve("fill-" + uri.scheme() + ".sock"), BenchPattern.READ,
                4096, 1, seconds, 1, 1));
            return new double[] {mbps, r.p50Us()};
        } finally {
            cleanUp(file);
        }
    }

    /**
     * The source alone: every page streamed at background priority into a ring of 64 page buffers, the way the filler
     * keeps its window full, with nothing done to the bytes. MB/s.
     */
    private static double sourceFillMBps(final SourceUri uri, final String token, final int page) throws Exception {
        try (io.lazyblk.pagemap.PageSource s = uri.open(token, Duration.ofSeconds(10)); Arena arena = Arena.ofShared()) {
            final BufferRing ring = new BufferRing(arena, page);
            final java.util.concurrent.atomic.AtomicLong failed = new java.util.concurrent.atomic.AtomicLong();
            final io.lazyblk.pagemap.PageSource.Listener l = (tag, first, count, status) -> {
                if (status != io.lazyblk.pagemap.PageSource.OK) {
                    failed.incrementAndGet();
                }
                ring.free.offer((int) tag);
            };
            final int pages = s.manifest().pageCount();
            final long t0 = System.nanoTime();
            for (int p = 0; p < pages; p++) {
                Integer b;
                while ((b = ring.free.poll()) == null) {
                    Thread.onSpinWait();
                }
                while (!s.fetch(p, 1, ring.buf[b], io.lazyblk.pagemap.PageSource.BACKGROUND, b, l)) {
                    Thread.onSpinWait();
                }
            }
            ring.awaitAllFree();
            final double seconds = (System.nanoTime() - t0) / 1e9;
            if (failed.get() > 0) {
                throw new IllegalStateException(failed.get() + " fetches over " + uri + " failed");
            }
            return s.manifest().size() / seconds / 1e6;
        }
    }

    /**
     * Single-page demand fetches at new pages, one at a time, while a thread keeps {@code s}'s background window full
     * (64 page buffers, refilled as fetches complete): {p50 us, p99 us, p50 us of the same with no background}.
     */
    private static double[] demandUnderFill(final io.lazyblk.pagemap.PageSource s, final int page) throws Exception {
        try (Arena arena = Arena.ofShared()) {
            final int pages = s.manifest().pageCount();
            final MemorySegment dst = arena.allocate(page, 4096);
            final double idle = demandFetches(s, dst, pages, 1000)[0];
            final java.util.concurrent.atomic.AtomicBoolean run = new java.util.concurrent.atomic.AtomicBoolean(true);
            final BufferRing ring = new BufferRing(arena, page);
            final io.lazyblk.pagemap.PageSource.Listener l = (tag, first, count, status) -> ring.free.offer((int) tag);
            final Thread filler = Thread.ofPlatform().daemon().start(() -> {
                int p = 0;
                while (run.get()) {
                    final Integer b = ring.free.poll();
                    if (b == null) {
                        Thread.yield(); // the filler waits on completions, as the engine's does
                        continue;
                    }
                    if (!s.fetch(p, 1, ring.buf[b], io.lazyblk.pagemap.PageSource.BACKGROUND, b, l)) {
                        ring.free.offer(b);
                        Thread.yield();
                        continue;
                    }
                    p = (p + 1) % pages;
                }
            });
            try {
                final long[] busy = demandFetches(s, dst, pages, 1000);
                return new double[] {busy[0] / 1e3, busy[1] / 1e3, idle / 1e3};
            } finally {
                run.set(false);
                filler.join();
                ring.awaitAllFree(); // the rest of the background fetches complete before their buffers go
            }
        }
    }

    /** {@code n} single-page demand fetches at scattered pages, one at a time: {p50 ns, p99 ns}. */
    private static long[] demandFetches(final io.lazyblk.pagemap.PageSource s, final MemorySegment dst, final int pages, final int n)
        throws Exception {
        final long[] took = new long[n];
        final SplittableRandom r = new SplittableRandom(13);
        final java.util.concurrent.atomic.AtomicInteger status = new java.util.concurrent.atomic.AtomicInteger();
        final io.lazyblk.pagemap.PageSource.Listener l = (tag, first, count, st) -> status.set(st);
        for (int i = 0; i < n; i++) {
            status.set(-1);
            final long t0 = System.nanoTime();
            while (!s.fetch(r.nextInt(pages), 1, dst, io.lazyblk.pagemap.PageSource.DEMAND, i, l)) {
                Thread.onSpinWait();
            }
            while (status.get() == -1) {
                Thread.onSpinWait();
            }
            took[i] = System.nanoTime() - t0;
            if (status.get() != io.lazyblk.pagemap.PageSource.OK) {
                throw new IllegalStateException("a demand fetch failed with status " + status.get());
            }
        }
        Arrays.sort(took);
        return new long[] {took[n / 2], took[n * 99 / 100]};
    }

    /** 64 page buffers and the queue of free ones, the way the filler keeps its background window full. */
    private static final class BufferRing {
        static final int SIZE = 64;
        final MemorySegment[] buf = new MemorySegment[SIZE];
        final org.agrona.concurrent.ManyToOneConcurrentArrayQueue<Integer> free = new org.agrona.concurrent.ManyToOneConcurrentArrayQueue<>(SIZE);

        BufferRing(final Arena arena, final int page) {
            for (int i = 0; i < SIZE; i++) {
                buf[i] = arena.allocate(page, 4096);
                free.offer(i);
            }
        }

        /** Waits until every fetch into the ring has completed. */
        void awaitAllFree() {
            while (free.size() < SIZE) {
                Thread.onSpinWait();
            }
        }
    }

    private static void cleanUp(final Path file) throws java.io.IOException {
        Files.deleteIfExists(file);
        Files.deleteIfExists(io.lazyblk.persistence.PageStateFile.beside(file));
        Files.deleteIfExists(PeerExport.manifestBeside(file));
    }

    /** The engine's page size: 64 KiB, or the provider's if larger. */
    private int enginePage = Engine.DEFAULT_PAGE_SIZE;

    private Engine.LazySource source(final SourceUri uri, final String token, final long fillRate) {
        return new Engine.LazySource(List.of(uri), List.of(io.lazyblk.pull.token.TokenSource.fixed(token)), 256L << 20, fillRate,
            Duration.ofSeconds(30), enginePage);
    }
}
