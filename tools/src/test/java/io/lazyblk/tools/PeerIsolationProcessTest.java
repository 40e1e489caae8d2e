package io.lazyblk.tools;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.tools.frontend.BlkClient;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.io.TempDir;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static io.lazyblk.tools.LazyProcesses.DEADLINE;
import static io.lazyblk.tools.LazyProcesses.IMAGE;
import static io.lazyblk.tools.LazyProcesses.PAGE;
import static io.lazyblk.tools.LazyProcesses.PAGES;
import static io.lazyblk.tools.LazyProcesses.SECTOR;
import static io.lazyblk.tools.LazyProcesses.client;
import static io.lazyblk.tools.LazyProcesses.portOf;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Isolation between tenants, with real processes: a tenant's writes never leave its host as image bytes, and no peer
 * or cache can change what the image is. An engine A is filled to disk-only from the seed; its guest writes before and
 * after a restart of A; A's local file is exported by {@code lazyblk image-server} as a peer. Asked directly over the
 * provider protocol, the export serves every page A's guest left alone, byte for byte, and none it wrote to (also the
 * ones written a moment ago, before A recorded them). An engine B chained [that peer, the seed] ends with the golden
 * image exactly. An engine C chained [a forged peer, serving a modified copy with its own manifest, the seed] starts,
 * says it refused the forged peer, and ends with the golden image exactly.
 */
class PeerIsolationProcessTest {
    /** Pages A's guest writes to: whole, partial, a single sector, across a page boundary; before and after A's restart. */
    private static final long[][] BEFORE_RESTART = {{3L * PAGE, PAGE}, {17L * PAGE + 4096, 2048}, {40L * PAGE + PAGE - SECTOR, 2 * SECTOR}};
    private static final long[][] AFTER_RESTART = {{90L * PAGE + 512, SECTOR}, {200L * PAGE, 3 * PAGE}};

    @TempDir
    Path dir;
    private LazyProcesses lazy;

    @BeforeEach
    void setUp(final TestInfo test) throws Exception {
        lazy = new LazyProcesses(dir, test);
    }

    @AfterEach
    void tearDown() {
        lazy.close();
    }

    private static boolean written(final int page, final long[][]... sets) {
        for (final long[][] set : sets) {
            for (final long[] w : set) {
                if (page >= w[0] / PAGE && page <= (w[0] + w[1] - 1) / PAGE) {
                    return true;
                }
            }
        }
        return false;
    }

    private static void write(final BlkClient blk, final long[][] writes, final int seed) throws Exception {
        int s = seed;
        for (final long[] w : writes) {
            final byte[] d = TestImage.pattern((int) w[1], s++);
            assertEquals(LazyProcesses.OK, blk.write(w[0] / SECTOR, d), "guest write at " + w[0]);
        }
    }

