package io.lazyblk.pull.manifest;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.concurrent.TimeUnit;

/**
 * What identifies one version of an image file without reading it: size, modification time (nanoseconds) and
 * inode (0 where the file system has none). A cached manifest is trusted only while the stamp is unchanged.
 */
record ImageStamp(long size, long mtimeNanos, long inode) {
    static ImageStamp of(final Path image) throws IOException {
        final BasicFileAttributes a = Files.readAttributes(image, BasicFileAttributes.class);
        if (!a.isRegularFile()) {
            throw new IOException(image + " is not a regular file");
        }
        long inode = 0;
        try {
            // Replacing the image by another file with the same size and mtime (cp -p, rsync -t) changes the inode.
            if (Files.getAttribute(image, "unix:ino") instanceof Long ino) {
                inode = ino;
            }
        } catch (final UnsupportedOperationException | IllegalArgumentException e) {
            // no unix view on this file system: size and mtime alone
        }
        return new ImageStamp(a.size(), a.lastModifiedTime().to(TimeUnit.NANOSECONDS), inode);
    }
}
