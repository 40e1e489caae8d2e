package io.lazyblk.tools.guest;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The guest boots with a disk made by {@code build-rootdisk.sh} as its root filesystem, served by the reference
 * backend (qemu-storage-daemon): the initramfs hands over to the disk's {@code /sbin/init}, whose marker is the one
 * timed, and the rw and ro tests work on the disk they booted from.
 */
class RootDiskBootTest {
    private static final String SIZE = "256M";
    private static final long SIZE_BYTES = 256L << 20;
    private static final long SCRATCH_BYTES = 16L << 20;
    private static final Duration TIMEOUT = Duration.ofSeconds(240);
    private static QemuGuest guest;
    private static Path pristine;

    @TempDir
    Path dir;

    @Test
    void shouldTellTheInitramfsMarkerFromTheInitMarker() {
        assertTrue(QemuGuest.hasMarker("LAZYBLK-INIT uptime=1.23", QemuGuest.INIT_MARKER));
        assertTrue(QemuGuest.hasMarker("[    2.1] x LAZYBLK-INIT", QemuGuest.INIT_MARKER));
        assertFalse(QemuGuest.hasMarker("LAZYBLK-INITRAMFS uptime=1.23", QemuGuest.INIT_MARKER));
        assertTrue(QemuGuest.hasMarker("LAZYBLK-INITRAMFS uptime=1.23", QemuGuest.INITRAMFS_MARKER));
    }

    private static synchronized QemuGuest guest() throws Exception {
        assumeTrue(QemuGuest.available(), "QEMU is not installed here: " + QemuGuest.unavailableReason());
        assumeTrue(QemuGuest.findOnPath("qemu-storage-daemon").isPresent(), "qemu-storage-daemon is not installed");
        assumeTrue(QemuGuest.findOnPath("mke2fs").isPresent() || Files.isExecutable(Path.of("/usr/sbin/mke2fs"))
                || Files.isExecutable(Path.of("/sbin/mke2fs")), "mke2fs (e2fsprogs) is not installed");
        if (guest == null) {
            final Path scripts = QemuGuest.findGuestScriptsDir()
                    .orElseThrow(() -> new IllegalStateException("no tools/guest above the working directory"));
            final QemuGuest g = new QemuGuest(scripts);
            g.prepare();
            pristine = g.buildRootDisk(g.guestDir().resolve("rootdisk-test-" + SIZE + ".img"), SIZE);
            guest = g;
        }
        return guest;
    }

    /** A private copy of the cached pristine root disk. */
    private Path image(final String name) throws Exception {
        guest();
        final Path image = dir.resolve(name);
        Files.copy(pristine, image);
        return image;
    }

    /** qemu-storage-daemon exporting {@code image} as a vhost-user-blk device on {@code socket}. */
    private Process serve(final Path image, final Path socket, final boolean writable) throws Exception {
        final Process qsd = new ProcessBuilder(List.of("qemu-storage-daemon",
                "--blockdev", "driver=file,node-name=f0,filename=" + image,
                "--export", "type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path=" + socket
                        + ",writable=" + (writable ? "on" : "off") + ",num-queues=1"))
                .redirectErrorStream(true)
                .redirectOutput(dir.resolve(socket.getFileName() + ".qsd.log").toFile())
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .start();
        for (int i = 0; i < 100 && !Files.exists(socket); i++) {
            assertTrue(qsd.isAlive(), () -> "qemu-storage-daemon exited: " + read(dir.resolve(socket.getFileName() + ".qsd.log")));
            Thread.sleep(100);
        }
        assertTrue(Files.exists(socket), "qemu-storage-daemon made no socket");
        return qsd;
    }

    private static void stop(final Process qsd) throws InterruptedException {
        qsd.destroy();
        if (!qsd.waitFor(10, TimeUnit.SECONDS)) {
            qsd.destroyForcibly().waitFor();
        }
    }

    private static String read(final Path p) {
        try {
            return Files.readString(p);
        } catch (IOException e) {
            return e.toString();
        }
    }

    private static QemuGuest.Result assertOk(final QemuGuest.Result r, final String test) {
        assertTrue(r.ok(), () -> "root-disk test " + test + " failed: " + r.resultLine().orElse("no result line")
                + "; log " + r.logFile());
        assertTrue(r.resultLine().orElseThrow().contains("root=1"), "the disk's init should have run the test");
        return r;
    }

