package io.lazyblk.tools;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;

import static io.lazyblk.tools.CliRun.run;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The CLI as an operator meets it: help on every command, clear refusals, and the demo's front-end path. */
class CommandLineTest {
    @TempDir
    Path dir;

    @Test
    void shouldPrintHelpForEveryCommand() {
        for (final String cmd : new picocli.CommandLine(new Main()).getSubcommands().keySet()) {
            if ("help".equals(cmd)) {
                continue;
            }
            final CliRun r = run(cmd, "--help");
            assertEquals(0, r.code(), cmd);
            assertTrue(r.out().contains("Usage: lazyblk " + cmd), r.out());
        }
        assertTrue(run("--help").out().contains("serve"));
    }

    @Test
    void shouldRefuseServeWithoutAnImageSayingWhatToDo() {
        final CliRun r = run("serve", "--socket", dir.resolve("s").toString(), "--local", dir.resolve("missing.img").toString());
        assertEquals(2, r.code());
        assertTrue(r.err().contains("truncate -s"), r.err());
        final CliRun both = run("serve", "--socket", dir.resolve("s").toString());
        assertEquals(2, both.code());
        assertTrue(both.err().contains("--local IMAGE or --null SIZE"), both.err());
    }

    @Test
    void shouldRefuseBadSourcesAndTokenCountsSayingWhatIsExpected() {
        final String sock = dir.resolve("s").toString();
        final String local = dir.resolve("l.img").toString();
        final CliRun scheme = run("serve", "--socket", sock, "--local", local, "--token", "t", "--source", "ftp://host:1/img");
        assertEquals(2, scheme.code());
        assertTrue(scheme.err().contains("tcp://HOST:PORT/NAME, rdma://HOST:PORT/NAME, shm://SOCKPATH/NAME or s3://BUCKET/KEY"), scheme.err());
        final CliRun bucket = run("serve", "--socket", sock, "--local", local, "--source", "s3://Not_A_Bucket/k");
        assertEquals(2, bucket.code());
        assertTrue(bucket.err().contains("not a valid S3 bucket name"), bucket.err());
        final CliRun s3Token = run("serve", "--socket", sock, "--local", local, "--token", "t", "--source", "s3://images/golden.raw");
        assertEquals(2, s3Token.code());
        assertTrue(s3Token.err().contains("s3:// sources take no lazyblk token"), s3Token.err());
        final CliRun shm = run("serve", "--socket", sock, "--local", local, "--token", "t", "--source", "shm://nameonly");
        assertEquals(2, shm.code());
        assertTrue(shm.err().contains("shm://SOCKPATH/NAME"), shm.err());
        final CliRun tokens = run("serve", "--socket", sock, "--local", local, "--token", "a", "--token", "b", "--token", "c",
            "--source", "tcp://127.0.0.1:1/x", "--source", "tcp://127.0.0.1:2/x");
        assertTrue(tokens.code() != 0);
        assertTrue(tokens.err().contains("one --token for all of them, or one per --source"), tokens.err());
        final CliRun noWhere = run("image-server", "--export", "x=" + local, "--secret-file", local);
        assertTrue(noWhere.code() != 0);
        assertTrue(noWhere.err().contains("--unix SOCKPATH"), noWhere.err());
    }

    @Test
    void shouldRefuseBadSizesAndBlockSizesWithAMessage() {
        final CliRun r = run("serve", "--socket", dir.resolve("s").toString(), "--null", "12q");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("is not a size"), r.err());
        final CliRun b = run("bench", "--socket", dir.resolve("s").toString(), "--bs", "100");
        assertEquals(2, b.code());
        assertTrue(b.err().contains("multiple of 512"), b.err());
        final CliRun s = run("bench-sources", "--work-dir", dir.resolve("w").toString(), "--rounds", "0");
        assertEquals(2, s.code());
        assertTrue(s.err().contains("--rounds must be 1..100"), s.err());
    }

    @Test
    void shouldRunTheLazyDemoEndToEndThroughTheBuiltInFrontEnd() {
        final CliRun r = run("demo", "--front-end", "--work-dir", dir.toString(), "--size", "32M", "--fill-rate", "64M");
        assertEquals(0, r.code(), r.out() + r.err());
        assertTrue(r.out().contains("switched to disk-only"), r.out());
        assertTrue(r.out().contains("OK: the guest ran from an image pulled lazily"), r.out());
    }

    @Test
    void shouldRunTheLocalDemoThroughTheBuiltInFrontEnd() {
        final CliRun r = run("demo", "--front-end", "--local-only", "--work-dir", dir.toString(), "--size", "32M");
        assertEquals(0, r.code(), r.out() + r.err());
        assertTrue(r.out().contains("OK: the engine served the front end"), r.out());
    }
}
