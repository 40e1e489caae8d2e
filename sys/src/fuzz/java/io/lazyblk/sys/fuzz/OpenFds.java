package io.lazyblk.sys.fuzz;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.TreeMap;

/**
 * This process's open fds of the kinds a protocol handler can leak (sockets, eventfds and other anon inodes, memfds,
 * pipes, and files under a given directory), from {@code /proc/self/fd}. Jar files and the like, which the JVM opens
 * on first use and keeps, are left out, so two snapshots around one input differ only by what the input leaked.
 */
public final class OpenFds {
    private OpenFds() {
    }

    /** fd -> what it is, for fds of the leakable kinds, plus regular files under {@code dir} (may be null). */
    public static Map<Integer, String> snapshot(final Path dir) {
        final Map<Integer, String> fds = new TreeMap<>();
        final String under = dir == null ? null : dir.toAbsolutePath().toString();
        try (DirectoryStream<Path> s = Files.newDirectoryStream(Path.of("/proc/self/fd"))) {
            for (final Path p : s) {
                final String target;
                try {
                    target = Files.readSymbolicLink(p).toString();
                } catch (final IOException e) {
                    continue; // closed meanwhile (the directory stream's own fd, for one)
                }
                if (leakable(target) || under != null && target.startsWith(under)) {
                    fds.put(Integer.parseInt(p.getFileName().toString()), target);
                }
            }
        } catch (final IOException e) {
            throw new IllegalStateException("cannot list /proc/self/fd", e);
        }
        return fds;
    }

    private static boolean leakable(final String target) {
        return target.startsWith("socket:") || target.startsWith("anon_inode:") || target.startsWith("/memfd:")
            || target.startsWith("pipe:");
    }

    /** The fds in {@code after} that were not in {@code before} (or now name something else). */
    public static Map<Integer, String> added(final Map<Integer, String> before, final Map<Integer, String> after) {
        final Map<Integer, String> added = new TreeMap<>();
        after.forEach((fd, what) -> {
            if (!what.equals(before.get(fd))) {
                added.put(fd, what);
            }
        });
        return added;
    }
}
