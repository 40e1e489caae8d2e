package io.lazyblk.tools;

import io.lazyblk.blk.LazyStore;
import io.lazyblk.pull.token.AccessToken;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.lang.management.ManagementFactory;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;

/**
 * {@code lazyblk bench-fill}: the background fill alone, from serve start to disk-only with no guest, over loopback TCP
 * from an image provider in a child process, and what it costs in CPU on each side. The engine runs in this JVM, so its
 * CPU is this process's (GC and JIT included: an engine pays them too); the provider's is read from its
 * {@code /proc/PID/stat}. A fresh local file each round; the image is read once first, so the provider serves it from
 * the page cache. Optionally the same image copied by {@code qemu-img convert} from {@code qemu-nbd} on loopback to a
 * sparse file, the yardstick of issue 12.
 */
@Command(name = "bench-fill", mixinStandardHelpOptions = true,
    description = "Fill time (serve start to disk-only, no guest) over loopback tcp://, with the engine's and the provider's"
        + " CPU-seconds per GB filled; optionally against qemu-img convert from qemu-nbd.")
public final class FillBenchCommand implements Callable<Integer> {
    @Option(names = "--size", defaultValue = "1G", converter = SizeConverter.class, description = "image size (default ${DEFAULT-VALUE})")
    long size;

    @Option(names = "--work-dir", defaultValue = "${java.io.tmpdir}/lazyblk-bench-fill-${user.name}", description = "scratch space for the image (default ${DEFAULT-VALUE})")
    Path workDir;

    @Option(names = "--local-dir", description = "where the engine's local file goes (default: --work-dir, a real file system;"
        + " /dev/shm takes the local disk out of the measurement)")
    Path localDir;

    @Option(names = "--rounds", defaultValue = "3", description = "fills measured, each into a fresh local file; the summary gives"
        + " the medians (default ${DEFAULT-VALUE})")
    int rounds;

    @Option(names = "--page-size", defaultValue = "0", converter = SizeConverter.class, description = "the engine's --page-size"
        + " (default: 64 KiB, or the provider's page if larger)")
    long pageSize;

    @Option(names = "--memory-budget", defaultValue = "256M", converter = SizeConverter.class, description = "the engine's"
        + " --memory-budget (default ${DEFAULT-VALUE}, as serve's)")
    long memoryBudget;

    @Option(names = "--fill-rate", defaultValue = "0", converter = SizeConverter.class, description = "the engine's --fill-rate"
        + " (default 0: uncapped)")
    long fillRate;

    @Option(names = "--qemu-img", description = "also time qemu-img convert from qemu-nbd on loopback to a sparse file, per round")
    boolean qemuImg;

    @Override
    public Integer call() throws Exception {
        if (rounds < 1 || rounds > 100) {
            System.err.println("bench-fill: --rounds must be 1..100, got " + rounds);
            return 2;
        }
        WorkDir.prepare(workDir);
        final Path local = localDir != null ? localDir : workDir;
        Files.createDirectories(local);
        final Path image = workDir.resolve("image-" + size + ".raw");
        if (!Files.exists(image) || Files.size(image) != size) {
            System.err.println("bench-fill: writing a " + (size >> 20) + " MiB image of random bytes ...");
            SourceBenchCommand.writeRandom(image, size);
        }
        SourceBenchCommand.warm(image);
        final byte[] secret = new byte[32];
        new SecureRandom().nextBytes(secret);
        final Path secretFile = workDir.resolve("secret");
        Files.deleteIfExists(secretFile);
        Files.write(secretFile, secret);
        Files.setPosixFilePermissions(secretFile, java.nio.file.attribute.PosixFilePermissions.fromString("rw-------"));
        final String token = AccessToken.mint(secret, "golden", Instant.now().plusSeconds(3600));
        final double[][] rows = new double[rounds][];
        try (Provider provider = Provider.start(image, secretFile, workDir.resolve("manifests"))) {
            for (int r = 0; r < rounds; r++) {
                rows[r] = fill(local.resolve("fill.img"), provider, token);
                if (qemuImg) {
                    rows[r] = Arrays.copyOf(rows[r], rows[r].length + 1);
                    rows[r][rows[r].length - 1] = qemuImgConvert(image, local.resolve("convert.img"));
                }
                System.err.printf("bench-fill: round %d of %d: %s%n", r + 1, rounds, describe(rows[r]));
            }
        }
        final double[] med = new double[rows[0].length];
        for (int c = 0; c < med.length; c++) {
            final double[] col = new double[rounds];
            for (int r = 0; r < rounds; r++) {
                col[r] = rows[r][c];
            }
            Arrays.sort(col);
            med[c] = col[rounds / 2];
        }
        System.out.printf("image %d MiB of random bytes over loopback tcp://, local file in %s; medians of %d rounds%n", size >> 20,
            local, rounds);
        System.out.println(describe(med));
        return 0;
    }

    private String describe(final double[] row) {
        final double gb = size / 1e9;
        final String s = String.format("fill %.2f s (%.0f MB/s); engine %.2f CPU-s/GB (user %.2f, sys %.2f); provider %.2f CPU-s/GB",
            row[0], size / row[0] / 1e6, row[1] / gb, row[2] / gb, row[3] / gb, row[4] / gb);
        return row.length > 5 ? s + String.format("; qemu-img convert %.2f s (fill/convert %.2f)", row[5], row[0] / row[5]) : s;
    }

