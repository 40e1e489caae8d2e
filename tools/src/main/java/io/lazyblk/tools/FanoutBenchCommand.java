package io.lazyblk.tools;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pull.provider.ProviderProtocol;
import io.lazyblk.pull.s3.S3Client;
import io.lazyblk.pull.s3.S3Config;
import io.lazyblk.pull.s3.S3Location;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.pull.token.TokenSource;
import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.BlkResponse;
import io.lazyblk.tools.frontend.FrontendConfig;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.SecureRandom;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import java.util.function.Function;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * {@code lazyblk bench-fanout} (issue 16, item 4): one seed serving N engines that boot the same image at once on
 * loopback, against one engine alone. The seed is an {@code image-server} child exporting the image file, or one whose
 * export is {@code s3://} (a host cache, its fill directory wiped before each phase). Every engine is a {@code lazyblk
 * serve} child as an operator starts it; its "boot" is a front end of this JVM reading a fixed boot set at QD1, every
 * byte checked against the image. Each phase (one alone, then N at once) gets a fresh seed process, so each starts
 * cold and the seed's counters and CPU are that phase's alone.
 */
@Command(name = "bench-fanout", mixinStandardHelpOptions = true,
    description = "One image server (or one S3 host cache) serving N engines that boot the same image at once on loopback,"
        + " against one engine alone: per-engine time to socket, to boot done and to disk-only (median and slowest engine),"
        + " the seed's CPU-seconds per GB served, the bytes it served and the bytes read from the seed, and whether any"
        + " connection was refused at the seed's connection limit. The engines and the seed are child processes; progress"
        + " on stderr, the table on stdout.",
    footer = {"", "Sizes take binary units (k = 1024, M = 1024^2, G); durations take units (500ms, 30s, 15m)."})
public final class FanoutBenchCommand implements Callable<Integer> {
    /** What a boot read and the image server's default page are: 64 KiB. */
    static final int READ_BYTES = 64 << 10;
    /** The generated image has one MiB of zeros in every eight: pages no engine asks for. */
    private static final int ZERO_EVERY_MIB = 8;
    /** Flags of tools/lazyblk's JVMs (pom.xml lazyblk.jvmFlags and the launcher's small footprint), without its AOT cache. */
    private static final List<String> JVM_FLAGS = List.of("--enable-native-access=ALL-UNNAMED", "--add-exports",
        "java.base/jdk.internal.misc=ALL-UNNAMED", "--add-exports", "java.base/sun.nio.ch=ALL-UNNAMED", "-XX:+UseSerialGC", "-Xms8m",
        "-XX:TrimNativeHeapInterval=5000");
    private static final Pattern SEED_PORT = Pattern.compile("^serving golden .* on [0-9.]+:(\\d+)");
    private static final Pattern METRICS_PORT = Pattern.compile("metrics on port (\\d+)");
    private static final Pattern FILLED = Pattern.compile("\\((\\d+) MiB on demand, (\\d+) MiB in the background\\)");
    /** Lines an engine or the seed prints when a connection was refused at the seed's connection limit. */
    private static final List<String> REFUSAL_LINES = List.of("connection_limit", "closed the connection during the hello");

    enum Seed { file, s3 }

    @Option(names = "--engines", defaultValue = "16", paramLabel = "N", description = "engines started at once (default ${DEFAULT-VALUE})")
    int engines;

    @Option(names = "--size", defaultValue = "256M", converter = SizeConverter.class, paramLabel = "SIZE",
        description = "size of the generated image (random bytes, one MiB of zeros in every eight); --seed file only (default ${DEFAULT-VALUE})")
    long size;

    @Option(names = "--work-dir", defaultValue = "${java.io.tmpdir}/lazyblk-bench-fanout-${user.name}", paramLabel = "DIR",
        description = "scratch space: the image, the engines' local files, the cache's fill dir, logs/ (default ${DEFAULT-VALUE})")
    Path workDir;

    @Option(names = "--rounds", defaultValue = "3", paramLabel = "R", description = "rounds, each one engine alone then N at once; the table gives"
        + " medians (default ${DEFAULT-VALUE})")
    int rounds;

    @Option(names = "--boot-set", defaultValue = "16M", converter = SizeConverter.class, paramLabel = "SIZE", description = "what a boot reads: this"
        + " many bytes as 64 KiB reads at pseudo-random pages (the same order for every engine), QD1, each checked (default ${DEFAULT-VALUE})")
    long bootSet;

