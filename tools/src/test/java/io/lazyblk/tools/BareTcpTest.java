package io.lazyblk.tools;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

/** The benchmarks' raw TCP cost must be a real round trip: each answer is what that request asked for. */
class BareTcpTest {
    @TempDir
    Path dir;

    @Test
    @Timeout(30) // a server that misreads the request sends the wrong range, or nothing
    void shouldAnswerEachRequestWithTheRangeItAskedForFromTheFile() throws Exception {
        final int page = 64 << 10;
        final byte[] image = new byte[16 * page];
        new Random(5).nextBytes(image);
        final Path file = dir.resolve("image.raw");
        Files.write(file, image);
        try (BareTcp bare = new BareTcp(page, file)) {
            for (final int p : new int[] {3, 0, 15, 7, 7}) {
                bare.roundTrip((long) p * page);
                assertArrayEquals(Arrays.copyOfRange(image, p * page, (p + 1) * page), bare.lastAnswer(), "page " + p);
            }
        }
    }
}
