package io.lazyblk.pull.token;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Where tokens come from: files read at each call, the environment, fixed strings; junk refused with a message. */
class TokenSourceTest {
    private static final String A = "v1.4102444800.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    private static final String B = "v1.4102444800.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    @TempDir
    Path dir;

    @Test
    void shouldReadTheFileAgainAtEachCallSoARenamedOverFileIsUsedAtOnce() throws IOException {
        final Path file = Files.writeString(dir.resolve("token"), A + "\n");
        final TokenSource t = TokenSource.file(file, 0);
        assertEquals(A, t.token());
        final Path fresh = Files.writeString(dir.resolve("token.new"), B + "\n");
        Files.move(fresh, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        assertEquals(B, t.token());
    }

    @Test
    void shouldGiveOneTokenToEverySourceOrEachSourceItsLineSkippingBlankAndCommentLines() throws IOException {
        final Path one = Files.writeString(dir.resolve("one"), "# minted 2025-01-01\n\n  " + A + "  \n");
        assertEquals(A, TokenSource.file(one, 0).token());
        assertEquals(A, TokenSource.file(one, 2).token(), "one token serves every source");
        final Path two = Files.writeString(dir.resolve("two"), A + "\r\n" + B + "\r\n");
        assertEquals(A, TokenSource.file(two, 0).token());
        assertEquals(B, TokenSource.file(two, 1).token());
        final IOException third = assertThrows(IOException.class, () -> TokenSource.file(two, 2).token());
        assertTrue(third.getMessage().contains("holds 2 tokens, but source 3 needs its own"), third.getMessage());
    }

    @Test
    void shouldRefuseAMissingEmptyOversizedOrJunkFileSayingWhatToDoAndNeverShowTheToken() throws IOException {
        final IOException missing = assertThrows(IOException.class, () -> TokenSource.file(dir.resolve("nope"), 0).token());
        assertTrue(missing.getMessage().contains("does not exist; write one: lazyblk token"), missing.getMessage());
        final Path empty = Files.writeString(dir.resolve("empty"), "\n# nothing\n");
        assertTrue(assertThrows(IOException.class, () -> TokenSource.file(empty, 0).token()).getMessage().contains("holds no token"));
        final Path big = Files.write(dir.resolve("big"), new byte[TokenSource.MAX_FILE_BYTES + 1]);
        assertTrue(assertThrows(IOException.class, () -> TokenSource.file(big, 0).token()).getMessage().contains("is it the right file?"));
        final Path spaced = Files.writeString(dir.resolve("spaced"), A + " " + B + "\n");
        final IOException junk = assertThrows(IOException.class, () -> TokenSource.file(spaced, 0).token());
        assertTrue(junk.getMessage().contains("line 1 of token file") && !junk.getMessage().contains(A), junk.getMessage());
        final Path longLine = Files.writeString(dir.resolve("long"), "v".repeat(AccessToken.MAX_TOKEN_CHARS + 1));
        assertTrue(assertThrows(IOException.class, () -> TokenSource.file(longLine, 0).token()).getMessage().contains("at most 512"));
        assertFalse(TokenSource.file(spaced, 0).toString().contains(A));
        assertFalse(TokenSource.fixed(A).toString().contains(A), "a fixed token is not shown either");
    }

    @Test
    void shouldTakeTheEnvironmentsTokenForEverySourceOrOnePerSourceSeparatedByCommas() throws IOException {
        assertEquals(A, TokenSource.env(Map.of(TokenSource.ENV, A)::get, 1).token());
        final Map<String, String> two = Map.of(TokenSource.ENV, A + ", " + B);
        assertEquals(A, TokenSource.env(two::get, 0).token());
        assertEquals(B, TokenSource.env(two::get, 1).token());
        final IOException unset = assertThrows(IOException.class, () -> TokenSource.env(Map.<String, String>of()::get, 0).token());
        assertTrue(unset.getMessage().contains("set " + TokenSource.ENV), unset.getMessage());
        final IOException empty = assertThrows(IOException.class, () -> TokenSource.env(Map.of(TokenSource.ENV, A + ",,")::get, 0).token());
        assertTrue(empty.getMessage().contains("an empty entry"), empty.getMessage());
        assertThrows(IllegalArgumentException.class, () -> TokenSource.fixed("v".repeat(AccessToken.MAX_TOKEN_CHARS + 1)));
    }
}