    @Test
    void shouldNeverServeAGuestsWritesAsImageBytesAndNeverLetAPeerChangeTheImage() throws Exception {
        final LazyblkProcess seed = lazy.startProvider("seed", 0);
        final String seedUri = "tcp://127.0.0.1:" + portOf(seed) + "/" + IMAGE;

        // A: filled to disk-only, its guest writes, a restart (from disk), more writes.
        final Path localA = dir.resolve("a.img");
        final Path sockA = dir.resolve("a.sock");
        LazyblkProcess a = lazy.startEngine("engine-a", localA, sockA, "0", seedUri);
        a.awaitLine("switched to disk-only", Duration.ofSeconds(30));
        var fe = lazy.connect(sockA, 1);
        write(client(fe, 0, DEADLINE), BEFORE_RESTART, 100);
        assertEquals(LazyProcesses.OK, client(fe, 0, DEADLINE).flush());
        lazy.untrack(fe);
        fe.close();
        a.stop();
        lazy.untrack(a);
        a = lazy.startEngine("engine-a-restarted", localA, sockA, "0", seedUri);
        a.awaitLine("is complete", Duration.ZERO);
        fe = lazy.connect(sockA, 1);

        // A's file exported as a peer.
        final LazyblkProcess peer = lazy.start("peer", Map.of(), "image-server", "--listen", "127.0.0.1:0",
            "--export", IMAGE + "=" + localA, "--secret-file", dir.resolve("secret").toString());
        final String peerLine = peer.awaitLine("serving " + IMAGE + " ", LazyblkProcess.START_TIMEOUT);
        final int peerPort = Integer.parseInt(peerLine.substring(peerLine.lastIndexOf(':') + 1).strip());
        final String peerUri = "tcp://127.0.0.1:" + peerPort + "/" + IMAGE;

        // Writes after the restart, not flushed: A records them within a second, the export refuses them at once.
        write(client(fe, 0, DEADLINE), AFTER_RESTART, 200);
        try (PageSource direct = SourceUri.parse(peerUri).open(lazy.token(IMAGE), DEADLINE); Arena arena = Arena.ofShared()) {
            final MemorySegment buf = arena.allocate(PAGE, 4096);
            int served = 0;
            for (int p = 0; p < PAGES; p++) {
                final int status = fetch(direct, p, buf);
                if (written(p, BEFORE_RESTART, AFTER_RESTART)) {
                    assertEquals(PageSource.FAILED, status, "page " + p + " holds the guest's writes: the peer must answer 'not here'");
                } else {
                    assertEquals(PageSource.OK, status, "page " + p + " the guest never wrote: the peer serves it");
                    final byte[] got = new byte[PAGE];
                    MemorySegment.copy(buf, JAVA_BYTE, 0, got, 0, PAGE);
                    assertArrayEquals(LazyProcesses.slice(lazy.golden, (long) p * PAGE, PAGE), got, "page " + p + " as served by the peer");
                    served++;
                }
            }
            assertTrue(served > PAGES - 10, "the peer served what it holds: " + served);
        }

        // B: [peer, seed] -> the golden image, byte for byte.
        final Path localB = dir.resolve("b.img");
        final LazyblkProcess b = lazy.startEngine("engine-b", localB, dir.resolve("b.sock"), "0", peerUri, seedUri);
        b.awaitLine("switched to disk-only", Duration.ofSeconds(30));
        assertArrayEquals(lazy.golden, Files.readAllBytes(localB), "B holds the golden image, none of A's guest's bytes");

        // C: [forged peer, seed] -> refused peer, golden image.
        final byte[] forged = lazy.golden.clone();
        for (int p = 0; p < PAGES; p += 7) {
            Arrays.fill(forged, p * PAGE, p * PAGE + 512, (byte) 0x66);
        }
        final Path forgedFile = Files.write(dir.resolve("forged.raw"), forged);
        final LazyblkProcess forger = lazy.start("forged-peer", Map.of(), "image-server", "--listen", "127.0.0.1:0",
            "--export", IMAGE + "=" + forgedFile, "--secret-file", dir.resolve("secret").toString(), "--page-size", "64k",
            "--cache-dir", dir.resolve("forged-manifests").toString());
        final String forgerLine = forger.awaitLine("serving " + IMAGE + " ", LazyblkProcess.START_TIMEOUT);
        final String forgedUri = "tcp://127.0.0.1:" + forgerLine.substring(forgerLine.lastIndexOf(':') + 1).strip() + "/" + IMAGE;
        final Path localC = dir.resolve("c.img");
        final Path sockC = dir.resolve("c.sock");
        final LazyblkProcess c = lazy.startEngine("engine-c", localC, sockC, "0", forgedUri, seedUri);
        final String refused = c.awaitLine("it is refused", Duration.ZERO);
        assertTrue(refused.contains(forgedUri) && refused.contains("another image than the seed"), refused);
        c.awaitLine("switched to disk-only", Duration.ofSeconds(30));
        assertArrayEquals(lazy.golden, Files.readAllBytes(localC), "C holds the golden image, none of the forger's bytes");
    }

    @Test
    void shouldRefuseToServeACompleteCopyWhoseSizeChangedSinceItsFill() throws Exception {
        final LazyblkProcess seed = lazy.startProvider("seed", 0);
        final String seedUri = "tcp://127.0.0.1:" + portOf(seed) + "/" + IMAGE;
        final Path local = dir.resolve("a.img");
        final LazyblkProcess a = lazy.startEngine("engine", local, dir.resolve("a.sock"), "0", seedUri);
        a.awaitLine("switched to disk-only", Duration.ofSeconds(30));
        a.stop();
        lazy.untrack(a);
        try (var ch = java.nio.channels.FileChannel.open(local, java.nio.file.StandardOpenOption.WRITE)) {
            ch.truncate(LazyProcesses.SIZE / 2);
        }
        final LazyblkProcess again = lazy.start("engine-again", Map.of(), "serve", "--socket", dir.resolve("a.sock").toString(),
            "--local", local.toString(), "--source", seedUri, "--token", lazy.token(IMAGE));
        assertEquals(1, again.awaitExit(DEADLINE), again.output());
        assertTrue(again.output().contains("was resized or replaced after its fill"), again.output());
    }

    /** One page from {@code s} into {@code buf}; its completion status. */
    private static int fetch(final PageSource s, final int page, final MemorySegment buf) throws Exception {
        final CompletableFuture<Integer> done = new CompletableFuture<>();
        assertTrue(s.fetch(page, 1, buf, PageSource.DEMAND, page, (tag, first, n, status) -> done.complete(status)), "fetch accepted");
        return done.get(DEADLINE.toSeconds(), TimeUnit.SECONDS);
    }
}
