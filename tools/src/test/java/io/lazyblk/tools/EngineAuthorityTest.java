package io.lazyblk.tools;

import io.lazyblk.blk.LazyStore;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.pull.token.TokenSource;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Who says what the image is, with real providers on loopback: the seed (the last source) at the first start, the state
 * file on every restart. A peer can neither start a fill without the seed nor change the image of one under way.
 */
class EngineAuthorityTest {
    private static final int SIZE = 4 << 20;
    private static final int PAGE = 64 << 10;
    private static final byte[] SECRET = "0123456789abcdef0123456789abcdef".getBytes();

    @TempDir
    Path dir;
    private byte[] golden;
    private Path goldenFile;
    private final List<AutoCloseable> open = new ArrayList<>();

    @BeforeEach
    void images() throws IOException {
        golden = new byte[SIZE];
        new Random(42).nextBytes(golden);
        goldenFile = Files.write(dir.resolve("golden.raw"), golden);
    }

    @AfterEach
    void closeAll() throws Exception {
        for (int i = open.size() - 1; i >= 0; i--) {
            open.get(i).close();
        }
    }

    private ImageServer provider(final Path image, final int port) throws IOException {
        final ImageServer s = ImageServer.start(new InetSocketAddress("127.0.0.1", port), Map.of("golden", image), SECRET, PAGE,
            new ManifestBuilder(dir.resolve("manifests-" + image.getFileName())));
        open.add(s);
        return s;
    }

    private static int freePort() throws IOException {
        try (ServerSocket probe = new ServerSocket(0)) {
            return probe.getLocalPort();
        }
    }

    private static Engine.LazySource chain(final int... ports) {
        return slowChain(0, ports);
    }

    /** A chain of sources on loopback, nearest first, filled at {@code fillRate} bytes/s (0 = unlimited). */
    private static Engine.LazySource slowChain(final long fillRate, final int... ports) {
        final List<SourceUri> uris = new ArrayList<>();
        for (final int p : ports) {
            uris.add(SourceUri.tcp(new InetSocketAddress("127.0.0.1", p), "golden"));
        }
        return new Engine.LazySource(uris, List.of(TokenSource.fixed(AccessToken.mint(SECRET, "golden", Instant.now().plusSeconds(600)))),
            8L << 20, fillRate, Duration.ofSeconds(5), 0);
    }

    @Test
    void shouldRefuseAFirstStartWhileTheSeedIsDownWhateverThePeersSay() throws Exception {
        final ImageServer peer = provider(goldenFile, 0); // a peer with the right bytes: still not the one who says so
        final int seedPort = freePort();
        final Path local = dir.resolve("local.img");
        final IOException e = assertThrows(IOException.class,
            () -> Engine.startLazy(Engine.Options.file(dir.resolve("e.sock"), local), chain(peer.port(), seedPort)));
        assertTrue(e.getMessage().contains("the seed") && e.getMessage().contains("is unreachable")
            && e.getMessage().contains("Start again once the seed answers"), e.getMessage());
        assertTrue(Files.notExists(local), "nothing was created");
    }

    @Test
    void shouldResumeFromAPeerWhileTheSeedIsDownOnceTheStateFilePinnedTheImage() throws Exception {
        final Path local = dir.resolve("local.img");
        final Path sock = dir.resolve("e.sock");
        final ImageServer seed = provider(goldenFile, 0);
        final int seedPort = seed.port();
        final ImageServer peer = provider(goldenFile, 0);
        // First start: the seed is up and pins the image. No fill to speak of (1 KiB/s): stop at once.
        Engine.startLazy(Engine.Options.file(sock, local), slowChain(1024, peer.port(), seedPort)).close();
        seed.close();
        try (Engine e = Engine.startLazy(Engine.Options.file(sock, local), chain(peer.port(), seedPort))) {
            final LazyStore store = e.lazyStore();
            assertTrue(store.awaitDiskOnly(TimeUnit.SECONDS.toNanos(30)), "filled from the peer alone");
        }
        assertArrayEquals(golden, Files.readAllBytes(local));
    }

    @Test
    void shouldRefuseToResumeWhenTheSeedServesAnotherImageNow() throws Exception {
        final Path local = dir.resolve("local.img");
        final Path sock = dir.resolve("e.sock");
        final int seedPort = freePort();
        final ImageServer peer = provider(goldenFile, 0);
        ImageServer seed = provider(goldenFile, seedPort);
        Engine.startLazy(Engine.Options.file(sock, local), slowChain(1024, peer.port(), seedPort)).close();
        seed.close();
        final byte[] newer = golden.clone();
        newer[12345] ^= 1;
        seed = provider(Files.write(dir.resolve("newer.raw"), newer), seedPort); // the image changed upstream
        final IOException e = assertThrows(IOException.class,
            () -> Engine.startLazy(Engine.Options.file(sock, local), chain(peer.port(), seedPort)));
        assertTrue(e.getMessage().contains("belongs to another image"), e.getMessage());
    }

    @Test
    void shouldRefuseAPeerOfAnotherImageAndFillFromTheSeedShowingItRefused() throws Exception {
        final byte[] forged = golden.clone();
        forged[0] ^= 1;
        final ImageServer forger = provider(Files.write(dir.resolve("forged.raw"), forged), 0);
        final ImageServer seed = provider(goldenFile, 0);
        final Path local = dir.resolve("local.img");
        final Path sock = dir.resolve("e.sock");
        try (Engine e = Engine.startLazy(Engine.Options.file(sock, local), chain(forger.port(), seed.port()))) {
            final Map<String, String> st = StatusCommand.read(StatusServer.controlSocket(sock));
            assertTrue(st.get("source.0").endsWith(" refused"), st.toString());
            assertTrue(st.get("source.1").endsWith(" up"), st.toString());
            assertTrue(e.lazyStore().awaitDiskOnly(TimeUnit.SECONDS.toNanos(30)));
        }
        assertArrayEquals(golden, Files.readAllBytes(local));
        assertEquals(0, forger.stats().requests(), "not a page was asked of the refused source");
    }
}
