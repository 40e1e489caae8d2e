package io.lazyblk.persistence;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The local image file on a real file system: vectored I/O at offsets, durability calls, zeroing. */
class LocalImageTest {
    @TempDir
    Path dir;

    private static MemorySegment iov(final Arena a, final MemorySegment... bufs) {
        final MemorySegment v = a.allocate(16L * bufs.length, 8);
        for (int i = 0; i < bufs.length; i++) {
            v.set(JAVA_LONG, 16L * i, bufs[i].address());
            v.set(JAVA_LONG, 16L * i + 8, bufs[i].byteSize());
        }
        return v;
    }

    @Test
    void shouldWriteGatheredBuffersAndReadThemBackScattered() throws IOException {
        final Path p = dir.resolve("img");
        LocalImage.create(p, 1 << 20);
        try (Arena a = Arena.ofConfined(); LocalImage img = LocalImage.open(p, false)) {
            final MemorySegment b1 = a.allocate(512).fill((byte) 1);
            final MemorySegment b2 = a.allocate(1024).fill((byte) 2);
            assertEquals(0, img.write(iov(a, b1, b2).address(), 2, 4096, 1536));
            assertEquals(0, img.startWriteback(4096, 1536), "the kernel takes the writeback hint for a real file");
            assertEquals(0, img.datasync());
            final MemorySegment r = a.allocate(1536);
            assertEquals(0, img.read(iov(a, r).address(), 1, 4096, 1536));
            assertEquals(1, r.get(JAVA_BYTE, 511));
            assertEquals(2, r.get(JAVA_BYTE, 512));
            assertEquals(2, r.get(JAVA_BYTE, 1535));
        }
        final byte[] onDisk = Arrays.copyOfRange(Files.readAllBytes(p), 4096, 4096 + 1536);
        final byte[] expected = new byte[1536];
        Arrays.fill(expected, 0, 512, (byte) 1);
        Arrays.fill(expected, 512, 1536, (byte) 2);
        assertArrayEquals(expected, onDisk);
    }

    @Test
    void shouldReadZerosAfterDiscardAndWriteZeroesWhicheverWayTheFileSystemAllows() throws IOException {
        final Path p = dir.resolve("img");
        Files.write(p, filled(1 << 20, (byte) 7));
        try (Arena a = Arena.ofConfined(); LocalImage img = LocalImage.open(p, false)) {
            assertEquals(0, img.discard(0, 65536));
            final MemorySegment zeroIov = LocalImage.zeroIov(a, 4096);
            assertEquals(0, img.writeZeroes(65536, 65536, false, zeroIov.address(), 4096));
        }
        final byte[] all = Files.readAllBytes(p);
        assertEquals(1 << 20, all.length);
        assertTrue(allEqual(all, 0, 131072, (byte) 0));
        assertTrue(allEqual(all, 131072, all.length, (byte) 7));
    }

    @Test
    void shouldReserveTheBlocksOfANewImageSoAFullDiskShowsAtStart() throws Exception {
        final Path sparse = dir.resolve("sparse");
        final Path reserved = dir.resolve("reserved");
        LocalImage.create(sparse, 8L << 20);
        LocalImage.createReserved(reserved, 8L << 20);
        assertEquals(8L << 20, java.nio.file.Files.size(reserved));
        final long blocks = allocatedBytes(reserved);
        assertTrue(allocatedBytes(sparse) < 1L << 20, "a sparse file holds almost no blocks");
        assertTrue(blocks >= 8L << 20, "the reserved file holds all its blocks: " + blocks + " bytes allocated");
        final byte[] zeros = new byte[4096];
        assertArrayEquals(zeros, java.util.Arrays.copyOfRange(java.nio.file.Files.readAllBytes(reserved), 4 << 20, (4 << 20) + 4096),
            "and reads zeros");
    }

    @Test
    void shouldReserveOnlyTheDataPagesSoTheNewImageIsAsSparseAsItsSource() throws Exception {
        final Path p = dir.resolve("partly");
        final int page = 64 << 10;
        // 32 pages; data in 0..3, 10 and 31 (the last): six pages reserved, in three runs; the rest stays holes.
        final java.util.Set<Integer> data = java.util.Set.of(0, 1, 2, 3, 10, 31);
        LocalImage.createReserved(p, 32L * page, page, data::contains);
        assertEquals(32L * page, Files.size(p));
        final long allocated = allocatedBytes(p);
        assertTrue(allocated >= 6L * page && allocated <= 6L * page + (64 << 10),
            "only the six data pages are reserved: " + allocated + " bytes allocated");
        try (LocalImage img = LocalImage.open(p, true)) {
            assertEquals(allocated, img.allocatedBytes(), "fstat's st_blocks, as stat(1) reports it");
        }
        LocalImage.createReserved(p, 32L * page, page, x -> false);
        assertTrue(allocatedBytes(p) < 64 << 10, "an image of zeros reserves nothing: " + allocatedBytes(p));
    }

    @Test
    void shouldSayHowMuchOfASparseImageNeedsSpaceWhenTheDiskIsFull() {
        final SimulatedDisk disk = new SimulatedDisk(1);
        final IOException e = assertThrows(IOException.class, () -> LocalImage.createReserved(Path.of("/sim/x"), 8L << 20, 1 << 20,
            x -> x < 2, (path, ro, create) -> new FullDisk(disk.open(path, ro, create))));
        assertTrue(e.getMessage().contains("2097152 bytes of it hold data") && e.getMessage().contains("larger file system"),
            e.getMessage());
    }

    /** A file on a full disk: every reservation fails with ENOSPC. */
    private static final class FullDisk extends ForwardingFileIo {
        FullDisk(final FileIo f) {
            super(f);
        }

        @Override
        public int fallocate(final int mode, final long offset, final long length) {
            return -SimulatedDisk.ENOSPC;
        }
    }

    /** Bytes the file system allocated to {@code p} ({@code stat %b * %B}). */
    private static long allocatedBytes(final Path p) throws Exception {
        final Process st = new ProcessBuilder("stat", "--format=%b %B", p.toString()).start();
        final String[] out = new String(st.getInputStream().readAllBytes()).trim().split(" ");
        st.waitFor();
        return Long.parseLong(out[0]) * Long.parseLong(out[1]);
    }

        @Test
    void shouldRefuseImagesThatAreNotWholeSectors() throws IOException {
        final Path p = dir.resolve("odd");
        Files.write(p, new byte[1000]);
        final IOException e = assertThrows(IOException.class, () -> LocalImage.open(p, false));
        assertTrue(e.getMessage().contains("multiple of 512"), e.getMessage());
        assertThrows(IOException.class, () -> LocalImage.open(dir.resolve("missing"), false));
    }

    @Test
    void shouldFailWritesToAReadOnlyOpenWithAnErrno() throws IOException {
        final Path p = dir.resolve("img");
        LocalImage.create(p, 4096);
        try (Arena a = Arena.ofConfined(); LocalImage img = LocalImage.open(p, true)) {
            assertTrue(img.write(iov(a, a.allocate(512)).address(), 1, 0, 512) < 0);
        }
    }

    private static byte[] filled(final int n, final byte b) {
        final byte[] x = new byte[n];
        Arrays.fill(x, b);
        return x;
    }

    private static boolean allEqual(final byte[] a, final int from, final int to, final byte b) {
        for (int i = from; i < to; i++) {
            if (a[i] != b) {
                return false;
            }
        }
        return true;
    }
}
