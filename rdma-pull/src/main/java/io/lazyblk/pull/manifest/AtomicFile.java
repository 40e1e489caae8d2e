package io.lazyblk.pull.manifest;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;

/** Replaces a small file whole: a reader sees the old bytes or the new ones, never a mix. Stateless. */
public final class AtomicFile {
    private AtomicFile() {
    }

    /**
     * Writes {@code bytes} (position to limit) as {@code file}: a temporary file beside it, fsync, rename over it.
     *
     * @param syncDirectory also fsync the directory, so the rename itself survives a crash (a cache that can be
     *     rebuilt may skip it; a file whose loss costs more may not)
     */
    public static void write(final Path file, final ByteBuffer bytes, final boolean syncDirectory) throws IOException {
        final Path tmp = file.resolveSibling(file.getFileName() + ".tmp-" + ProcessHandle.current().pid());
        try {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING,
                StandardOpenOption.WRITE)) {
                while (bytes.hasRemaining()) {
                    ch.write(bytes);
                }
                ch.force(false);
            }
            try {
                Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (final AtomicMoveNotSupportedException e) {
                Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING);
            }
            if (syncDirectory) {
                try (FileChannel d = FileChannel.open(file.toAbsolutePath().getParent(), StandardOpenOption.READ)) {
                    d.force(true);
                }
            }
        } finally {
            Files.deleteIfExists(tmp);
        }
    }
}
