package io.lazyblk.persistence;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The durable page state beside a local image: survives reopen, refuses another image, only grows. */
class PageStateFileTest {
    private static final long SIZE = (1L << 30) + 4096; // a short last page
    private static final int PAGE = 64 << 10;

    @TempDir
    Path dir;

    private static byte[] digest(final int b) {
        final byte[] d = new byte[32];
        d[0] = (byte) b;
        return d;
    }

    @Test
    void shouldRememberCommittedLocalPagesAndGuestSectorsAcrossReopen() throws IOException {
        final Path p = PageStateFile.beside(dir.resolve("disk.img"));
        try (PageStateFile s = PageStateFile.openOrCreate(p, SIZE, PAGE, digest(1))) {
            assertEquals(16385, s.pageCount());
            assertEquals(0, s.localCount());
            s.markLocal(0);
            s.markLocal(16384);
            s.markLocal(9000);
            s.markGuestWritten(1_000_000, 3);
            s.commit();
            s.markLocal(5); // never committed: as after a crash, it is forgotten
        }
        try (PageStateFile s = PageStateFile.openOrCreate(p, SIZE, PAGE, digest(1))) {
            assertEquals(3, s.localCount());
            assertTrue(s.isLocal(0) && s.isLocal(9000) && s.isLocal(16384));
            assertFalse(s.isLocal(5));
            assertTrue(s.guestWrote(1_000_000) && s.guestWrote(1_000_002));
            assertFalse(s.guestWrote(999_999) || s.guestWrote(1_000_003));
            assertFalse(s.diskOnly());
        }
    }

    @Test
    void shouldRefuseAStateFileOfAnotherImageNamingTheDifference() throws IOException {
        final Path p = dir.resolve("x.lzbstate");
        PageStateFile.openOrCreate(p, SIZE, PAGE, digest(1)).close();
        final IOException otherDigest = assertThrows(IOException.class, () -> PageStateFile.openOrCreate(p, SIZE, PAGE, digest(2)));
        assertTrue(otherDigest.getMessage().contains("belongs to another image"), otherDigest.getMessage());
        assertThrows(IOException.class, () -> PageStateFile.openOrCreate(p, SIZE * 2, PAGE, digest(1)));
        assertThrows(IOException.class, () -> PageStateFile.openOrCreate(p, SIZE, PAGE * 2, digest(1)));
    }

    @Test
    void shouldRefuseADamagedHeader() throws IOException {
        final Path p = dir.resolve("x.lzbstate");
        PageStateFile.openOrCreate(p, SIZE, PAGE, digest(1)).close();
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.wrap(new byte[] {9}), 10);
        }
        final IOException e = assertThrows(IOException.class, () -> PageStateFile.openOrCreate(p, SIZE, PAGE, digest(1)));
        assertTrue(e.getMessage().contains("damaged"), e.getMessage());
    }

    @Test
    void shouldSwitchToDiskOnlyDurablyOnlyWhenEveryPageIsLocal() throws IOException {
        final Path p = dir.resolve("small.lzbstate");
        final long size = 4L * PAGE;
        try (PageStateFile s = PageStateFile.openOrCreate(p, size, PAGE, digest(3))) {
            s.markLocal(0);
            assertThrows(IllegalStateException.class, () -> s.markDiskOnly("img"));
            for (int i = 1; i < 4; i++) {
                s.markLocal(i);
            }
            assertTrue(s.allLocal());
            assertTrue(PageStateFile.diskOnlyImage(p).isEmpty());
            s.markDiskOnly("golden-7");
        }
        assertEquals(java.util.Optional.of("golden-7"), PageStateFile.diskOnlyImage(p));
        try (PageStateFile s = PageStateFile.openOrCreate(p, size, PAGE, digest(3))) {
            assertTrue(s.diskOnly());
            assertEquals(4, s.localCount());
        }
    }

    @Test
    void shouldNeverCommitAgainAfterAFailedWriteOrSyncOfTheStateFile() throws IOException {
        for (final boolean failTheSync : new boolean[] {false, true}) {
            final SimulatedDisk disk = new SimulatedDisk(9);
            final Path p = Path.of("/sim/x.lzbstate");
            try (PageStateFile s = PageStateFile.openOrCreate(p, SIZE, PAGE, digest(1), disk)) {
                s.markLocal(7);
                s.commit();
                s.markLocal(8);
                if (failTheSync) {
                    disk.failSync(1, SimulatedDisk.EIO);
                } else {
                    disk.failWrite(1, SimulatedDisk.EIO);
                }
                assertThrows(IOException.class, s::commit);
                // A retry would find the kernel happy (after a failed sync the blocks are no longer dirty): it must not
                // report the lost block durable, nor anything recorded after it.
                s.markLocal(9);
                final IOException again = assertThrows(IOException.class, s::commit);
                assertTrue(again.getMessage().contains("failed earlier"), again.getMessage());
                assertTrue(s.failure() != null);
            }
            disk.powerCutLosingUnsynced();
            try (PageStateFile s = PageStateFile.openOrCreate(p, SIZE, PAGE, digest(1), disk)) {
                assertTrue(s.isLocal(7), "committed before the failure");
                assertFalse(s.isLocal(9), "never committed");
            }
        }
    }

    @Test
    void shouldRefuseAStateFileClaimingAnImageLargerThanOneTebibyteWithoutAllocatingForIt() throws IOException {
        final Path p = dir.resolve("huge.lzbstate");
        PageStateFile.openOrCreate(p, SIZE, PAGE, digest(1)).close();
        // Rewrite the header with a claimed 64 TiB image and a valid CRC, as a hostile file would.
        final ByteBuffer h = ByteBuffer.allocate(4096).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        h.putInt(0x53425a4c).putInt(1).putLong(64L << 40).putInt(PAGE).putInt((int) ((64L << 40) / PAGE)).put(digest(1));
        final java.util.zip.CRC32C crc = new java.util.zip.CRC32C();
        crc.update(h.array(), 0, h.position());
        h.putInt((int) crc.getValue());
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
            ch.write(h.clear(), 0);
        }
        final IOException e = assertThrows(IOException.class, () -> PageStateFile.snapshot(p));
        assertTrue(e.getMessage().contains("at most 1099511627776 bytes (1 TiB)"), e.getMessage());
        assertTrue(PageStateFile.recordedPageSize(p).isPresent(), "the page size alone is still readable");
    }
}
