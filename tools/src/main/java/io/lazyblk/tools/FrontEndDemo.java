package io.lazyblk.tools;

import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.BlkResponse;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.guest.QemuGuest;

import java.nio.file.Path;
import java.util.Arrays;

/**
 * The demo's path without QEMU: the built-in front end does what the guest would (write 1 MiB at 8 MiB, read it
 * back, read the first MiB, flush), then the host checks the image.
 */
final class FrontEndDemo {
    private static final long RAM = 64L << 20;

    private FrontEndDemo() {
    }

    static int run(final Path socket, final Path image) throws Exception {
        final int rc = exercise(socket, image);
        if (rc != 0) {
            return rc;
        }
        DemoCommand.step("4/4", "checking the image on the host");
        final byte[] pattern = QemuGuest.expectedPattern();
        final long off = QemuGuest.patternOffsetBytes(QemuGuest.DEFAULT_PATTERN_OFFSET_BLOCKS);
        final boolean ok = Arrays.equals(pattern, DemoCommand.readAt(image, off, pattern.length));
        System.out.printf("      pattern at byte %d on the host: %s%n", off, ok ? "present" : "MISSING");
        System.out.println(ok ? "OK: the engine served the front end and the image holds what it wrote."
            : "FAILED: the image does not hold what the front end wrote.");
        return ok ? 0 : 1;
    }

    /**
     * Writes the pattern, reads it back, reads the first MiB (checked against {@code reference}, the image the disk
     * started from) and flushes, through the front end; 0 if all of it worked.
     */
    static int exercise(final Path socket, final Path reference) throws Exception {
        final byte[] pattern = QemuGuest.expectedPattern();
        final long off = QemuGuest.patternOffsetBytes(QemuGuest.DEFAULT_PATTERN_OFFSET_BLOCKS);
        final byte[] head = DemoCommand.readAt(reference, 0, 1 << 20);
        final long start = System.nanoTime();
        try (VhostUserFrontend fe = VhostUserFrontend.connect(socket, GuestRam.create(RAM))) {
            final BlkClient blk = new BlkClient(fe, 0);
            System.out.printf("      front end connected: %d-byte disk, features 0x%x%n", fe.blkConfig().capacity() * 512, fe.features());
            check(blk.write(off / 512, pattern) == 0, "write of 1 MiB at byte " + off);
            final BlkResponse back = blk.read(off / 512, pattern.length);
            check(back.ok() && Arrays.equals(back.data(), pattern), "read-back of the 1 MiB just written");
            final BlkResponse first = blk.read(0, 1 << 20);
            check(first.ok() && Arrays.equals(first.data(), head), "read of the first MiB (the sample text)");
            check(blk.flush() == 0, "flush");
        } catch (final IllegalStateException e) {
            System.out.println("FAILED: " + e.getMessage());
            return 1;
        }
        System.out.printf("      wrote, read back, read and flushed in %.1f ms%n", (System.nanoTime() - start) / 1e6);
        return 0;
    }

    private static void check(final boolean ok, final String what) {
        if (!ok) {
            throw new IllegalStateException(what + " did not succeed");
        }
        System.out.println("      " + what + ": ok");
    }
}
