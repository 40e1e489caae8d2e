package io.lazyblk.tools;

import io.lazyblk.pagemap.Await;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.pull.token.TokenSource;
import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.BlkResponse;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Where {@code serve} takes its tokens from (--token, --token-file, LAZYBLK_TOKEN) and token rotation, through the
 * engine in this JVM against a real provider on loopback; the environment is injected rather than the process's.
 */
class EngineTokenTest {
    private static final int SIZE = 8 << 20;
    private static final int PAGE = 64 << 10;
    private static final byte[] SECRET = "engine-token-test-secret-0123456".getBytes();
    /** 1 KiB/s: pages stay absent until a read demands them. */
    private static final long NO_BACKGROUND_FILL = 1024;

    @TempDir
    Path dir;
    private byte[] golden;
    private Path goldenFile;
    private ImageServer server;

    @BeforeEach
    void startProvider() throws Exception {
        golden = new byte[SIZE];
        new Random(4).nextBytes(golden);
        goldenFile = Files.write(dir.resolve("golden.raw"), golden);
        server = provider(0);
    }

    @AfterEach
    void stopProvider() {
        server.close();
    }

    private ImageServer provider(final int port) throws java.io.IOException {
        return ImageServer.start(new InetSocketAddress("127.0.0.1", port), Map.of("golden", goldenFile), SECRET, PAGE,
            new ManifestBuilder(dir.resolve("manifests")));
    }

    private static String token(final Instant expiry) {
        return AccessToken.mint(SECRET, "golden", expiry);
    }

    private Engine.LazySource source(final List<TokenSource> tokens) {
        return new Engine.LazySource(List.of(SourceUri.tcp(new InetSocketAddress("127.0.0.1", server.port()), "golden")), tokens,
            8L << 20, NO_BACKGROUND_FILL, Duration.ofSeconds(30), 0);
    }

    private void assertDemandRead(final BlkClient blk, final int page) throws java.io.IOException {
        final BlkResponse r = blk.read((long) page * PAGE / 512, PAGE);
        assertTrue(r.ok(), "the demand read of page " + page);
        assertArrayEquals(Arrays.copyOfRange(golden, page * PAGE, (page + 1) * PAGE), r.data());
    }

