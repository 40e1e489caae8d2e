package io.lazyblk.tools;

import io.lazyblk.pull.token.TokenSource;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Map;

import static io.lazyblk.tools.LazyProcesses.DEADLINE;
import static io.lazyblk.tools.LazyProcesses.IMAGE;
import static io.lazyblk.tools.LazyProcesses.NO_BACKGROUND_FILL;
import static io.lazyblk.tools.LazyProcesses.PAGE;
import static io.lazyblk.tools.LazyProcesses.assertReads;
import static io.lazyblk.tools.LazyProcesses.client;
import static io.lazyblk.tools.LazyProcesses.portOf;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code lazyblk serve} with its token off the command line, as an operator runs it: from {@code --token-file}, and
 * from {@code LAZYBLK_TOKEN} in its real environment; both children of this test, with a child provider.
 */
class LazyProcessTokenTest {
    @TempDir
    Path dir;
    private LazyProcesses lazy;

    @BeforeEach
    void files(final TestInfo test) throws IOException {
        lazy = new LazyProcesses(dir, test);
    }

    @AfterEach
    void closeEverything() {
        lazy.close();
    }

    private String[] serve(final Path sock, final Path local, final int port, final String... tokenArgs) {
        final java.util.List<String> args = new java.util.ArrayList<>(java.util.List.of("serve", "--socket", sock.toString(),
            "--local", local.toString(), "--source", "tcp://127.0.0.1:" + port + "/" + IMAGE, "--fill-rate", NO_BACKGROUND_FILL,
            "--memory-budget", "4M"));
        args.addAll(java.util.List.of(tokenArgs));
        return args.toArray(String[]::new);
    }

    @Test
    void shouldServeWithTheTokenFromATokenFileNotTheCommandLine() throws Exception {
        final int port = portOf(lazy.startProvider("provider", 0));
        final String token = lazy.token(IMAGE);
        final Path tokenFile = Files.writeString(dir.resolve("vm1.token"), token + "\n");
        Files.setPosixFilePermissions(tokenFile, PosixFilePermissions.fromString("rw-------"));
        final Path sock = dir.resolve("engine.sock");
        final String[] args = serve(sock, dir.resolve("local.img"), port, "--token-file", tokenFile.toString());
        assertFalse(String.join(" ", args).contains(token), "the token is not on the command line ps shows");
        final LazyblkProcess engine = lazy.start("engine", Map.of(), args);
        engine.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);
        assertFalse(engine.printed("readable by", 0), "no warning for a token file only its owner reads");
        assertReads(client(lazy.connect(sock, 1), 0, DEADLINE), lazy.golden, 123L * PAGE + 4096, 8192, "a demand read");
    }

    @Test
    void shouldServeWithTheTokenInLazyblkTokenAndRefuseToStartWithoutAnyToken() throws Exception {
        final int port = portOf(lazy.startProvider("provider", 0));
        final Path sock = dir.resolve("engine.sock");
        final LazyblkProcess engine = lazy.start("engine", Map.of(TokenSource.ENV, lazy.token(IMAGE)),
            serve(sock, dir.resolve("local.img"), port));
        engine.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);
        assertReads(client(lazy.connect(sock, 1), 0, DEADLINE), lazy.golden, 45L * PAGE, PAGE, "a demand read");

        final LazyblkProcess none = lazy.start("no-token", Map.of(), serve(dir.resolve("none.sock"), dir.resolve("none.img"), port));
        assertEquals(2, none.awaitExit(DEADLINE));
        assertTrue(none.output().contains("give --token-file FILE, set " + TokenSource.ENV), none.output());
    }
}
