package io.lazyblk.persistence;

import com.code_intelligence.jazzer.junit.FuzzTest;
import io.lazyblk.sys.fuzz.FuzzBytes;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;
import java.util.OptionalInt;
import java.util.zip.CRC32C;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The page-state file read from damaged or hostile bytes: PageStateFile's recordedPageSize, diskOnlyImage, snapshot
 * and openOrCreate on a file whose bytes the fuzzer writes.
 *
 * <p>Input: a flags byte (bit 0: give the header a correct CRC32C, so the fuzzer gets past it; bit 1: open with a
 * fixed identity instead of the one the header names), a page number u32, then the file's bytes. Properties: the
 * probes never throw; snapshot and openOrCreate throw only IOException; they agree with each other and with the
 * probes; a file that opens has no local page past its end, and after one more page is marked local and committed a
 * snapshot shows exactly one more. The public static API only: the file's internals are changing.
 */
class PageStateFileFuzzTest {
    /** Where the file goes: tmpfs when there is one, as every input writes (and may fsync) it. */
    private static final Path DIR = tempDir();
    /** Bytes of the identity header the CRC covers: magic, version, size, page size, page count, digest. */
    private static final int HEADER_CRC_COVERS = 4 + 4 + 8 + 4 + 4 + 32;
    /** Identities larger than this are not opened (the engine opens only what a manifest describes); snapshot still reads them. */
    private static final long MAX_OPEN_SIZE = 16L << 30;