    @Test
    void shouldServeWithTheTokenInLazyblkTokenWhenNeitherTokenNorTokenFileIsGiven() throws Exception {
        final List<TokenSource> tokens = ServeCommand.tokenSources(null, null, 1,
            Map.of(TokenSource.ENV, token(Instant.now().plusSeconds(600)))::get);
        final Path sock = dir.resolve("env.sock");
        try (Engine engine = Engine.startLazy(Engine.Options.file(sock, dir.resolve("env.img")), source(tokens));
             VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(32L << 20))) {
            assertDemandRead(new BlkClient(fe, 0), 77);
        }
    }

    /**
     * Rotation: the engine starts with a short-lived token in a file, which expires while it is connected; the provider
     * restarts, so the engine reconnects, and is refused while the file holds the expired token; once a fresh token is
     * renamed over the file, the engine reconnects with it and serves a demand read.
     */
    @Test
    void shouldReconnectWithTheTokenRotatedIntoItsFileAfterTheOldOneExpired() throws Exception {
        final Path tokenFile = dir.resolve("engine.token");
        final Instant expiry = Instant.now().plusSeconds(2); // whole seconds: valid for 1 to 2 s from now
        Files.writeString(tokenFile, token(expiry) + "\n");
        final List<TokenSource> tokens = ServeCommand.tokenSources(null, List.of(tokenFile), 1, Map.<String, String>of()::get);
        final Path sock = dir.resolve("rotate.sock");
        try (Engine engine = Engine.startLazy(Engine.Options.file(sock, dir.resolve("rotate.img")), source(tokens));
             VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(32L << 20))) {
            final BlkClient blk = new BlkClient(fe, 0);
            assertDemandRead(blk, 3);
            Await.until("the token expired", Duration.ofSeconds(10), () -> Instant.now().getEpochSecond() >= expiry.getEpochSecond());

            final int port = server.port();
            server.close(); // the provider restarts on its port: both connections drop, both reconnect with the file's token
            server = provider(port);
            Await.until("the expired token refused, and retried", Duration.ofSeconds(10), () -> server.stats().refused() >= 4);
            assertTrue(status(sock).get("source.0").endsWith(" down"), "the old token stays refused: " + status(sock));

            final Path fresh = Files.writeString(dir.resolve("engine.token.new"), token(Instant.now().plusSeconds(3600)) + "\n");
            Files.move(fresh, tokenFile, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            Await.until("reconnected with the rotated token", Duration.ofSeconds(10), () -> status(sock).get("source.0").endsWith(" up"));
            assertDemandRead(blk, 100);
        }
    }

    private static Map<String, String> status(final Path sock) throws java.io.IOException {
        return StatusCommand.read(StatusServer.controlSocket(sock));
    }

    @Test
    void shouldTakeOneTokenSourceForAllSourcesOrOnePerSourceFromEachWay() throws Exception {
        final String a = token(Instant.now().plusSeconds(600));
        final String b = token(Instant.now().plusSeconds(900));
        final Map<String, String> none = Map.of();
        assertEquals(List.of(a, a), values(ServeCommand.tokenSources(List.of(a), null, 2, none::get), 2));
        assertEquals(List.of(a, b), values(ServeCommand.tokenSources(List.of(a, b), null, 2, none::get), 2));
        final Path one = Files.writeString(dir.resolve("one"), a + "\n");
        final Path lines = Files.writeString(dir.resolve("lines"), a + "\n" + b + "\n");
        final Path other = Files.writeString(dir.resolve("other"), b + "\n");
        assertEquals(List.of(a, a), values(ServeCommand.tokenSources(null, List.of(one), 2, none::get), 2));
        assertEquals(List.of(a, b), values(ServeCommand.tokenSources(null, List.of(lines), 2, none::get), 2));
        assertEquals(List.of(a, b), values(ServeCommand.tokenSources(null, List.of(one, other), 2, none::get), 2));
        assertEquals(List.of(b, a), values(ServeCommand.tokenSources(null, null, 2, Map.of(TokenSource.ENV, b + "," + a)::get), 2));
        // The environment is used only when neither option is given.
        assertEquals(List.of(a), values(ServeCommand.tokenSources(null, List.of(one), 1, Map.of(TokenSource.ENV, b)::get), 1));
    }

    @Test
    void shouldRefuseTokensThatDoNotFitTheSourcesSayingWhatToGive() throws Exception {
        final String a = token(Instant.now().plusSeconds(600));
        final Path one = Files.writeString(dir.resolve("one"), a + "\n");
        final Path three = Files.writeString(dir.resolve("three"), a + "\n" + a + "\n" + a + "\n");
        final Map<String, String> none = Map.of();
        assertRefused("not both", () -> ServeCommand.tokenSources(List.of(a), List.of(one), 1, none::get));
        assertRefused("one --token for all of them, or one per --source", () -> ServeCommand.tokenSources(List.of(a, a, a), null, 2, none::get));
        assertRefused("holds 3 tokens for 2 sources", () -> ServeCommand.tokenSources(null, List.of(three), 2, none::get));
        assertRefused("each holds that source's token alone", () -> ServeCommand.tokenSources(null, List.of(one, three), 2, none::get));
        assertRefused("does not exist", () -> ServeCommand.tokenSources(null, List.of(dir.resolve("missing")), 1, none::get));
        assertRefused("give --token-file FILE, set " + TokenSource.ENV, () -> ServeCommand.tokenSources(null, null, 1, none::get));
        assertRefused(TokenSource.ENV + " holds 3 tokens for 2 sources",
            () -> ServeCommand.tokenSources(null, null, 2, Map.of(TokenSource.ENV, a + "," + a + "," + a)::get));
        assertRefused("not a token", () -> ServeCommand.tokenSources(null, null, 1, Map.of(TokenSource.ENV, "two words")::get));
    }

    private static void assertRefused(final String says, final org.junit.jupiter.api.function.Executable e) {
        final IllegalArgumentException x = assertThrows(IllegalArgumentException.class, e);
        assertTrue(x.getMessage().contains(says), "expected '" + says + "' in: " + x.getMessage());
        assertFalse(x.getMessage().contains("v1."), "no token in a message: " + x.getMessage());
    }

    private static List<String> values(final List<TokenSource> sources, final int n) throws java.io.IOException {
        assertEquals(n, sources.size());
        final java.util.ArrayList<String> out = new java.util.ArrayList<>();
        for (final TokenSource t : sources) {
            out.add(t.token());
        }
        return out;
    }
}
