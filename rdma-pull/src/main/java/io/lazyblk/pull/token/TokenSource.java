package io.lazyblk.pull.token;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Function;

/**
 * Where an engine's access token comes from. A source asks for it each time it connects or reconnects to a provider,
 * so a token kept in a file ({@link #file}) can be rotated without a restart: write the new token to a new file and
 * rename it over the old one. The token itself is never part of {@link #toString()} or any message.
 *
 * <p>Implementations are thread-safe: transports read their token on their own threads.
 */
public interface TokenSource {
    /** The environment variable {@code lazyblk serve} takes its token(s) from when given neither --token nor --token-file. */
    String ENV = "LAZYBLK_TOKEN";
    /** A token file larger than this is not a token file (an image, a log) named by mistake. */
    int MAX_FILE_BYTES = 64 << 10;

    /**
     * The token to present now.
     *
     * @throws IOException if it cannot be had (a token file missing, unreadable or without a token for this source),
     *     with a message that names the source and says what to do
     */
    String token() throws IOException;

    /** Where the token comes from, for messages: never the token. */
    String describe();

    /** What an operator does when a provider refuses this source's token (expired, or not valid for the image). */
    String howToRenew();

    /** For a source that takes no lazyblk token (an s3:// source: S3's credentials decide). Asking it fails. */
    TokenSource NONE = new TokenSource() {
        @Override
        public String token() throws IOException {
            throw new IOException("this source takes no lazyblk token");
        }

        @Override
        public String describe() {
            return "no token (S3's credentials)";
        }

        @Override
        public String howToRenew() {
            return "renew the S3 credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) and start the engine again";
        }
    };

    /** One token, for good (given on the command line, or by a caller that mints its own). */
    static TokenSource fixed(final String token) {
        final String problem = problem(token);
        if (problem != null) {
            throw new IllegalArgumentException("the token given " + problem);
        }
        return new Fixed(token, "the token given with --token",
            "start the engine again with a fresh token (lazyblk token), or give it in a --token-file, which is re-read at each reconnect");
    }

    /**
     * The token of source {@code index} (from 0) in {@code file}, read at each call: the file holds one token for
     * every source, or one line per source in order. Blank lines and lines starting with {@code #} are skipped.
     */
    static TokenSource file(final Path file, final int index) {
        if (index < 0) {
            throw new IllegalArgumentException("source index " + index);
        }
        return new FileToken(file, index);
    }

    /** The token of source {@code index} in {@link #ENV} of this process's environment: see {@link #env(Function, int)}. */
    static TokenSource env(final int index) {
        return env(System::getenv, index);
    }

    /**
     * The token of source {@code index} in the environment variable {@link #ENV}, looked up through {@code environment}:
     * one token for every source, or one per source in order, separated by commas.
     */
    static TokenSource env(final Function<String, String> environment, final int index) {
        if (index < 0) {
            throw new IllegalArgumentException("source index " + index);
        }
        return new EnvToken(environment, index);
    }

    /**
     * The tokens of a file, as {@link #file} reads them: checked (size, each token's shape) so that a file rewritten
     * with junk is refused with a message, never sent.
     */
    static List<String> readFile(final Path file) throws IOException {
        final String howTo = "write one: lazyblk token --secret-file SECRET --image NAME --ttl 24h > " + file;
        final byte[] bytes;
        try (java.io.InputStream in = Files.newInputStream(file)) {
            // One open, then at most one byte past the limit: the file may be replaced (renamed over) at any moment.
            bytes = in.readNBytes(MAX_FILE_BYTES + 1);
        } catch (final NoSuchFileException e) {
            throw new IOException("token file " + file + " does not exist; " + howTo, e);
        } catch (final IOException e) {
            throw new IOException("cannot read token file " + file + " (" + e + ")", e);
        }
        if (bytes.length > MAX_FILE_BYTES) {
            throw new IOException("token file " + file + " holds more than " + MAX_FILE_BYTES + " bytes, more than tokens; is it the"
                + " right file?");
        }
        final List<String> tokens = new ArrayList<>();
        int lineNumber = 0;
        for (final String raw : new String(bytes, StandardCharsets.UTF_8).split("\n", -1)) {
            lineNumber++;
            final String line = raw.strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            final String problem = problem(line);
            if (problem != null) {
                throw new IOException("line " + lineNumber + " of token file " + file + " is not a token: it " + problem);
            }
            tokens.add(line);
        }
        if (tokens.isEmpty()) {
            throw new IOException("token file " + file + " holds no token; " + howTo);
        }
        return tokens;
    }

