package io.lazyblk.tools;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * What the guest's {@code lazyblk.test=verify} loop (tools/guest/init) prints, and the checks a user would make of it:
 * the writer's rounds, the readers' chunks against the image, no disk error on the console, the last round's bytes.
 */
final class VerifyWorkload {
    /** The readers' chunk: 256 KiB. */
    static final int CHUNK = 256 << 10;
    private static final Pattern READ = Pattern.compile("LAZYBLK-READ reader=(\\d) round=(\\d+) offset=(\\d+) md5=([0-9a-f]{32})");

    private VerifyWorkload() {
    }

    /** The test guest, built and ready; the calling test is skipped (with the reason) where QEMU is not installed. */
    static io.lazyblk.tools.guest.QemuGuest guest() throws Exception {
        org.junit.jupiter.api.Assumptions.assumeTrue(io.lazyblk.tools.guest.QemuGuest.available(),
            "QEMU is not installed here: " + io.lazyblk.tools.guest.QemuGuest.unavailableReason());
        final io.lazyblk.tools.guest.QemuGuest g = new io.lazyblk.tools.guest.QemuGuest(io.lazyblk.tools.guest.QemuGuest
            .findGuestScriptsDir().orElseThrow(() -> new IllegalStateException("no tools/guest above the working directory")));
        g.prepare();
        return g;
    }

    /** Waits for the writer's round {@code round} (or a later one) on {@code console}; returns the round seen. */
    static int awaitRound(final BlockingQueue<String> console, final int round, final Duration step) throws InterruptedException {
        final long deadline = System.nanoTime() + step.toNanos();
        while (true) {
            final String line = console.poll(Math.max(1, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
            if (line == null) {
                fail("the guest did not reach round " + round + " within " + step.toSeconds() + " s");
            }
            if (line.contains("LAZYBLK-RESULT")) {
                fail("the guest ended before round " + round + ": " + line);
            }
            final int at = line.indexOf("LAZYBLK-ROUND ");
            if (at >= 0) {
                final int seen = Integer.parseInt(line.substring(at + 14).split(" ")[0]);
                if (seen >= round) {
                    return seen;
                }
            }
        }
    }

    /** Fails on any line of a guest console that shows a disk error. */
    static void assertNoDiskErrors(final List<String> console, final Object where) {
        for (final String line : console) {
            assertTrue(!line.contains("I/O error") && !line.contains("is not a head") && !line.contains("Buffer I/O"),
                "the guest saw a disk error: " + line + "; " + where);
        }
    }

    /** Checks every reader's chunk on {@code console} against {@code image}; returns how many there were. */
    static int checkReads(final List<String> console, final byte[] image) throws Exception {
        int reads = 0;
        for (final String line : console) {
            final Matcher m = READ.matcher(line);
            if (m.find()) {
                final long offset = Long.parseLong(m.group(3));
                assertEquals(md5(LazyProcesses.slice(image, offset, CHUNK)), m.group(4), "reader's chunk at " + offset);
                reads++;
            }
        }
        return reads;
    }

    /** What the writer writes in round {@code r}: "lazyblk-round-R\n" repeated, cut at 1 MiB. */
    static byte[] roundPattern(final int r) {
        final byte[] line = ("lazyblk-round-" + r + "\n").getBytes(StandardCharsets.US_ASCII);
        final byte[] out = new byte[1 << 20];
        for (int i = 0; i < out.length; i++) {
            out[i] = line[i % line.length];
        }
        return out;
    }

    static String md5(final byte[] b) throws Exception {
        return HexFormat.of().formatHex(MessageDigest.getInstance("MD5").digest(b));
    }
}
