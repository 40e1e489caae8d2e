package io.lazyblk.persistence;

import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The local image over a disk that writes short and fails: every error is sticky, and the caller's scratch survives. */
class LocalImageFaultTest {
    private static final Path IMG = Path.of("/sim/img");

    @Test
    void shouldWriteZerosEveryTimeWhenWritesAreShortAndGiveTheScratchIovecBack() throws Exception {
        final SimulatedDisk disk = new SimulatedDisk(1);
        final byte[] ones = new byte[1 << 20];
        java.util.Arrays.fill(ones, (byte) 0x11);
        disk.put(IMG, ones);
        disk.noFallocate(true); // no ZERO_RANGE: zeros are written from the scratch buffer
        disk.shortWrites(true);
        try (Arena arena = Arena.ofConfined(); LocalImage img = LocalImage.open(IMG, false, disk)) {
            // The zero buffer is followed by bytes that are not zero: a scratch iovec left moved forward would write them.
            final int zeroLen = 4096;
            final MemorySegment buf = arena.allocate(2L * zeroLen, 4096);
            buf.asSlice(zeroLen).fill((byte) 0xee);
            final MemorySegment iov = arena.allocate(16, 8);
            iov.set(JAVA_LONG, 0, buf.address());
            iov.set(JAVA_LONG, 8, zeroLen);
            for (int round = 0; round < 20; round++) {
                assertEquals(0, img.writeZeroes(round * 40_960L, 40_960, false, iov.address(), zeroLen));
                assertEquals(buf.address(), iov.get(JAVA_LONG, 0), "the scratch iovec's base is given back");
                assertEquals(zeroLen, iov.get(JAVA_LONG, 8), "the scratch iovec's length is given back");
            }
            final byte[] now = disk.contents(IMG);
            for (int i = 0; i < 20 * 40_960; i++) {
                if (now[i] != 0) {
                    throw new AssertionError("byte " + i + " is 0x" + Integer.toHexString(now[i] & 0xff) + ", not zero");
                }
            }
            assertEquals(0x11, now[20 * 40_960], "nothing past the range is touched");
            assertNull(img.failure());
        }
    }

    @Test
    void shouldFailEverySyncAfterOneFailedAndSayWhy() throws Exception {
        final SimulatedDisk disk = new SimulatedDisk(2);
        disk.put(IMG, new byte[1 << 16]);
        try (Arena arena = Arena.ofConfined(); LocalImage img = LocalImage.open(IMG, false, disk)) {
            final MemorySegment data = arena.allocate(4096, 4096);
            data.fill((byte) 7);
            final MemorySegment iov = arena.allocate(16, 8);
            iov.set(JAVA_LONG, 0, data.address());
            iov.set(JAVA_LONG, 8, 4096);
            assertEquals(0, img.write(iov.address(), 1, 0, 4096));
            disk.failSync(1, SimulatedDisk.EIO);
            assertEquals(-SimulatedDisk.EIO, img.datasync());
            // The kernel would now report success: the failed pages are no longer dirty. We must not.
            assertNotEquals(0, img.datasync());
            assertEquals(0, img.write(iov.address(), 1, 4096, 4096));
            assertNotEquals(0, img.datasync());
            assertTrue(img.failure().contains("fdatasync failed") && img.failure().contains("errno 5"), img.failure());
            // Reads go on.
            data.fill((byte) 0);
            assertEquals(0, img.read(iov.address(), 1, 0, 4096));
            assertEquals(7, data.get(JAVA_BYTE, 0));
        }
    }

    @Test
    void shouldFailEverySyncAfterAFailedWrite() throws Exception {
        final SimulatedDisk disk = new SimulatedDisk(3);
        disk.put(IMG, new byte[1 << 16]);
        try (Arena arena = Arena.ofConfined(); LocalImage img = LocalImage.open(IMG, false, disk)) {
            final MemorySegment data = arena.allocate(4096, 4096);
            final MemorySegment iov = arena.allocate(16, 8);
            iov.set(JAVA_LONG, 0, data.address());
            iov.set(JAVA_LONG, 8, 4096);
            disk.failWrite(1, SimulatedDisk.ENOSPC);
            assertEquals(-SimulatedDisk.ENOSPC, img.write(iov.address(), 1, 0, 4096));
            assertNotEquals(0, img.datasync());
            assertTrue(img.failure().contains("No space left on device"), img.failure());
        }
    }
}