    /** What makes {@code t} unsendable as a token, or null: at most 512 printable ASCII characters, no spaces. */
    private static String problem(final String t) {
        if (t.length() > AccessToken.MAX_TOKEN_CHARS) {
            return "is " + t.length() + " characters long; at most " + AccessToken.MAX_TOKEN_CHARS;
        }
        for (int i = 0; i < t.length(); i++) {
            final char c = t.charAt(i);
            if (c <= ' ' || c > '~') {
                return "holds a character a token never has (at " + (i + 1) + ")";
            }
        }
        return null;
    }

    /** Token {@code index} of {@code tokens}: the only one, or the one of that source; {@code where} names the list. */
    private static String pick(final List<String> tokens, final int index, final String where) throws IOException {
        if (tokens.size() == 1) {
            return tokens.get(0);
        }
        if (index >= tokens.size()) {
            throw new IOException(where + " holds " + tokens.size() + " tokens, but source " + (index + 1) + " needs its own: give one"
                + " token for all sources, or one per --source in the same order");
        }
        return tokens.get(index);
    }

    /** A token that never changes. Not a record: its toString must not show the token. */
    final class Fixed implements TokenSource {
        private final String token;
        private final String describe;
        private final String howToRenew;

        private Fixed(final String token, final String describe, final String howToRenew) {
            this.token = token;
            this.describe = describe;
            this.howToRenew = howToRenew;
        }

        @Override
        public String token() {
            return token;
        }

        @Override
        public String describe() {
            return describe;
        }

        @Override
        public String howToRenew() {
            return howToRenew;
        }

        @Override
        public String toString() {
            return describe;
        }
    }

    /** A line of a token file, read again at each call. */
    final class FileToken implements TokenSource {
        private final Path file;
        private final int index;

        private FileToken(final Path file, final int index) {
            this.file = file;
            this.index = index;
        }

        @Override
        public String token() throws IOException {
            return pick(readFile(file), index, "token file " + file);
        }

        @Override
        public String describe() {
            return "token file " + file;
        }

        @Override
        public String howToRenew() {
            return "write the new one to a new file and rename it over " + file + " (it is read again at each attempt)";
        }

        @Override
        public String toString() {
            return describe();
        }
    }

    /** A token from the environment; the environment of a process does not change, but a test's may. */
    final class EnvToken implements TokenSource {
        private final Function<String, String> environment;
        private final int index;

        private EnvToken(final Function<String, String> environment, final int index) {
            this.environment = environment;
            this.index = index;
        }

        @Override
        public String token() throws IOException {
            final String value = environment.apply(ENV);
            if (value == null || value.isBlank()) {
                throw new IOException("no access token: give --token-file FILE, or set " + ENV);
            }
            final List<String> tokens = new ArrayList<>();
            for (final String t : value.split(",", -1)) {
                final String token = t.strip();
                final String problem = problem(token);
                if (token.isEmpty() || problem != null) {
                    throw new IOException(ENV + " holds something that is not a token" + (problem == null ? " (an empty entry)" : ": it " + problem)
                        + "; give one token, or one per --source separated by commas");
                }
                tokens.add(token);
            }
            return pick(tokens, index, ENV);
        }

        @Override
        public String describe() {
            return ENV;
        }

        @Override
        public String howToRenew() {
            return "start the engine again with a fresh token in " + ENV + " (lazyblk token), or give it in a --token-file,"
                + " which is re-read at each reconnect";
        }

        @Override
        public String toString() {
            return describe();
        }
    }
}