    @Option(names = "--seed", defaultValue = "file", paramLabel = "file|s3", description = "file: an image-server exporting the image file is the seed;"
        + " s3: an image-server whose export is --s3 (a host cache, its fill dir wiped before each phase; needs the AWS_* variables)"
        + " (default ${DEFAULT-VALUE})")
    Seed seed;

    @Option(names = "--s3", paramLabel = "s3://BUCKET/KEY", description = "with --seed s3: an image published with 'lazyblk publish'")
    String s3;

    @Option(names = "--max-connections", paramLabel = "N", description = "passed to the seed's image-server (default: its own)")
    Integer maxConnections;

    @Option(names = "--max-connections-per-peer", paramLabel = "N", description = "passed to the seed's image-server; every"
        + " engine here is one peer, 127.0.0.1 (default: its own)")
    Integer maxConnectionsPerPeer;

    @Option(names = "--timeout", defaultValue = "10m", converter = DurationConverter.class, paramLabel = "DURATION",
        description = "how long a phase may take, from the engines' start to the last one's disk-only (default ${DEFAULT-VALUE})")
    Duration timeout;

    /** Where the AWS variables are looked up: the process's environment; a test may give its own. */
    Function<String, String> environment = System::getenv;

    /** Every child still running, killed by the shutdown hook on Ctrl-C. Guarded by itself, as is {@link #killed}. */
    private final Set<Child> live = new java.util.HashSet<>();
    /** The shutdown hook ran: a child started after it is killed at once. */
    private boolean killed;

    @Override
    public Integer call() throws Exception {
        final String usage = checkArguments();
        if (usage != null) {
            System.err.println("lazyblk bench-fanout: " + usage);
            return 2;
        }
        S3Config s3Config = null;
        if (seed == Seed.s3) {
            try {
                s3Config = S3Config.fromEnvironment(environment);
            } catch (final IllegalArgumentException e) {
                System.err.println("lazyblk bench-fanout: --seed s3: " + e.getMessage());
                return 2;
            }
        }
        WorkDir.prepare(workDir);
        final Path logs = Files.createDirectories(workDir.resolve("logs"));
        final Thread hook = new Thread(() -> killAll(true), "bench-fanout-cleanup");
        Runtime.getRuntime().addShutdownHook(hook);
        try {
            final Image image = seed == Seed.file ? generatedImage() : downloadedImage(S3Location.parse(s3), s3Config);
            if (bootSet > image.pages * (long) READ_BYTES) {
                System.err.println("lazyblk bench-fanout: --boot-set " + bootSet + " is larger than the image (" + image.size + " bytes)");
                return 2;
            }
            final byte[] secret = new byte[32];
            new SecureRandom().nextBytes(secret);
            final Path secretFile = workDir.resolve("secret");
            Files.deleteIfExists(secretFile);
            Files.write(secretFile, secret);
            Files.setPosixFilePermissions(secretFile, PosixFilePermissions.fromString("rw-------"));
            final Setup setup = new Setup(image, bootOffsets(image.pages), secretFile,
                AccessToken.mint(secret, "golden", Instant.now().plus(timeout.multipliedBy(2L * rounds + 2))), logs,
                s3Config == null ? Map.of() : s3Config.environment(), clockTicks());
            final PhaseResult[][] results = new PhaseResult[rounds][];
            try (Arena arena = Arena.ofShared(); FileChannel ch = FileChannel.open(image.file)) {
                final MemorySegment bytes = ch.map(FileChannel.MapMode.READ_ONLY, 0, image.size, arena);
                for (int r = 0; r < rounds; r++) {
                    results[r] = new PhaseResult[2];
                    for (int p = 0; p < 2; p++) {
                        final int n = p == 0 ? 1 : engines;
                        final String what = p == 0 ? "one engine alone" : n + " engines at once";
                        System.err.printf("bench-fanout: round %d/%d: %s ...%n", r + 1, rounds, what);
                        results[r][p] = new Phase(setup, bytes, n, "r" + (r + 1) + (p == 0 ? "-alone" : "-fanout")).run();
                        System.err.printf("bench-fanout: round %d/%d: %s: %s%n", r + 1, rounds, what, results[r][p].describe());
                    }
                }
            }
            printTable(setup, results);
            return 0;
        } finally {
            killAll(false);
            try {
                Runtime.getRuntime().removeShutdownHook(hook);
            } catch (final IllegalStateException shuttingDown) {
                // the hook runs (or ran) anyway
            }
        }
    }