    /** One fill into a fresh file: wall s, engine CPU s (total, user, sys), provider CPU s. */
    private double[] fill(final Path file, final Provider provider, final String token) throws Exception {
        BootBenchCommand.fresh(file);
        final Engine.LazySource src = new Engine.LazySource(List.of(SourceUri.tcp(provider.address, "golden")),
            List.of(io.lazyblk.pull.token.TokenSource.fixed(token)), memoryBudget, fillRate, Duration.ofSeconds(30), (int) pageSize);
        final com.sun.management.OperatingSystemMXBean os = (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        final long[] self0 = ProcStat.times("self");
        final long cpu0 = os.getProcessCpuTime();
        final long prov0 = provider.cpuNanos();
        final long t0 = System.nanoTime();
        try (Engine e = Engine.startLazy(Engine.Options.file(workDir.resolve("fill.sock"), file), src)) {
            final LazyStore s = e.lazyStore();
            if (!s.awaitDiskOnly(TimeUnit.MINUTES.toNanos(10))) {
                throw new IllegalStateException("the fill did not finish in 10 minutes");
            }
            final long wall = System.nanoTime() - t0;
            final long cpu = os.getProcessCpuTime() - cpu0;
            final long[] self1 = ProcStat.times("self");
            final long prov = provider.cpuNanos() - prov0;
            return new double[] {wall / 1e9, cpu / 1e9, (self1[0] - self0[0]) / 1e9, (self1[1] - self0[1]) / 1e9, prov / 1e9};
        } finally {
            BootBenchCommand.fresh(file);
        }
    }

    /** qemu-img convert from a read-only qemu-nbd export on loopback into a new sparse raw file; wall seconds. */
    private static double qemuImgConvert(final Path image, final Path target) throws Exception {
        Files.deleteIfExists(target);
        final int port = freePort();
        final Process nbd = new ProcessBuilder("qemu-nbd", "--read-only", "--persistent", "--format=raw", "--bind=127.0.0.1",
            "--port=" + port, "--export-name=golden", image.toString()).redirectErrorStream(true)
            .redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        try {
            awaitListening(port, nbd);
            final long t0 = System.nanoTime();
            final Process p = new ProcessBuilder("qemu-img", "convert", "-f", "raw", "-O", "raw",
                "nbd://127.0.0.1:" + port + "/golden", target.toString()).inheritIO().start();
            if (p.waitFor() != 0) {
                throw new IOException("qemu-img convert failed with exit code " + p.exitValue());
            }
            return (System.nanoTime() - t0) / 1e9;
        } finally {
            nbd.destroy();
            nbd.waitFor();
            Files.deleteIfExists(target);
        }
    }

    private static int freePort() throws IOException {
        try (java.net.ServerSocket s = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    /** Waits (a deadline of 10 s) until something accepts on loopback {@code port}; fails if {@code p} dies first. */
    private static void awaitListening(final int port, final Process p) throws Exception {
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (true) {
            try (java.net.Socket s = new java.net.Socket()) {
                s.connect(new InetSocketAddress("127.0.0.1", port), 1000);
                return;
            } catch (final IOException e) {
                if (!p.isAlive() || System.nanoTime() > deadline) {
                    throw new IOException("qemu-nbd did not listen on port " + port + " within 10 s", e);
                }
                p.waitFor(20, TimeUnit.MILLISECONDS);
            }
        }
    }

    /** utime and stime of a process from {@code /proc/PID/stat}, in nanoseconds (clock ticks of 10 ms). */
    static final class ProcStat {
        private static final long TICK_NANOS = 10_000_000L; // USER_HZ is 100 on every Linux ABI

        static long[] times(final String pid) throws IOException {
            final String stat = Files.readString(Path.of("/proc", pid, "stat"));
            // The command name (field 2) is in parentheses and may hold spaces: count fields after its closing one.
            final String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
            return new long[] {Long.parseLong(f[11]) * TICK_NANOS, Long.parseLong(f[12]) * TICK_NANOS};
        }
    }

    /** {@code lazyblk image-server} in a child JVM (the same java and class path), so its CPU is counted apart. */
    private static final class Provider implements AutoCloseable {
        final Process process;
        final InetSocketAddress address;

        private Provider(final Process process, final InetSocketAddress address) {
            this.process = process;
            this.address = address;
        }

        static Provider start(final Path image, final Path secret, final Path cache) throws IOException {
            final List<String> cmd = new ArrayList<>(List.of(ProcessHandle.current().info().command().orElse("java"),
                "--enable-native-access=ALL-UNNAMED", "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
                "--add-exports", "java.base/sun.nio.ch=ALL-UNNAMED", "-cp", System.getProperty("java.class.path"),
                Main.class.getName(), "image-server", "--listen", "127.0.0.1:0", "--export", "golden=" + image,
                "--secret-file", secret.toString(), "--cache-dir", cache.toString()));
            final Process p = new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.DISCARD).start();
            // It prints "serving golden (...) on 127.0.0.1:PORT" once it listens.
            final BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
            final String line = out.readLine();
            if (line == null || !line.startsWith("serving golden") || line.lastIndexOf(':') < 0) {
                p.destroy();
                throw new IOException("the image-server child did not start (it said: " + line + ")");
            }
            final int port = Integer.parseInt(line.substring(line.lastIndexOf(':') + 1).trim());
            Thread.ofVirtual().start(() -> {
                try {
                    out.transferTo(java.io.Writer.nullWriter());
                } catch (final IOException ignored) {
                    // it exited
                }
            });
            return new Provider(p, new InetSocketAddress("127.0.0.1", port));
        }

        long cpuNanos() throws IOException {
            final long[] t = ProcStat.times(Long.toString(process.pid()));
            return t[0] + t[1];
        }

        @Override
        public void close() throws InterruptedException {
            process.destroy();
            process.waitFor();
        }
    }
}
