package io.lazyblk.pull.s3;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * S3 requests from the command line, for tests that need a client independent of lazyblk's own: curl (7.75 or later)
 * signs them with SigV4 itself. Each request carries {@code x-amz-content-sha256: UNSIGNED-PAYLOAD}, which s3proxy
 * (like S3) requires and curl does not add.
 */
final class Curl {
    private static final String CURL = "/usr/bin/curl";
    /** A request to a local server that takes this long has hung. */
    private static final int MAX_SECONDS = 30;

    /** One transfer's outcome: curl's exit code (0, or e.g. 18 for a body cut short), HTTP status (0 if none), body. */
    record Result(int exit, int status, byte[] body, String stderr) {
        String bodyText() {
            return new String(body, StandardCharsets.UTF_8);
        }
    }

    private final Path dir;
    private final String accessKey;
    private final String secretKey;
    private final String region;
    private int files;

    /** A client signing with this key pair; response bodies land in files under {@code dir}. */
    Curl(final Path dir, final String accessKey, final String secretKey, final String region) {
        this.dir = dir;
        this.accessKey = accessKey;
        this.secretKey = secretKey;
        this.region = region;
    }

    /** The signing options of one transfer; after {@code --next} curl needs them again. */
    List<String> auth() {
        return List.of("--aws-sigv4", "aws:amz:" + region + ":s3", "--user", accessKey + ":" + secretKey,
            "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    }

    /** A signed GET; {@code extra} are more curl options (e.g. "-H", "Range: bytes=0-9"). */
    Result get(final String url, final String... extra) throws IOException, InterruptedException {
        return run(url, List.of(extra));
    }

    /**
     * A signed PUT of {@code content} with curl's -T: Content-Length set, and Expect: 100-continue, which curl 7.88
     * adds to any upload over 1 KiB (pass "-H", "Expect:" to send the body with the head).
     */
    Result put(final String url, final byte[] content, final String... extra) throws IOException, InterruptedException {
        final Path src = dir.resolve("upload-" + (files++));
        Files.write(src, content);
        final List<String> opts = new ArrayList<>(List.of("-T", src.toString()));
        opts.addAll(List.of(extra));
        return run(url, opts);
    }

    /** One signed transfer to {@code url} with {@code opts}. */
    Result run(final String url, final List<String> opts) throws IOException, InterruptedException {
        final Path out = dir.resolve("body-" + (files++));
        final List<String> cmd = new ArrayList<>(List.of(CURL, "-sS", "--max-time", String.valueOf(MAX_SECONDS),
            "-o", out.toString(), "-w", "%{http_code}"));
        cmd.addAll(auth());
        cmd.addAll(opts);
        cmd.add(url);
        final Raw raw = exec(cmd);
        final String code = raw.stdout().trim();
        return new Result(raw.exit(), code.isEmpty() ? 0 : Integer.parseInt(code),
            Files.exists(out) ? Files.readAllBytes(out) : new byte[0], raw.stderr());
    }

    /** curl's exit code, standard output and standard error, for command lines built by the caller. */
    record Raw(int exit, String stdout, String stderr) {
    }

    Raw exec(final List<String> cmd) throws IOException, InterruptedException {
        final Path err = dir.resolve("stderr-" + (files++));
        final Process p = new ProcessBuilder(cmd).redirectError(err.toFile()).start();
        p.getOutputStream().close();
        final String stdout = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(MAX_SECONDS + 10, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError("curl did not end: " + cmd);
        }
        return new Raw(p.exitValue(), stdout, Files.readString(err));
    }
}
