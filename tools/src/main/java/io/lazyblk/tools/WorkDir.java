package io.lazyblk.tools;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * The scratch directory of {@code demo} and the benchmarks. Their defaults carry the user's name
 * ({@code java.io.tmpdir/lazyblk-demo-USER}): {@code /tmp} is shared, and one user's directory would otherwise refuse
 * the next user's run.
 */
final class WorkDir {
    private WorkDir() {
    }

    /** Creates {@code dir} if needed; one line naming the directory and the way out if this user cannot write there. */
    static Path prepare(final Path dir) throws IOException {
        try {
            Files.createDirectories(dir);
        } catch (final IOException e) {
            throw new IOException("cannot create the work directory " + dir + " (" + e.getMessage()
                + "): give --work-dir a directory you can write", e);
        }
        if (!Files.isWritable(dir) || !Files.isExecutable(dir)) {
            throw new IOException("cannot write in the work directory " + dir + " (another user's?): give --work-dir a "
                + "directory you can write, or remove it");
        }
        return dir;
    }
}
