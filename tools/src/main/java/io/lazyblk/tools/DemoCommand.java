package io.lazyblk.tools;

import io.lazyblk.tools.guest.QemuGuest;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.concurrent.Callable;

/**
 * {@code lazyblk demo}: the main job end to end on embedded defaults. Creates a sample image, serves it with an
 * engine, boots a QEMU guest from it that writes, reads back and flushes (or, without QEMU, drives the engine
 * with the built-in front end), then checks the image bytes on the host and says what happened.
 */
@Command(name = "demo", mixinStandardHelpOptions = true,
    description = "Create a sample image, serve it, boot a QEMU guest from it (or drive it with the built-in front end), and report.")
public final class DemoCommand implements Callable<Integer> {
    @Option(names = "--work-dir", description = "where the image, socket and logs go (default: ${DEFAULT-VALUE})",
        defaultValue = "${java.io.tmpdir}/lazyblk-demo-${user.name}")
    Path workDir;

    @Option(names = "--size", converter = SizeConverter.class, defaultValue = "128M", description = "sample image size (default ${DEFAULT-VALUE})")
    long size;

    @Option(names = "--queues", defaultValue = "1", description = "virtqueues (default ${DEFAULT-VALUE})")
    int queues;

    @Option(names = "--timeout", defaultValue = "180s", converter = DurationConverter.class, paramLabel = "DURATION", description = "how long before the guest is given up on (default ${DEFAULT-VALUE})")
    java.time.Duration timeout;
    private long timeoutSeconds() {
        return timeout.toSeconds();
    }

    @Option(names = "--front-end", description = "use the built-in front end even if QEMU is installed")
    boolean forceFrontEnd;

    @Option(names = "--local-only", description = "serve the sample image as a complete local file instead of pulling it lazily from a provider")
    boolean localOnly;

    @Option(names = "--fill-rate", converter = SizeConverter.class, defaultValue = "8M",
        description = "background fill cap in bytes/s, low enough that the guest boots while the fill runs (default ${DEFAULT-VALUE})")
    long fillRate;

    @Override
    public Integer call() throws Exception {
        if (size < 16L << 20 || size % 4096 != 0) {
            System.err.println("lazyblk demo: --size must be a multiple of 4k and at least 16M");
            return 2;
        }
        WorkDir.prepare(workDir);
        final Path image = workDir.resolve("sample.img");
        final Path socket = workDir.resolve("vhost.sock");
        if (!localOnly) {
            return new LazyDemo(workDir, image, size, socket, queues, (int) Math.min(Integer.MAX_VALUE, timeoutSeconds()), fillRate, forceFrontEnd).run();
        }
        step("1/4", "creating sample image " + image + " (" + (size >> 20) + " MiB)");
        createSampleImage(image, size);

        step("2/4", "starting the engine on " + socket);
        try (Engine engine = Engine.start(Engine.Options.file(socket, image).withQueues(queues))) {
            if (!forceFrontEnd && QemuGuest.available()) {
                return bootGuest(image, socket);
            }
            if (!forceFrontEnd) {
                step("3/4", "QEMU is not installed (" + QemuGuest.unavailableReason() + "); driving the engine with the built-in front end");
            } else {
                step("3/4", "driving the engine with the built-in front end");
            }
            return FrontEndDemo.run(socket, image);
        }
    }

    private int bootGuest(final Path image, final Path socket) throws IOException, InterruptedException {
        final Path scripts = QemuGuest.findGuestScriptsDir().orElse(null);
        if (scripts == null) {
            System.err.println("lazyblk demo: cannot find tools/guest/build-guest.sh above " + Path.of("").toAbsolutePath()
                + "; run the demo from inside the lazyblk repository");
            return 2;
        }
        final QemuGuest guest = new QemuGuest(scripts, QemuGuest.defaultGuestDir(), workDir.resolve("logs"));
        step("3/4", "booting a QEMU guest (TCG) from the engine's disk; it writes 1 MiB at 8 MiB, reads it back, reads the whole disk, flushes");
        final QemuGuest.Result r = guest.boot(socket, "rw", queues, Duration.ofSeconds(timeoutSeconds()));
        System.out.printf("      guest reached its init %d ms after QEMU started; saw a %d-byte disk%n", r.millisToInitMarker(), r.diskSize());
        System.out.println("      guest says: " + r.resultLine().orElse("(no result line; console log: " + r.logFile() + ")"));
        if (!r.ok()) {
            System.out.println("FAILED: the guest test did not pass; its console log is " + r.logFile());
            return 1;
        }
        step("4/4", "checking the image on the host");
        final long off = QemuGuest.patternOffsetBytes(QemuGuest.DEFAULT_PATTERN_OFFSET_BLOCKS);
        final byte[] expected = QemuGuest.expectedPattern();
        final byte[] onDisk = readAt(image, off, expected.length);
        final String hostMd5 = md5(image);
        final boolean patternOk = Arrays.equals(expected, onDisk);
        final boolean md5Ok = hostMd5.equals(r.diskMd5());
        System.out.printf("      pattern at byte %d on the host: %s%n", off, patternOk ? "present" : "MISSING");
        System.out.printf("      whole-image md5 host %s vs guest %s: %s%n", hostMd5, r.diskMd5(), md5Ok ? "equal" : "DIFFERENT");
        if (patternOk && md5Ok) {
            System.out.println("OK: a QEMU guest booted, wrote, read back and flushed through lazyblk; the image holds exactly what it saw.");
            return 0;
        }
        System.out.println("FAILED: the image does not hold what the guest wrote; console log: " + r.logFile());
        return 1;
    }

    static void step(final String n, final String what) {
        System.out.println("[" + n + "] " + what);
    }

    /** A sparse image whose first MiB holds a recognisable, position-dependent text. */
    static void createSampleImage(final Path image, final long size) throws IOException {
        try (FileChannel ch = FileChannel.open(image, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
            StandardOpenOption.TRUNCATE_EXISTING)) {
            final StringBuilder sb = new StringBuilder();
            for (int i = 0; sb.length() < (1 << 20); i++) {
                sb.append(String.format("lazyblk sample image, line %08d%n", i));
            }
            ch.write(ByteBuffer.wrap(sb.substring(0, 1 << 20).getBytes(java.nio.charset.StandardCharsets.US_ASCII)), 0);
            ch.truncate(size);
            if (ch.size() < size) {
                ch.write(ByteBuffer.allocate(1), size - 1);
            }
        }
    }

    static byte[] readAt(final Path file, final long off, final int len) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            final ByteBuffer b = ByteBuffer.allocate(len);
            while (b.hasRemaining() && ch.read(b, off + b.position()) > 0) {
                // keep reading
            }
            return b.array();
        }
    }

    static String md5(final Path file) throws IOException {
        try (InputStream in = Files.newInputStream(file)) {
            final MessageDigest md = MessageDigest.getInstance("MD5");
            final byte[] buf = new byte[1 << 20];
            int n;
            while ((n = in.read(buf)) > 0) {
                md.update(buf, 0, n);
            }
            return HexFormat.of().formatHex(md.digest());
        } catch (final java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