    /** A message saying what to change, or null if the arguments make sense. */
    private String checkArguments() {
        if (engines < 1 || engines > 1000) {
            return "--engines must be 1..1000, got " + engines;
        }
        if (rounds < 1 || rounds > 100) {
            return "--rounds must be 1..100, got " + rounds;
        }
        if (bootSet < READ_BYTES || bootSet % READ_BYTES != 0) {
            return "--boot-set must be a multiple of 64k (its reads are 64 KiB), got " + bootSet;
        }
        if (seed == Seed.file && s3 != null) {
            return "--s3 is for --seed s3; give both, or neither to serve the generated image file";
        }
        if (seed == Seed.file && (size < READ_BYTES || size > Manifest.MAX_IMAGE_BYTES)) {
            return "--size must be from 64k to 1T, got " + size;
        }
        if (seed == Seed.s3) {
            if (s3 == null) {
                return "--seed s3 needs --s3 s3://BUCKET/KEY, an image published with 'lazyblk publish --image FILE --to s3://BUCKET/KEY'";
            }
            try {
                S3Location.parse(s3);
            } catch (final IllegalArgumentException e) {
                return "--s3: " + e.getMessage();
            }
        }
        if (timeout.isNegative() || timeout.isZero()) {
            return "--timeout must be positive";
        }
        return null;
    }

    /** The image file, its size, its 64 KiB pages (whole ones) and the bytes of its non-zero pages (what the seed must send). */
    record Image(Path file, long size, long pages, long dataBytes) {
    }