    private static int indexOf(final List<String> lines, final String marker) {
        for (int i = 0; i < lines.size(); i++) {
            if (QemuGuest.hasMarker(lines.get(i), marker)) {
                return i;
            }
        }
        return -1;
    }

    private static String md5(final Path file) throws Exception {
        final MessageDigest md = MessageDigest.getInstance("MD5");
        try (InputStream in = Files.newInputStream(file)) {
            final byte[] buf = new byte[1 << 20];
            for (int n; (n = in.read(buf)) > 0; ) {
                md.update(buf, 0, n);
            }
        }
        return HexFormat.of().formatHex(md.digest());
    }

    private static byte[] readAt(final Path file, final long off, final int len) throws IOException {
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "r")) {
            final byte[] b = new byte[len];
            f.seek(off);
            f.readFully(b);
            return b;
        }
    }

    @Test
    void shouldBootIntoTheDisksInitAgainAndAgain() throws Exception {
        final Path image = image("boot.img");
        final Path socket = dir.resolve("boot.sock");
        final Process qsd = serve(image, socket, true);
        try {
            for (int run = 0; run < 2; run++) {
                final AtomicLong atInit = new AtomicLong(-1);
                final long start = System.nanoTime();
                final QemuGuest.Result r = assertOk(guest().bootFromDisk(socket, "boot", 1, TIMEOUT,
                        () -> atInit.set(System.nanoTime() - start)), "boot");
                assertEquals(SIZE_BYTES, r.diskSize());
                assertTrue(r.millisToInitramfsMarker() > 0, "the initramfs should have printed its marker");
                assertTrue(r.millisToInitMarker() > r.millisToInitramfsMarker(),
                        "the init marker should be the disk's, after the initramfs's");
                assertTrue(indexOf(r.consoleLines(), QemuGuest.INITRAMFS_MARKER)
                        < indexOf(r.consoleLines(), QemuGuest.INIT_MARKER));
                assertTrue(atInit.get() > 0, "the callback should have run at the init marker");
                System.out.printf("root-disk boot %d: initramfs %d ms, disk init %d ms after QEMU started%n",
                        run, r.millisToInitramfsMarker(), r.millisToInitMarker());
            }
        } finally {
            stop(qsd);
        }
    }

    @Test
    void shouldWriteThePatternBehindTheFilesystemAndIntoAFileAndLeaveTheImageAsTheGuestSawIt() throws Exception {
        final Path image = image("rw.img");
        final Path socket = dir.resolve("rw.sock");
        final Process qsd = serve(image, socket, true);
        final QemuGuest.Result r;
        try {
            r = assertOk(guest().bootFromDisk(socket, "rw", 1, TIMEOUT), "rw");
        } finally {
            stop(qsd);
        }
        final String patternMd5 = HexFormat.of().formatHex(
                MessageDigest.getInstance("MD5").digest(QemuGuest.expectedPattern()));
        assertEquals(patternMd5, r.writeMd5());
        assertEquals(patternMd5, r.resultField("file_md5").orElseThrow(), "the pattern file should read back");
        final long off = Long.parseLong(r.resultField("pattern_off").orElseThrow());
        assertEquals(SIZE_BYTES - SCRATCH_BYTES, off, "the pattern goes to the start of the scratch area");
        assertArrayEquals(QemuGuest.expectedPattern(), readAt(image, off, QemuGuest.expectedPattern().length));
        assertEquals(md5(image), r.diskMd5(), "the image holds exactly the disk the guest read");
    }

    @Test
    void shouldMountAReadOnlyDiskReadOnlyAndRefuseWrites() throws Exception {
        final Path image = image("ro.img");
        final String before = md5(image);
        final Path socket = dir.resolve("ro.sock");
        final Process qsd = serve(image, socket, false);
        try {
            final QemuGuest.Result r = assertOk(guest().bootFromDisk(socket, "ro", 1, TIMEOUT), "ro");
            assertEquals(before, r.diskMd5());
        } finally {
            stop(qsd);
        }
        assertEquals(before, md5(image));
    }
}
