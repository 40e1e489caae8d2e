package io.lazyblk.tools;

import io.lazyblk.pull.manifest.AtomicFile;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * What a live migration's source engine handed over at its switchover, kept beside its image ({@code IMG.lzbexport})
 * until its VM runs there again: the export's name and digest, the final set of changed pages and the guest's
 * write-cache mode. The disk does not change while it exists, so an engine restarted on the image (killed after the
 * switchover) exports it again under the same name and digest, and the destination finishes its copy from it.
 *
 * <pre>
 * magic "LZBX" u32 | version u32 (1) | digest 32 bytes | flags u32 (bit 0: writeback) | name length u16 | name UTF-8
 * | page count u32 | pages u32 each                                                           (little endian)
 * </pre>
 * A file that does not parse is reported, never half-used.
 */
record ExportRecord(String name, byte[] digest, boolean writeback, int[] pages) {
    private static final int MAGIC = 0x58425a4c; // "LZBX"
    private static final int VERSION = 1;

    static Path beside(final Path image) {
        return image.resolveSibling(image.getFileName() + ".lzbexport");
    }

    /** Writes it durably (temporary file, fsync, rename, directory fsync): done before the switchover's reply. */
    void write(final Path image) throws IOException {
        final byte[] n = name.getBytes(StandardCharsets.UTF_8);
        final ByteBuffer b = ByteBuffer.allocate(4 + 4 + 32 + 4 + 2 + n.length + 4 + 4 * pages.length).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(MAGIC).putInt(VERSION).put(digest).putInt(writeback ? 1 : 0).putShort((short) n.length).put(n).putInt(pages.length);
        for (final int p : pages) {
            b.putInt(p);
        }
        AtomicFile.write(beside(image), b.flip(), true);
    }

    /** The record beside {@code image}, or null if there is none; IOException naming the file if it is damaged. */
    static ExportRecord read(final Path image, final int pageCount) throws IOException {
        final Path f = beside(image);
        if (!Files.exists(f)) {
            return null;
        }
        final ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(f)).order(ByteOrder.LITTLE_ENDIAN);
        try {
            if (b.getInt() != MAGIC || b.getInt() != VERSION) {
                throw new IllegalArgumentException("not a version 1 export record");
            }
            final byte[] digest = new byte[32];
            b.get(digest);
            final int flags = b.getInt();
            final byte[] n = new byte[Short.toUnsignedInt(b.getShort())];
            b.get(n);
            final int count = b.getInt();
            if (count < 0 || count > pageCount || b.remaining() != 4L * count) {
                throw new IllegalArgumentException(count + " pages in " + b.remaining() + " bytes, of " + pageCount);
            }
            final int[] pages = new int[count];
            for (int i = 0; i < count; i++) {
                pages[i] = b.getInt();
                if (pages[i] < 0 || pages[i] >= pageCount) {
                    throw new IllegalArgumentException("page " + pages[i] + " outside the disk's " + pageCount);
                }
            }
            if ((flags & ~1) != 0) {
                throw new IllegalArgumentException("unknown flags 0x" + Integer.toHexString(flags));
            }
            return new ExportRecord(new String(n, StandardCharsets.UTF_8), digest, (flags & 1) != 0, pages);
        } catch (final RuntimeException e) {
            throw new IOException(f + " is damaged (" + e.getMessage() + "): if the migration it records is over, delete it", e);
        }
    }

    /** Removes the record beside {@code image}, durably (the VM runs there again: the disk changes from now on). */
    static void delete(final Path image) throws IOException {
        final Path f = beside(image);
        if (Files.deleteIfExists(f)) {
            try (java.nio.channels.FileChannel dir = java.nio.channels.FileChannel.open(f.toAbsolutePath().getParent())) {
                dir.force(true);
            }
        }
    }
}
