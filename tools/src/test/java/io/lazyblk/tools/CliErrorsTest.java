package io.lazyblk.tools;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * What a newcomer meets when something is wrong: one line naming the command and the problem, exit 1 for a runtime
 * error and 2 for a usage error, never a stack trace; and {@code --socket} never removes what is not a socket.
 */
class CliErrorsTest {
    @TempDir
    Path dir;

    private static void assertOneLine(final CliRun r, final int code, final String mentions) {
        assertEquals(code, r.code(), r.out() + r.err());
        assertFalse(r.err().contains("\tat ") || r.err().contains("Exception"), "no stack trace, no exception name:\n" + r.err());
        assertEquals(1, r.err().strip().lines().count(), "one line:\n" + r.err());
        assertTrue(r.err().contains(mentions), r.err());
    }

    @Test
    void shouldSayInOneLineThatTheSocketsDirectoryIsMissing() throws Exception {
        final Path img = Files.write(dir.resolve("ok.img"), new byte[4096]);
        assertOneLine(CliRun.run("serve", "--socket", dir.resolve("missing/dir/vm.sock").toString(), "--local", img.toString()),
            1, "does not exist (mkdir -p");
    }

    @Test
    void shouldSayInOneLineThatTheImageIsNotAMultipleOf512() throws Exception {
        final Path img = Files.write(dir.resolve("odd.img"), new byte[1000]);
        assertOneLine(CliRun.run("serve", "--socket", dir.resolve("vm.sock").toString(), "--local", img.toString()), 1,
            "multiple of 512");
    }

    @Test
    void shouldNeverRemoveAFileThatIsNotASocket() throws Exception {
        final Path img = Files.write(dir.resolve("ok.img"), new byte[4096]);
        final Path precious = Files.writeString(dir.resolve("notes.txt"), "mine");
        assertOneLine(CliRun.run("serve", "--socket", precious.toString(), "--local", img.toString()), 1, "is not a socket");
        assertEquals("mine", Files.readString(precious), "the file given as --socket by mistake is still there");
    }

    @Test
    void shouldSayInOneLineThatTheDemosWorkDirectoryCannotBeMade() throws Exception {
        final Path file = Files.writeString(dir.resolve("a-file"), "not a directory");
        assertOneLine(CliRun.run("demo", "--work-dir", file.resolve("sub").toString()), 1, "give --work-dir a directory you can write");
    }

    @Test
    void shouldExitTwoForAUsageError() {
        final CliRun r = CliRun.run("serve", "--socket");
        assertEquals(2, r.code(), r.out() + r.err());
        assertFalse(r.err().contains("\tat "), r.err());
    }
}