    private static Path tempDir() {
        try {
            final Path shm = Path.of("/dev/shm");
            final Path dir = Files.isDirectory(shm) && Files.isWritable(shm) ? Files.createTempDirectory(shm, "lazyblk-fuzz-state")
                : Files.createTempDirectory("lazyblk-fuzz-state");
            Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                try {
                    Files.deleteIfExists(dir.resolve("state"));
                    Files.deleteIfExists(dir);
                } catch (final IOException e) {
                    // a temp dir left behind
                }
            }));
            return dir;
        } catch (final IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @FuzzTest
    void stateFile(final byte[] input) throws IOException {
        final FuzzBytes in = new FuzzBytes(input);
        final int flags = in.u8();
        final int page = in.u32();
        final byte[] file = in.rest();
        if ((flags & 1) != 0 && file.length >= HEADER_CRC_COVERS + 4) {
            final CRC32C crc = new CRC32C();
            crc.update(file, 0, HEADER_CRC_COVERS);
            ByteBuffer.wrap(file).order(ByteOrder.LITTLE_ENDIAN).putInt(HEADER_CRC_COVERS, (int) crc.getValue());
        }
        final Path path = DIR.resolve("state");
        Files.write(path, file);
        try {
            check(path, file, (flags & 2) != 0, page);
        } finally {
            Files.deleteIfExists(path);
        }
    }

    private static void check(final Path path, final byte[] file, final boolean fixedIdentity, final int page) throws IOException {
        final OptionalInt recorded = PageStateFile.recordedPageSize(path);
        final Optional<String> diskOnlyImage = PageStateFile.diskOnlyImage(path);
        PageStateFile.Snapshot snap = null;
        try {
            snap = PageStateFile.snapshot(path);
        } catch (final IOException refused) {
            // damaged: refused with a message
        }
        if (snap != null) {
            assertEquals(OptionalInt.of(snap.pageSize()), recorded, "recordedPageSize disagrees with snapshot");
            assertEquals((snap.imageSize() + snap.pageSize() - 1) / snap.pageSize(), snap.pageCount());
            assertEquals(32, snap.digest().length);
            assertEquals((snap.pageCount() + 63) / 64, snap.local().length);
            if (snap.pageCount() % 64 != 0) {
                assertEquals(0, snap.local()[snap.local().length - 1] >>> (snap.pageCount() % 64), "local pages past the end");
            }
            assertTrue(diskOnlyImage.isEmpty() || snap.diskOnly(), "diskOnlyImage names an image, snapshot says not disk-only");
        }
        final ByteBuffer h = ByteBuffer.wrap(file).order(ByteOrder.LITTLE_ENDIAN);
        long size = 64 << 10;
        int pageSize = 4096;
        byte[] digest = new byte[32];
        if (!fixedIdentity && file.length >= HEADER_CRC_COVERS) {
            size = h.getLong(8);
            pageSize = h.getInt(16);
            digest = new byte[32];
            h.get(24, digest);
        }
        if (size <= 0 || size % 512 != 0 || size > MAX_OPEN_SIZE || pageSize < 4096 || pageSize > (4 << 20)
            || Integer.bitCount(pageSize) != 1) {
            return; // not an identity the engine would open with
        }
        final PageStateFile s;
        try {
            s = PageStateFile.openOrCreate(path, size, pageSize, digest);
        } catch (final IOException refused) {
            return;
        }
        final boolean existed = file.length > 0;
        final int target;
        final int localAfter;
        try (s) {
            assertEquals((size + pageSize - 1) / pageSize, s.pageCount());
            assertTrue(s.localCount() >= 0 && s.localCount() <= s.pageCount(), s.localCount() + " local of " + s.pageCount());
            if (existed && snap != null) {
                assertEquals(snap.pageCount(), s.pageCount());
                assertEquals(snap.diskOnly(), s.diskOnly());
                for (int i = 0; i < s.guestWordCount(); i++) {
                    assertEquals(snap.guestSectors()[i], s.guestWord(i), "guest word " + i);
                }
            }
            target = Integer.remainderUnsigned(page, s.pageCount());
            final int localBefore = s.localCount();
            final boolean was = s.isLocal(target);
            s.markLocal(target);
            s.commit();
            localAfter = s.localCount();
            assertEquals(localBefore + (was ? 0 : 1), localAfter);
        }
        final PageStateFile.Snapshot after = PageStateFile.snapshot(path); // what it wrote, it must read back
        assertTrue(after.isLocal(target), "page " + target + " marked local and committed, not local in the file");
        int count = 0;
        for (final long w : after.local()) {
            count += Long.bitCount(w);
        }
        assertEquals(localAfter, count, "the file holds another number of local pages than the state had");
        if (snap != null && existed) {
            final long[] expected = snap.local().clone();
            expected[target >>> 6] |= 1L << target;
            assertArrayEquals(expected, after.local(), "local pages changed beyond the one marked");
        }
    }

    /** Writes the seed corpus into directory {@code args[0]} (tools/fuzz page-state-file --write-seeds). */
    public static void main(final String[] args) throws IOException {
        final Path dir = Path.of(args[0]);
        Files.createDirectories(dir);
        final Path work = Files.createTempDirectory("lazyblk-state-seeds");
        final byte[] digest = new byte[32];
        digest[0] = 7;
        // A fresh file for 64 KiB in 4 KiB pages, one with pages and guest sectors marked, one switched to disk-only.
        final Path fresh = work.resolve("fresh");
        PageStateFile.openOrCreate(fresh, 64 << 10, 4096, digest).close();
        seed(dir, "fresh", 0, 3, Files.readAllBytes(fresh));
        final Path marked = work.resolve("marked");
        try (PageStateFile s = PageStateFile.openOrCreate(marked, 40 << 10, 4096, digest)) {
            s.markLocal(0);
            s.markLocal(9);
            s.markGuestWritten(17, 5);
            s.commit();
        }
        seed(dir, "marked", 0, 1, Files.readAllBytes(marked));
        final Path done = work.resolve("disk-only");
        try (PageStateFile s = PageStateFile.openOrCreate(done, 8192, 4096, digest)) {
            s.markLocal(0);
            s.markLocal(1);
            s.markDiskOnly("golden");
        }
        seed(dir, "disk-only", 0, 0, Files.readAllBytes(done));
        seed(dir, "fixed-identity-mismatch", 2, 0, Files.readAllBytes(marked));
        final byte[] truncated = Files.readAllBytes(marked);
        seed(dir, "truncated-bitmap", 0, 0, java.util.Arrays.copyOf(truncated, 4096 * 2 + 100));
        seed(dir, "empty-file", 2, 5, new byte[0]);
        seed(dir, "not-a-state-file", 1, 0, "just some text, not a lazyblk state file".getBytes(StandardCharsets.US_ASCII));
        for (final String f : new String[] {"fresh", "marked", "disk-only"}) {
            Files.delete(work.resolve(f));
        }
        Files.delete(work);
    }

    private static void seed(final Path dir, final String name, final int flags, final int page, final byte[] file) throws IOException {
        Files.write(dir.resolve(name), new FuzzBytes.Writer().u8(flags).u32(page).bytes(file).toByteArray());
    }
}
