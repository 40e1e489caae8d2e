package io.lazyblk.tools;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.tcp.TcpPageSource;
import io.lazyblk.pull.token.AccessToken;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static io.lazyblk.tools.CliRun.run;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@code lazyblk token} and {@code lazyblk image-server} as an operator meets them: clear refusals, and a token that works. */
class ProviderCommandsTest {
    @TempDir
    Path dir;
    private Path secretFile;
    private byte[] secret;
    private Path image;
    private byte[] content;

    @BeforeEach
    void files() throws Exception {
        secret = new byte[32];
        new Random(1).nextBytes(secret);
        secretFile = Files.write(dir.resolve("secret"), secret);
        content = new byte[(1 << 20) + 4096];
        new Random(2).nextBytes(content);
        image = Files.write(dir.resolve("disk.img"), content);
    }

    @Test
    void shouldPrintHelpForBothCommands() {
        for (final String cmd : new String[] {"image-server", "token"}) {
            final CliRun r = run(cmd, "--help");
            assertEquals(0, r.code(), cmd);
            assertTrue(r.out().contains("Usage: lazyblk " + cmd), r.out());
        }
    }

    @Test
    void shouldPrintATokenAloneOnOneLineThatVerifiesForItsImageUntilItsTtl() {
        final CliRun r = run("token", "--secret-file", secretFile.toString(), "--image", "disk", "--ttl", "15m");
        assertEquals(0, r.code(), r.err());
        final String token = r.out().strip();
        assertEquals(token + System.lineSeparator(), r.out(), "the token alone on one line");
        assertEquals(AccessToken.Verdict.OK, AccessToken.verify(secret, "disk", token, Instant.now()));
        assertEquals(AccessToken.Verdict.EXPIRED, AccessToken.verify(secret, "disk", token, Instant.now().plus(Duration.ofMinutes(16))));
        assertEquals(AccessToken.Verdict.BAD_SIGNATURE, AccessToken.verify(secret, "other", token, Instant.now()));
    }

    @Test
    void shouldRefuseTokenArgumentsWithAMessageThatSaysWhatToDo() {
        final CliRun missing = run("token", "--secret-file", dir.resolve("nope").toString(), "--image", "disk", "--ttl", "1h");
        assertEquals(2, missing.code());
        assertTrue(missing.err().contains("head -c 32 /dev/urandom"), missing.err());
        final CliRun badTtl = run("token", "--secret-file", secretFile.toString(), "--image", "disk", "--ttl", "10x");
        assertEquals(2, badTtl.code());
        assertTrue(badTtl.err().contains("is not a duration (examples: 500ms, 30s, 15m, 24h, 7d"), badTtl.err());
        assertEquals(2, run("token", "--secret-file", secretFile.toString(), "--image", "disk", "--ttl", "0s").code());
    }

    @Test
    void shouldRefuseImageServerArgumentsWithAMessageThatSaysWhatToDo() {
        final String s = secretFile.toString();
        final String img = image.toString();
        assertRefused(run("image-server", "--listen", "7400", "--export", "disk", "--secret-file", s), "is not NAME=PATH (e.g. --export");
        assertRefused(run("image-server", "--listen", "7400", "--export", "disk=" + dir.resolve("missing.img"), "--secret-file", s),
            "does not exist");
        assertRefused(run("image-server", "--listen", "7400", "--export", "disk=" + dir, "--secret-file", s), "not a readable regular file");
        assertRefused(run("image-server", "--listen", "7400", "--export", "disk=" + img, "--export", "disk=" + img, "--secret-file", s),
            "given twice");
        assertRefused(run("image-server", "--listen", "7400", "--export", "disk=" + img, "--secret-file", dir.resolve("none").toString()),
            "head -c 32 /dev/urandom");
        assertRefused(run("image-server", "--listen", "7400", "--export", "disk=" + img, "--secret-file", s, "--page-size", "3000"),
            "power of two from 4k to 4M");
        assertRefused(run("image-server", "--listen", "host:port", "--export", "disk=" + img, "--secret-file", s), "is not HOST:PORT");
        assertRefused(run("image-server", "--listen", "7400", "--export", "disk=" + img, "--secret-file", s, "--max-connections-per-peer", "0"),
            "must be at least 1");
        assertRefused(run("image-server", "--listen", "7400", "--export", "disk=" + img, "--secret-file", s, "--max-connections", "8",
            "--max-connections-per-peer", "16"), "the one per peer at most the one in all");
        assertRefused(run("image-server", "--listen", "7400", "--export", "disk=" + img, "--secret-file", s, "--idle-timeout", "0s"),
            "is not a duration");
    }