    /** The generated image of {@code --size} in the work dir (kept for the next run: its bytes are always the same). */
    private Image generatedImage() throws IOException {
        final Path file = workDir.resolve("fanout-" + size + ".raw");
        if (!Files.exists(file) || Files.size(file) != size) {
            System.err.printf("bench-fanout: writing a %d MiB image (random bytes, one MiB of zeros in every %d) ...%n", size >> 20,
                ZERO_EVERY_MIB);
            final SplittableRandom r = new SplittableRandom(16);
            final ByteBuffer chunk = ByteBuffer.allocate(1 << 20);
            try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
                for (long at = 0, mib = 0; at < size; at += chunk.capacity(), mib++) {
                    chunk.clear();
                    if (mib % ZERO_EVERY_MIB == ZERO_EVERY_MIB - 1) {
                        Arrays.fill(chunk.array(), (byte) 0);
                    } else {
                        while (chunk.hasRemaining()) {
                            chunk.putLong(r.nextLong());
                        }
                    }
                    chunk.clear().limit((int) Math.min(chunk.capacity(), size - at));
                    while (chunk.hasRemaining()) {
                        ch.write(chunk);
                    }
                }
            }
        }
        SourceBenchCommand.warm(file); // the seed serves it from the page cache: the disk is not what is measured
        long data = 0;
        try (Arena arena = Arena.ofConfined(); FileChannel ch = FileChannel.open(file)) {
            final MemorySegment map = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            final MemorySegment zeros = arena.allocate(READ_BYTES);
            for (long at = 0; at < size; at += READ_BYTES) {
                final long len = Math.min(READ_BYTES, size - at);
                if (MemorySegment.mismatch(map, at, at + len, zeros, 0, len) != -1) {
                    data += len;
                }
            }
        }
        return new Image(file, size, size / READ_BYTES, data);
    }

    /**
     * The S3 image, downloaded once into the work dir to check the engines' reads against; its data bytes from the
     * manifest published beside it. The download is not counted: the cache's reads are, from its own log.
     */
    private Image downloadedImage(final S3Location loc, final S3Config config) throws IOException {
        final Path file = workDir.resolve("s3-image.raw");
        try (S3Client c = new S3Client(config, 4, Duration.ofSeconds(120))) {
            final Manifest m;
            try {
                m = Manifest.decode(ByteBuffer.wrap(c.getSmall(loc.manifest(), (int) ProviderProtocol.MAX_MANIFEST_BYTES)));
            } catch (final IOException e) {
                throw new IOException("cannot read the manifest " + loc.manifest() + " (" + e.getMessage() + "): publish the image first"
                    + " with 'lazyblk publish --image FILE --to " + loc + "'", e);
            }
            final S3Client.ObjectInfo info = c.probe(loc);
            if (info.size() != m.size()) {
                throw new IOException(loc + " holds " + info.size() + " bytes but its manifest says " + m.size() + ": publish it again");
            }
            System.err.printf("bench-fanout: downloading %s (%d MiB) to check the engines' reads against ...%n", loc, info.size() >> 20);
            final byte[] buf = new byte[8 << 20];
            try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
                for (long at = 0; at < info.size(); at += buf.length) {
                    final int len = (int) Math.min(buf.length, info.size() - at);
                    c.getRange(loc, at, len, MemorySegment.ofArray(buf), 0, info.etag());
                    final ByteBuffer b = ByteBuffer.wrap(buf, 0, len);
                    while (b.hasRemaining()) {
                        ch.write(b);
                    }
                }
            }
            long data = 0;
            for (int p = 0; p < m.pageCount(); p++) {
                if (!m.isZeroPage(p)) {
                    data += Math.min(m.pageSize(), m.size() - (long) p * m.pageSize());
                }
            }
            return new Image(file, m.size(), m.size() / READ_BYTES, data);
        }
    }

    /** The boot set: {@code --boot-set / 64 KiB} distinct pages in a pseudo-random order, the same for every engine and run. */
    private long[] bootOffsets(final long pages) {
        final int n = (int) (bootSet / READ_BYTES);
        final SplittableRandom r = new SplittableRandom(0xb007);
        final Set<Long> seen = new java.util.HashSet<>();
        final long[] offsets = new long[n];
        for (int i = 0; i < n; ) {
            final long p = r.nextLong(pages);
            if (seen.add(p)) {
                offsets[i++] = p * READ_BYTES;
            }
        }
        return offsets;
    }

    /** Clock ticks per second of /proc/PID/stat's utime and stime: {@code getconf CLK_TCK}, 100 if that fails. */
    private static long clockTicks() {
        try {
            final Process p = new ProcessBuilder("getconf", "CLK_TCK").redirectErrorStream(true).start();
            final String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8).strip();
            return p.waitFor() == 0 ? Long.parseLong(out) : 100;
        } catch (final IOException | NumberFormatException e) {
            return 100; // USER_HZ is 100 on every Linux ABI
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
            return 100;
        }
    }

    /** {@code lazyblk ARGS} as a child JVM: this JVM's java and class path, tools/lazyblk's flags, output in logs/NAME.log. */
    Child start(final String name, final Path logs, final Map<String, String> env, final List<String> args) throws IOException {
        final List<String> cmd = new ArrayList<>();
        cmd.add(ProcessHandle.current().info().command().orElseThrow(() -> new IOException("cannot tell which java runs this JVM")));
        cmd.addAll(JVM_FLAGS);
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), Main.class.getName()));
        cmd.addAll(args);
        final ProcessBuilder pb = new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
        pb.environment().remove(TokenSource.ENV); // each engine gets its token on its command line
        pb.environment().putAll(env);
        final Child c = Child.start(name, pb, logs.resolve(name + ".log"), "$ lazyblk " + String.join(" ", args));
        synchronized (live) {
            if (!killed) {
                live.add(c);
                return c;
            }
        }
        c.close(); // started as the shutdown hook ran: it would outlive this JVM
        throw new IllegalStateException("bench-fanout is stopping");
    }

    /** Stops {@code c} (SIGTERM, SIGKILL after 10 s) and forgets it. */
    void stop(final Child c) {
        c.stop();
        synchronized (live) {
            live.remove(c);
        }
    }

    /** Kills every child still running; with {@code forever} (the shutdown hook), also every one started later. */
    private void killAll(final boolean forever) {
        final List<Child> all;
        synchronized (live) {
            killed |= forever;
            all = new ArrayList<>(live);
            live.clear();
        }
        for (final Child c : all) {
            c.close();
        }
    }

    /** The seed's image-server arguments. */
    List<String> seedArgs(final Setup s, final Path fillDir) {
        final List<String> a = new ArrayList<>(List.of("image-server", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
            "--secret-file", s.secretFile().toString(), "--no-profile"));
        if (seed == Seed.file) {
            a.addAll(List.of("--export", "golden=" + s.image().file(), "--cache-dir", workDir.resolve("manifests").toString()));
        } else {
            a.addAll(List.of("--export", "golden=" + s3, "--fill-dir", fillDir.toString()));
        }
        if (maxConnections != null) {
            a.addAll(List.of("--max-connections", maxConnections.toString()));
        }
        if (maxConnectionsPerPeer != null) {
            a.addAll(List.of("--max-connections-per-peer", maxConnectionsPerPeer.toString()));
        }
        return a;
    }

    /**
     * What every phase shares: the image, the boot set (byte offsets), the seed's secret and the engines' token, where
     * the children's logs go, the AWS variables the cache child gets, and the clock ticks of /proc/PID/stat.
     */
    record Setup(Image image, long[] bootOffsets, Path secretFile, String token, Path logs, Map<String, String> seedEnv,
                 long clockTicks) {
    }

    /**
     * One phase's figures: per engine, seconds from its start to its socket accepting, to its boot done, to disk-only;
     * the seed's CPU seconds, the page bytes it sent, the bytes it read from its own seed (s3: from S3), and the
     * connections refused at its limit (its counter, and lines saying so in any child's output).
     */
    record PhaseResult(double[] socket, double[] boot, double[] diskOnly, double seedCpuSeconds, long bytesSent, long fromSeed,
                       long refused) {
        double cpuPerGb() {
            return bytesSent == 0 ? 0 : seedCpuSeconds / (bytesSent / 1e9);
        }

        String describe() {
            return String.format(Locale.ROOT, "socket %.2f s, boot %.2f s, disk-only %.2f s (slowest engine); seed %.2f CPU-s for"
                    + " %.3f GB served (%.2f CPU-s/GB), %d MiB read from the seed%s", max(socket), max(boot), max(diskOnly),
                seedCpuSeconds, bytesSent / 1e9, cpuPerGb(), fromSeed >> 20, refused > 0 ? "; " + refused + " connection(s) REFUSED" : "");
        }
    }

    /** One phase: a fresh seed process, {@code n} engines started at once, each booted and filled to disk-only. */
    private final class Phase {
        private final Setup setup;
        private final MemorySegment image;
        private final int n;
        private final String tag;

        Phase(final Setup setup, final MemorySegment image, final int n, final String tag) {
            this.setup = setup;
            this.image = image;
            this.n = n;
            this.tag = tag;
        }

        PhaseResult run() throws Exception {
            final long deadline = System.nanoTime() + timeout.toNanos();
            final Path dir = Files.createDirectories(workDir.resolve("engines"));
            final Path fillDir = workDir.resolve("fill");
            deleteTree(fillDir); // the host cache starts cold in every phase
            final List<Child> children = new ArrayList<>();
            final Child seedChild = start("seed-" + tag, setup.logs(), setup.seedEnv(), seedArgs(setup, fillDir));
            children.add(seedChild);
            try {
                final Matcher port = SEED_PORT.matcher(seedChild.awaitLine("serving golden ", deadline));
                final Matcher metricsPort = METRICS_PORT.matcher(seedChild.awaitLine("metrics on port ", deadline));
                if (!port.find() || !metricsPort.find()) {
                    throw new IOException("the seed's image-server printed no port; see " + seedChild.log);
                }
                final java.net.URI metrics = java.net.URI.create("http://127.0.0.1:" + metricsPort.group(1) + "/metrics");
                final String source = "tcp://127.0.0.1:" + port.group(1) + "/golden";
                final long cpu0 = cpuNanos(seedChild);
                final Map<String, Double> before = scrape(metrics);
                final double[] socket = new double[n];
                final double[] boot = new double[n];
                final double[] disk = new double[n];
                final Throwable[] failed = new Throwable[n];
                final Thread[] threads = new Thread[n];
                for (int i = 0; i < n; i++) {
                    final Path sock = dir.resolve("e" + i + ".sock");
                    final Path local = BootBenchCommand.fresh(dir.resolve("e" + i + ".img"));
                    Files.deleteIfExists(sock);
                    final Child e = start("engine-" + tag + "-" + i, setup.logs(), Map.of(), List.of("serve", "--socket", sock.toString(),
                        "--local", local.toString(), "--source", source, "--token", setup.token()));
                    children.add(e);
                    final int k = i;
                    threads[i] = Thread.ofPlatform().name("fanout-boot-" + i).start(() -> {
                        try {
                            socket[k] = (e.awaitArrival("lazyblk: serving", deadline) - e.startNanos) / 1e9;
                            boot(sock, deadline, e);
                            boot[k] = (System.nanoTime() - e.startNanos) / 1e9;
                            disk[k] = (e.awaitArrival("switched to disk-only", deadline) - e.startNanos) / 1e9;
                        } catch (final Throwable t) {
                            failed[k] = t;
                        }
                    });
                }
                for (int i = 0; i < n; i++) {
                    threads[i].join();
                    if (failed[i] != null) {
                        throw new IllegalStateException("engine " + i + " of " + tag + ": " + failed[i].getMessage() + " (the seed's log: "
                            + seedChild.log + ")", failed[i]);
                    }
                }
                long fromSeed = -1;
                if (seed == Seed.s3) {
                    // The cache's own fill ends once every page an engine asked for or it fetched ahead is local.
                    final Matcher m = FILLED.matcher(seedChild.awaitLine("switched to disk-only", deadline));
                    if (!m.find()) {
                        throw new IOException("the host cache's disk-only line names no MiB; see " + seedChild.log);
                    }
                    fromSeed = (Long.parseLong(m.group(1)) + Long.parseLong(m.group(2))) << 20;
                }
                final double cpu = (cpuNanos(seedChild) - cpu0) / 1e9;
                final Map<String, Double> after = scrape(metrics);
                final long sent = delta(before, after, "lazyblk_provider_bytes_sent_total{image=\"golden\"}");
                long refused = delta(before, after, "lazyblk_provider_refused_total{reason=\"connection_limit\"}");
                for (final Child c : children) {
                    refused += c.countLines(REFUSAL_LINES);
                }
                return new PhaseResult(socket, boot, disk, cpu, sent, seed == Seed.file ? sent : fromSeed, refused);
            } finally {
                for (int i = children.size() - 1; i >= 0; i--) {
                    stop(children.get(i));
                }
                for (int i = 0; i < n; i++) {
                    BootBenchCommand.fresh(dir.resolve("e" + i + ".img"));
                    Files.deleteIfExists(dir.resolve("e" + i + ".sock"));
                }
            }
        }

        /** The boot: a front end reads the boot set, 64 KiB at a time at QD1; a byte that is not the image's fails it. */
        private void boot(final Path sock, final long deadline, final Child engine) throws IOException {
            final Duration wait = Duration.ofNanos(Math.max(1, deadline - System.nanoTime()));
            try (VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(4L << 20),
                FrontendConfig.defaults().withReplyTimeout(wait))) {
                final BlkClient blk = new BlkClient(fe, 0).timeout(wait);
                for (final long at : setup.bootOffsets()) {
                    final BlkResponse r = blk.read(at / VirtioBlk.SECTOR_SIZE, READ_BYTES);
                    if (!r.ok()) {
                        throw new IOException(engine.name + " answered the boot read at byte " + at + " with " + VirtioBlk.statusName(r.status())
                            + "; see " + engine.log);
                    }
                    final long wrong = MemorySegment.mismatch(MemorySegment.ofArray(r.data()), 0, READ_BYTES, image, at, at + READ_BYTES);
                    if (wrong != -1) {
                        throw new IOException(engine.name + " read a wrong byte at " + (at + wrong) + " of the image (boot read at " + at
                            + "); see " + engine.log);
                    }
                }
            }
        }

        private long cpuNanos(final Child c) throws IOException {
            final String stat = Files.readString(Path.of("/proc", Long.toString(c.process.pid()), "stat"));
            // The command name (field 2) is in parentheses and may hold spaces: count fields after its closing one.
            final String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
            return (Long.parseLong(f[11]) + Long.parseLong(f[12])) * 1_000_000_000L / setup.clockTicks();
        }
    }

    /** The seed's /metrics as sample name (with labels) to value. */
    private static Map<String, Double> scrape(final java.net.URI metrics) throws IOException {
        final Map<String, Double> m = new HashMap<>();
        try (var in = metrics.toURL().openStream()) {
            for (final String line : new String(in.readAllBytes(), java.nio.charset.StandardCharsets.UTF_8).split("\n")) {
                final int sp = line.lastIndexOf(' ');
                if (!line.startsWith("#") && sp > 0) {
                    try {
                        m.put(line.substring(0, sp), Double.parseDouble(line.substring(sp + 1)));
                    } catch (final NumberFormatException ignored) {
                        // not a sample
                    }
                }
            }
        }
        return m;
    }

    private static long delta(final Map<String, Double> before, final Map<String, Double> after, final String sample) throws IOException {
        final Double b = before.get(sample);
        final Double a = after.get(sample);
        if (a == null) {
            throw new IOException("the seed's /metrics has no " + sample);
        }
        return Math.round(a - (b == null ? 0 : b));
    }

    private static void deleteTree(final Path dir) throws IOException {
        if (!Files.exists(dir)) {
            return;
        }
        try (var all = Files.walk(dir)) {
            for (final Path p : (Iterable<Path>) all.sorted(java.util.Comparator.reverseOrder())::iterator) {
                Files.delete(p);
            }
        }
    }

    /** The summary: medians over rounds of one engine alone against N at once (their median and slowest engine). */
    private void printTable(final Setup setup, final PhaseResult[][] results) {
        final Image img = setup.image();
        System.out.printf(Locale.ROOT, "%d engines at once against one alone on loopback; seed: %s; image %.1f MiB (%.1f MiB of data);"
                + " boot: %d reads of 64 KiB at QD1 (%d MiB); medians of %d round(s)%n", engines,
            seed == Seed.file ? "image-server exporting the image file" : "image-server as a host cache of " + s3 + " (fill dir wiped per phase)",
            img.size() / 1048576.0, img.dataBytes() / 1048576.0, setup.bootOffsets().length, bootSet >> 20, rounds);
        System.out.printf("%-34s %10s %14s %14s%n", "measure", "alone", engines + " at once", "slowest");
        row("time to socket (s)", results, PhaseResult::socket);
        row("time to boot done (s)", results, PhaseResult::boot);
        row("time to disk-only (s)", results, PhaseResult::diskOnly);
        System.out.printf(Locale.ROOT, "%-34s %10.2f %14.2f%n", "seed CPU-s per GB served", med(results, 0, PhaseResult::cpuPerGb),
            med(results, 1, PhaseResult::cpuPerGb));
        System.out.printf(Locale.ROOT, "%-34s %10.1f %14.1f%n", "MiB served by the seed", med(results, 0, r -> r.bytesSent() / 1048576.0),
            med(results, 1, r -> r.bytesSent() / 1048576.0));
        final double alone = med(results, 0, r -> (double) r.fromSeed());
        final double fan = med(results, 1, r -> (double) r.fromSeed());
        System.out.printf(Locale.ROOT, "%-34s %10.1f %14.1f%n", "MiB read from the seed", alone / 1048576, fan / 1048576);
        System.out.printf(Locale.ROOT, "%-34s %10.2f %14.2f%n", "  / the image's data bytes", alone / img.dataBytes(), fan / img.dataBytes());
        System.out.println(seed == Seed.file ? "(read from the seed: the page bytes the image server sent, its lazyblk_provider_bytes_sent_total)"
            : "(read from the seed: what the host cache fetched from S3, from its 'switched to disk-only (X MiB on demand, Y MiB in the"
                + " background)' line, whole MiB; served: its lazyblk_provider_bytes_sent_total)");
        long refused = 0;
        for (final PhaseResult[] r : results) {
            refused += r[0].refused() + r[1].refused();
        }
        System.out.println(refused == 0 ? "connections refused at the seed's limit: none"
            : "connections refused at the seed's limit: " + refused + " (give --max-connections / --max-connections-per-peer;"
                + " logs in " + setup.logs() + ")");
    }

    private void row(final String name, final PhaseResult[][] results, final Function<PhaseResult, double[]> col) {
        System.out.printf(Locale.ROOT, "%-34s %10.2f %14.2f %14.2f%n", name, med(results, 0, r -> col.apply(r)[0]),
            med(results, 1, r -> median(col.apply(r))), med(results, 1, r -> max(col.apply(r))));
    }

    /** The median over rounds of {@code f} of each round's phase {@code phase} (0 alone, 1 at once). */
    private static double med(final PhaseResult[][] results, final int phase, final java.util.function.ToDoubleFunction<PhaseResult> f) {
        final double[] v = new double[results.length];
        for (int r = 0; r < v.length; r++) {
            v[r] = f.applyAsDouble(results[r][phase]);
        }
        return median(v);
    }

    static double median(final double[] values) {
        final double[] v = values.clone();
        Arrays.sort(v);
        return v.length % 2 == 1 ? v[v.length / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
    }

    static double max(final double[] values) {
        return Arrays.stream(values).max().orElse(0);
    }

    /**
     * {@code lazyblk} in a child JVM: its stdout and stderr read line by line, each line with the time it arrived (what
     * the phase's times are taken from) and copied to its log file for post-mortems. Thread-safe.
     */
    static final class Child implements AutoCloseable {
        final String name;
        final Process process;
        final Path log;
        final long startNanos;
        private final java.io.Writer logWriter;
        private final java.util.concurrent.locks.ReentrantLock lock = new java.util.concurrent.locks.ReentrantLock();
        private final java.util.concurrent.locks.Condition changed = lock.newCondition();
        private final List<String> lines = new ArrayList<>(); // guarded by lock
        private final List<Long> arrived = new ArrayList<>(); // guarded by lock
        private int openStreams = 2; // guarded by lock

        private Child(final String name, final Process process, final Path log, final java.io.Writer logWriter, final long startNanos) {
            this.name = name;
            this.process = process;
            this.log = log;
            this.logWriter = logWriter;
            this.startNanos = startNanos;
        }

        static Child start(final String name, final ProcessBuilder pb, final Path log, final String header) throws IOException {
            final java.io.Writer w = Files.newBufferedWriter(log, java.nio.charset.StandardCharsets.UTF_8);
            w.write(header + System.lineSeparator());
            final long t0 = System.nanoTime();
            final Process p;
            try {
                p = pb.start();
            } catch (final IOException e) {
                w.close();
                throw e;
            }
            final Child c = new Child(name, p, log, w, t0);
            c.pump(p.getInputStream(), "out");
            c.pump(p.getErrorStream(), "err");
            return c;
        }

        private void pump(final java.io.InputStream in, final String stream) {
            Thread.ofPlatform().daemon().name("fanout-" + name + "-" + stream).start(() -> {
                try (var r = new java.io.BufferedReader(new java.io.InputStreamReader(in, java.nio.charset.StandardCharsets.UTF_8))) {
                    String line;
                    while ((line = r.readLine()) != null) {
                        add(line);
                    }
                } catch (final IOException e) {
                    add("(" + stream + " unreadable: " + e + ")");
                } finally {
                    lock.lock();
                    try {
                        if (--openStreams == 0) {
                            logWriter.close();
                        }
                        changed.signalAll();
                    } catch (final IOException e) {
                        // the log copy is for post-mortems only
                    } finally {
                        lock.unlock();
                    }
                }
            });
        }

        private void add(final String line) {
            final long now = System.nanoTime();
            lock.lock();
            try {
                lines.add(line);
                arrived.add(now);
                try {
                    logWriter.write(line + System.lineSeparator());
                    logWriter.flush();
                } catch (final IOException e) {
                    // the log copy is for post-mortems only
                }
                changed.signalAll();
            } finally {
                lock.unlock();
            }
        }

        /** The first line containing {@code text}; an IOException naming the log if it ends or the deadline passes first. */
        String awaitLine(final String text, final long deadline) throws IOException, InterruptedException {
            final int i = awaitIndex(text, deadline);
            lock.lock();
            try {
                return lines.get(i);
            } finally {
                lock.unlock();
            }
        }

        /** When (System.nanoTime) the first line containing {@code text} arrived; waits as {@link #awaitLine}. */
        long awaitArrival(final String text, final long deadline) throws IOException, InterruptedException {
            final int i = awaitIndex(text, deadline);
            lock.lock();
            try {
                return arrived.get(i);
            } finally {
                lock.unlock();
            }
        }

        private int awaitIndex(final String text, final long deadline) throws IOException, InterruptedException {
            lock.lock();
            try {
                for (int from = 0; ; ) {
                    for (; from < lines.size(); from++) {
                        if (lines.get(from).contains(text)) {
                            return from;
                        }
                    }
                    if (openStreams == 0) {
                        throw new IOException(name + " ended (" + (process.isAlive() ? "output closed" : "exit code " + process.exitValue())
                            + ") without printing '" + text + "'; see " + log);
                    }
                    final long left = deadline - System.nanoTime();
                    if (left <= 0) {
                        throw new IOException(name + " did not print '" + text + "' before the --timeout; see " + log);
                    }
                    changed.awaitNanos(left);
                }
            } finally {
                lock.unlock();
            }
        }

        /** Lines so far containing any of {@code texts}. */
        int countLines(final List<String> texts) {
            lock.lock();
            try {
                return (int) lines.stream().filter(l -> texts.stream().anyMatch(l::contains)).count();
            } finally {
                lock.unlock();
            }
        }

        /** SIGTERM (its shutdown hook closes it cleanly), SIGKILL if it still runs 10 s later. */
        void stop() {
            process.destroy();
            try {
                if (!process.waitFor(10, java.util.concurrent.TimeUnit.SECONDS)) {
                    close();
                }
            } catch (final InterruptedException e) {
                Thread.currentThread().interrupt();
                close();
            }
        }

        /** SIGKILL if it still runs, and waits (10 s at most) until it is gone. */
        @Override
        public void close() {
            if (process.isAlive()) {
                process.destroyForcibly();
                try {
                    process.waitFor(10, java.util.concurrent.TimeUnit.SECONDS);
                } catch (final InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
        }
    }
}
