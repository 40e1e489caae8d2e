package io.lazyblk.tools;

import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.BlkResponse;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * A real full disk: the engine's local file is a 16 MiB sparse image on a 4 MiB tmpfs mounted for the test (root
 * only; skipped elsewhere with the reason). The guest writes until the tmpfs is full: the writes that did not fit get
 * IOERR, the engine keeps reading (the bytes written before are there), every later FLUSH fails, and status says why.
 */
class EngineFullDiskTest {
    private static final int IMAGE = 16 << 20;
    private static final int CHUNK = 256 << 10;

    @TempDir
    Path dir;
    private Path mount;
    private boolean mounted;

    @BeforeEach
    void mountSmallTmpfs() throws Exception {
        mount = Files.createDirectory(dir.resolve("small"));
        final Process p = new ProcessBuilder("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mount.toString())
            .redirectErrorStream(true).start();
        final String out = new String(p.getInputStream().readAllBytes());
        assumeTrue(p.waitFor(10, TimeUnit.SECONDS) && p.exitValue() == 0,
            "needs to mount a 4 MiB tmpfs (root, in a namespace that allows it): " + out.strip());
        mounted = true;
    }

    @AfterEach
    void unmount() throws Exception {
        if (mounted) {
            new ProcessBuilder("umount", "-l", mount.toString()).start().waitFor(10, TimeUnit.SECONDS);
        }
    }

    @Test
    void shouldFailTheWritesThatDoNotFitKeepReadingAndSayWhyInStatus() throws Exception {
        final Path image = mount.resolve("disk.img");
        try (var f = new java.io.RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(IMAGE); // sparse: the tmpfs fills as the guest writes
        }
        final Path sock = dir.resolve("engine.sock");
        try (Engine engine = Engine.start(Engine.Options.file(sock, image));
             VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(8L << 20))) {
            final BlkClient blk = new BlkClient(fe, 0);
            final byte[] first = TestImage.pattern(CHUNK, 1);
            assertEquals(VirtioBlk.S_OK, blk.write(0, first));
            assertEquals(VirtioBlk.S_OK, blk.flush(), "a FLUSH before the disk is full succeeds");
            int ok = 1;
            int failed = 0;
            for (long off = CHUNK; off < IMAGE; off += CHUNK) {
                final int st = blk.write(off / VirtioBlk.SECTOR_SIZE, TestImage.pattern(CHUNK, (int) (off / CHUNK) + 1));
                if (st == VirtioBlk.S_OK) {
                    ok++;
                } else {
                    assertEquals(VirtioBlk.S_IOERR, st, "a write that does not fit");
                    failed++;
                }
            }
            assertTrue(failed > 0 && ok > 1, "some writes fit, the rest did not: " + ok + " ok, " + failed + " failed");
            final BlkResponse r = blk.read(0, CHUNK);
            assertEquals(VirtioBlk.S_OK, r.status(), "reads keep working");
            assertArrayEquals(first, r.data());
            assertEquals(VirtioBlk.S_IOERR, blk.flush(), "nothing is reported durable after the failure");
            final Map<String, String> st = StatusCommand.read(StatusServer.controlSocket(sock));
            assertEquals("failed", st.get("storage"), st.toString());
            assertTrue(st.get("storage_error").contains("No space left on device") && st.get("storage_error").contains("free space"),
                st.get("storage_error"));
            assertTrue(StatusServer.human(st).contains("STORAGE FAILED"), StatusServer.human(st));
            assertTrue(Arrays.equals(first, TestImage.read(image, 0, CHUNK)), "what was written before is in the file");
        }
    }
}