    @Test
    void shouldHoldAPeerToTheConnectionLimitGivenOnTheCommandLine() throws Exception {
        final ImageServerCommand cmd = new ImageServerCommand();
        new CommandLine(cmd).parseArgs("--listen", "0", "--export", "disk=" + image, "--secret-file", secretFile.toString(),
            "--page-size", "16k", "--cache-dir", dir.resolve("cache").toString(), "--max-connections-per-peer", "2", "--idle-timeout", "1h");
        final PrintStream quiet = new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8);
        try (ImageServer server = cmd.start(quiet, quiet)) {
            final String token = AccessToken.mint(secret, "disk", Instant.now().plusSeconds(600));
            // Two lanes: one engine's tcp:// source takes both slots of this host.
            try (io.lazyblk.pull.tcp.TwoLaneTcpSource lanes = io.lazyblk.pull.tcp.TwoLaneTcpSource.connect(server.address(), "disk", token,
                TcpPageSource.Options.defaults())) {
                final java.io.IOException e = assertThrows(java.io.IOException.class, () -> TcpPageSource.connect(server.address(), "disk", token));
                assertTrue(e.getMessage().contains("closed the connection during the hello"), e.getMessage());
                assertEquals(1, server.stats().limited());
                assertTrue(lanes.connected());
            }
        }
    }

    private static void assertRefused(final CliRun r, final String says) {
        assertEquals(2, r.code(), r.out() + r.err());
        assertTrue(r.err().contains(says), "expected '" + says + "' in: " + r.err());
    }

    @Test
    void shouldServeAnExportThatASourceWithACliTokenCanFetchFrom() throws Exception {
        final ImageServerCommand cmd = new ImageServerCommand();
        new CommandLine(cmd).parseArgs("--listen", "0", "--export", "disk=" + image, "--secret-file", secretFile.toString(),
            "--page-size", "16k", "--cache-dir", dir.resolve("cache").toString());
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        final ByteArrayOutputStream err = new ByteArrayOutputStream();
        try (ImageServer server = cmd.start(new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8))) {
            final String digest = io.lazyblk.pagemap.Manifest.of(java.nio.file.Files.readAllBytes(image), 16 << 10).digestHex().substring(0, 16);
            assertEquals("serving disk (1.0 MiB, 65 pages, digest " + digest + "...) on 127.0.0.1:" + server.port() + System.lineSeparator(),
                out.toString(StandardCharsets.UTF_8));
            final String token = run("token", "--secret-file", secretFile.toString(), "--image", "disk", "--ttl", "1h").out().strip();
            try (TcpPageSource source = TcpPageSource.connect(server.address(), "disk", token); Arena arena = Arena.ofShared()) {
                final MemorySegment dst = arena.allocate(16 << 10);
                final CompletableFuture<Integer> status = new CompletableFuture<>();
                assertTrue(source.fetch(64, 1, dst, PageSource.DEMAND, 0, (t, f, c, st) -> status.complete(st)));
                assertEquals(PageSource.OK, status.get(10, TimeUnit.SECONDS));
                assertEquals(-1, MemorySegment.mismatch(dst, 0, 4096, MemorySegment.ofArray(content), 64L << 14, content.length));
            }
        }
    }

    @Test
    void shouldLearnBootProfilesUnlessToldNotToAndSayWhatTheOptionsDo() throws Exception {
        final CliRun help = run("image-server", "--help");
        for (final String option : new String[] {"--profile-window", "--profile-max", "--no-profile"}) {
            assertTrue(help.out().contains(option), option + " in: " + help.out());
        }
        assertRefused(run("image-server", "--listen", "7400", "--export", "disk=" + image, "--secret-file", secretFile.toString(),
            "--profile-max", "0"), "must be positive");
        for (final boolean off : new boolean[] {false, true}) {
            final ImageServerCommand cmd = new ImageServerCommand();
            final java.util.List<String> args = new java.util.ArrayList<>(java.util.List.of("--listen", "0", "--export", "disk=" + image,
                "--secret-file", secretFile.toString(), "--page-size", "16k", "--profile-window", "1m", "--profile-max", "1M"));
            if (off) {
                args.add("--no-profile");
            }
            new CommandLine(cmd).parseArgs(args.toArray(String[]::new));
            final PrintStream quiet = new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8);
            try (ImageServer server = cmd.start(quiet, quiet)) {
                final String token = AccessToken.mint(secret, "disk", Instant.now().plusSeconds(600));
                try (TcpPageSource source = TcpPageSource.connect(server.address(), "disk", token); Arena arena = Arena.ofShared()) {
                    final CompletableFuture<Integer> status = new CompletableFuture<>();
                    assertTrue(source.fetch(3, 1, arena.allocate(16 << 10), PageSource.DEMAND, 0, (t, f, c, st) -> status.complete(st)));
                    assertEquals(PageSource.OK, status.get(10, TimeUnit.SECONDS));
                }
                io.lazyblk.pagemap.Await.until("the boot is merged at the connection's end", Duration.ofSeconds(10),
                    () -> server.stats().open() == 0);
                assertEquals(off ? 0 : 1, server.profileForTesting("disk", false).length, off ? "--no-profile" : "learning by default");
            }
        }
    }

    @Test
    void shouldRefuseASecondServerOnABusyPortWithARuntimeError() throws Exception {
        final ImageServerCommand first = new ImageServerCommand();
        new CommandLine(first).parseArgs("--listen", "0", "--export", "disk=" + image, "--secret-file", secretFile.toString());
        try (ImageServer server = first.start(new PrintStream(new ByteArrayOutputStream()), new PrintStream(new ByteArrayOutputStream()))) {
            final ImageServerCommand second = new ImageServerCommand();
            new CommandLine(second).parseArgs("--listen", String.valueOf(server.port()), "--export", "disk=" + image,
                "--secret-file", secretFile.toString());
            final java.io.IOException e = assertThrows(java.io.IOException.class,
                () -> second.start(new PrintStream(new ByteArrayOutputStream()), new PrintStream(new ByteArrayOutputStream())));
            assertTrue(e.getMessage().contains("is another image-server running there?"), e.getMessage());
        }
    }
}
