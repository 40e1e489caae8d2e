package io.lazyblk.tools;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Random;

/**
 * Raw image files filled with a known pattern, and the host's view of their bytes through plain Java file I/O, so
 * a test checks what the engine did to the file rather than reading back its own request through the engine.
 */
final class TestImage {
    private TestImage() {
    }

    /** Creates {@code path} holding {@code bytes} pseudo-random bytes from {@code seed}. */
    static Path create(final Path path, final int bytes, final long seed) throws IOException {
        Files.write(path, pattern(bytes, seed));
        return path;
    }

    static byte[] pattern(final int length, final long seed) {
        final byte[] b = new byte[length];
        new Random(seed).nextBytes(b);
        return b;
    }

    static byte[] readAll(final Path image) throws IOException {
        return Files.readAllBytes(image);
    }

    static byte[] read(final Path image, final long offset, final int length) throws IOException {
        try (FileChannel ch = FileChannel.open(image, StandardOpenOption.READ)) {
            final ByteBuffer buf = ByteBuffer.allocate(length);
            while (buf.hasRemaining() && ch.read(buf, offset + buf.position()) > 0) {
                // until full or end of file
            }
            return buf.array();
        }
    }
}
