package io.lazyblk.tools;

import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.BlkResponse;
import io.lazyblk.tools.frontend.FrontendConfig;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;
import org.junit.jupiter.api.TestInfo;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Deque;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * What the lazy-mode process tests share: two 16 MiB images of random bytes in 64 KiB pages (256 pages), "golden"
 * and "other", the provider's secret file, and starters for {@code lazyblk image-server} and {@code lazyblk serve}
 * children, in-process providers, front ends and thread pools. Everything started is closed, newest first, by
 * {@link #close()}; children's logs go to {@code target/lazy-process-logs/TEST}. One per test; not thread-safe.
 */
final class LazyProcesses implements AutoCloseable {
    static final int PAGE = 64 << 10;
    static final int PAGES = 256;
    static final int SIZE = PAGES * PAGE;
    static final int SECTOR = VirtioBlk.SECTOR_SIZE;
    static final String IMAGE = "golden";
    static final String OTHER = "other";
    /** 1 KiB/s: the first background page needs 64 s of tokens, longer than any test here runs. */
    static final String NO_BACKGROUND_FILL = "1k";
    /** Every wait for a child or a request: generous for a loaded machine, short enough that a hang fails fast. */
    static final Duration DEADLINE = Duration.ofSeconds(15);
    static final int OK = VirtioBlk.S_OK;
    static final int IOERR = VirtioBlk.S_IOERR;

    final Path dir;
    final byte[] golden;
    final Path goldenFile;
    final Path otherFile;
    final byte[] secret;
    private final Path secretFile;
    private final Path logs;
    private final Deque<AutoCloseable> resources = new ArrayDeque<>();

    /** Writes the images and the secret into {@code dir}. */
    LazyProcesses(final Path dir, final TestInfo test) throws IOException {
        this.dir = dir;
        // Children's logs outlive the temporary directory, for post-mortems of a failed run.
        this.logs = Files.createDirectories(Path.of("target", "lazy-process-logs", test.getTestMethod().orElseThrow().getName()));
        this.golden = TestImage.pattern(SIZE, 42);
        this.goldenFile = Files.write(dir.resolve("golden.raw"), golden);
        this.otherFile = TestImage.create(dir.resolve("other.raw"), SIZE, 43);
        this.secret = TestImage.pattern(32, 7);
        this.secretFile = Files.write(dir.resolve("secret"), secret);
        Files.setPosixFilePermissions(secretFile, PosixFilePermissions.fromString("rw-------"));
    }

    <T extends AutoCloseable> T track(final T resource) {
        resources.push(resource);
        return resource;
    }

    /** Forgets {@code resource}, for a test that closes it itself, in an order it needs. */
    void untrack(final AutoCloseable resource) {
        resources.remove(resource);
    }

    /** {@code lazyblk image-server} exporting golden and other; {@code port} 0 picks a free one (see {@link #portOf}). */
    LazyblkProcess startProvider(final String name, final int port) throws IOException {
        final LazyblkProcess p = track(LazyblkProcess.start(name, logs, "image-server", "--listen", "127.0.0.1:" + port,
            "--export", IMAGE + "=" + goldenFile, "--export", OTHER + "=" + otherFile, "--secret-file", secretFile.toString(),
            "--page-size", "64k", "--cache-dir", dir.resolve("manifests").toString()));
        p.awaitLine("serving " + IMAGE + " ", LazyblkProcess.START_TIMEOUT);
        return p;
    }

    /** {@code lazyblk image-server --unix SOCK} (no TCP) exporting golden: the host cache for shm:// engines. */
    LazyblkProcess startHostCache(final String name, final Path sock) throws IOException {
        final LazyblkProcess p = track(LazyblkProcess.start(name, logs, "image-server", "--unix", sock.toString(),
            "--export", IMAGE + "=" + goldenFile, "--secret-file", secretFile.toString(), "--page-size", "64k",
            "--cache-dir", dir.resolve("manifests").toString()));
        p.awaitLine("serving " + IMAGE + " ", LazyblkProcess.START_TIMEOUT);
        return p;
    }

    /** {@code lazyblk serve} with the given {@code --source} URIs (one token for all), started and ready. */
    LazyblkProcess startEngine(final String name, final Path local, final Path socket, final String fillRate, final String... sources)
        throws IOException {
        final java.util.List<String> args = new java.util.ArrayList<>(java.util.List.of("serve", "--socket", socket.toString(),
            "--local", local.toString(), "--token", token(IMAGE), "--fill-rate", fillRate, "--memory-budget", "4M"));
        for (final String s : sources) {
            args.add("--source");
            args.add(s);
        }
        final LazyblkProcess e = track(LazyblkProcess.start(name, logs, args.toArray(String[]::new)));
        e.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);
        return e;
    }

    /** {@code lazyblk ARGS} as a child with {@code env} added to its environment, not waited for. */
    LazyblkProcess start(final String name, final Map<String, String> env, final String... args) throws IOException {
        return track(LazyblkProcess.start(name, logs, env, args));
    }

    /** The port a started provider listens on, from its "serving golden (...) on HOST:PORT" line. */
    static int portOf(final LazyblkProcess provider) {
        final String line = provider.awaitLine("serving " + IMAGE + " ", Duration.ZERO);
        return Integer.parseInt(line.substring(line.lastIndexOf(':') + 1).strip());
    }

    /** The provider in this JVM, exporting golden, for the tests that count its requests or corrupt its pages. */
    ImageServer startInProcessProvider() throws IOException {
        return track(ImageServer.start(new InetSocketAddress("127.0.0.1", 0), Map.of(IMAGE, goldenFile), secret, PAGE,
            new ManifestBuilder(dir.resolve("manifests"))));
    }

    /** A token for {@code image}, valid for an hour. */
    String token(final String image) {
        return AccessToken.mint(secret, image, Instant.now().plus(Duration.ofHours(1)));
    }

    /** {@code lazyblk serve --source} as a child, not waited for. */
    LazyblkProcess serve(final String name, final Path local, final Path socket, final int port, final String image,
                         final String token, final String fillRate, final int demandTimeoutSeconds, final int queues)
        throws IOException {
        return track(LazyblkProcess.start(name, logs, "serve", "--socket", socket.toString(), "--local", local.toString(),
            "--source", "tcp://127.0.0.1:" + port + "/" + image, "--token", token, "--fill-rate", fillRate,
            "--demand-timeout", String.valueOf(demandTimeoutSeconds), "--queues", String.valueOf(queues),
            // 64 page buffers: plenty for these images, and the child does not zero 256 MiB at start
            "--memory-budget", "4M"));
    }

    /** {@code lazyblk serve} of golden, started and ready: it printed its "serving" line and its socket exists. */
    LazyblkProcess startEngine(final String name, final Path local, final Path socket, final int port, final String fillRate,
                               final int demandTimeoutSeconds, final int queues) throws IOException {
        final LazyblkProcess e = serve(name, local, socket, port, IMAGE, token(IMAGE), fillRate, demandTimeoutSeconds, queues);
        e.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);
        assertTrue(Files.exists(socket), name + " printed that it serves, so its socket exists");
        return e;
    }

    /** A front end through the full handshake with {@code queues} queues and 32 MiB of guest RAM. */
    VhostUserFrontend connect(final Path socket, final int queues) throws IOException {
        return track(VhostUserFrontend.connect(socket, GuestRam.create(32L << 20),
            FrontendConfig.defaults().withQueues(queues).withReplyTimeout(DEADLINE)));
    }

    static BlkClient client(final VhostUserFrontend fe, final int queue, final Duration timeout) {
        return new BlkClient(fe, queue).timeout(timeout);
    }

    ExecutorService threads(final int n) {
        final ExecutorService pool = Executors.newFixedThreadPool(n);
        track((AutoCloseable) pool::shutdownNow);
        return pool;
    }

    static byte[] slice(final byte[] a, final long offset, final int length) {
        return Arrays.copyOfRange(a, (int) offset, (int) offset + length);
    }

    /** A read of {@code length} bytes at {@code offset} succeeds with {@code expected}'s bytes there. */
    static void assertReads(final BlkClient blk, final byte[] expected, final long offset, final int length, final String what)
        throws IOException {
        final BlkResponse r = blk.read(offset / SECTOR, length);
        assertEquals(VirtioBlk.statusName(OK), VirtioBlk.statusName(r.status()), what + ": status");
        assertArrayEquals(slice(expected, offset, length), r.data(), what + ": bytes");
    }

    /** Busy-waits {@code nanos}: for staggering requests by microseconds, where a sleep is far too coarse. */
    static void spin(final long nanos) {
        final long until = System.nanoTime() + nanos;
        while (System.nanoTime() - until < 0) {
            Thread.onSpinWait();
        }
    }

    /** Closes everything started, newest first, whatever fails: a child left running would outlive the test run. */
    @Override
    public void close() {
        while (!resources.isEmpty()) {
            try {
                resources.pop().close();
            } catch (final Exception | AssertionError e) {
                // keep closing the rest
            }
        }
    }
}
