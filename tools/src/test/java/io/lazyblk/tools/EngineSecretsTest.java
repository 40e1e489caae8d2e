package io.lazyblk.tools;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.io.TempDir;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Secrets off the command line: an engine given its token by {@code --token-file} or {@code LAZYBLK_TOKEN} fills from the
 * provider, and the token is nowhere in its {@code /proc/PID/cmdline}, which every local user can read (unlike
 * {@code --token}, whose value is there: the check can fail).
 */
class EngineSecretsTest {
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

    private static String cmdline(final long pid) throws Exception {
        return new String(Files.readAllBytes(Path.of("/proc", Long.toString(pid), "cmdline")), StandardCharsets.UTF_8).replace('\0', ' ');
    }

    @Test
    void shouldKeepTheTokenOutOfTheCommandLineWhenGivenByFileOrEnvironment() throws Exception {
        final LazyblkProcess provider = lazy.startProvider("provider", 0);
        final String source = "tcp://127.0.0.1:" + LazyProcesses.portOf(provider) + "/" + LazyProcesses.IMAGE;
        final String token = lazy.token(LazyProcesses.IMAGE);
        final Path tokenFile = Files.writeString(dir.resolve("vm.token"), token + "\n");
        Files.setPosixFilePermissions(tokenFile, PosixFilePermissions.fromString("rw-------"));

        final LazyblkProcess byFile = lazy.start("by-file", Map.of(), "serve", "--socket", dir.resolve("f.sock").toString(),
            "--local", dir.resolve("f.img").toString(), "--source", source, "--token-file", tokenFile.toString());
        byFile.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);
        final LazyblkProcess byEnv = lazy.start("by-env", Map.of("LAZYBLK_TOKEN", token), "serve", "--socket",
            dir.resolve("e.sock").toString(), "--local", dir.resolve("e.img").toString(), "--source", source);
        byEnv.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);
        final LazyblkProcess onLine = lazy.start("on-line", Map.of(), "serve", "--socket", dir.resolve("l.sock").toString(),
            "--local", dir.resolve("l.img").toString(), "--source", source, "--token", token);
        onLine.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);

        for (final LazyblkProcess p : new LazyblkProcess[] {byFile, byEnv}) {
            final String line = cmdline(p.pid());
            assertTrue(line.contains(" serve "), "the engine's own command line: " + line);
            assertFalse(line.contains(token), p.name() + ": the token is not in /proc/PID/cmdline: " + line);
            assertTrue(p.isAlive(), p.name() + " serves (it authenticated with the token)");
        }
        assertTrue(cmdline(onLine.pid()).contains(token), "with --token it is there: the check above can fail");
    }
}
