package io.lazyblk.tools.guest;

import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.TimeUnit;

/**
 * Boots the lazyblk end-to-end test guest in QEMU (TCG, no KVM needed) with one vhost-user-blk disk served by
 * whatever backend listens on a UNIX socket, and reports what the guest saw.
 *
 * <p>The guest is a Debian cloud kernel plus a busybox initramfs whose {@code /init} is {@code tools/guest/init};
 * {@code tools/guest/build-guest.sh} builds both (once; later calls are no-ops) into the guest directory. The guest
 * runs one test, selected by {@code lazyblk.test=} on the kernel command line, prints its outcome on the serial
 * console and powers off:
 * <ul>
 *   <li>{@code rw}: writes {@link #expectedPattern()} at {@link #patternOffsetBytes(int) patternOffsetBytes}
 *       ({@code lazyblk.off=} blocks, default {@value #DEFAULT_PATTERN_OFFSET_BLOCKS}) with O_DIRECT and fsync, reads
 *       it back, reads the whole disk, flushes; {@link Result#writeMd5()} and {@link Result#diskMd5()} are set.</li>
 *   <li>{@code ro}: reads the whole disk and passes only if a write is refused; {@link Result#diskMd5()} is set.</li>
 *   <li>{@code boot}: reads the first MiB.</li>
 * </ul>
 *
 * <p><b>Booting from the disk.</b> {@link #bootFromDisk} adds {@value #ROOT_KERNEL_ARG}: the initramfs then prints
 * {@value #INITRAMFS_MARKER} (instead of {@value #INIT_MARKER}) and {@value #DISK_MARKER}, mounts the disk as the
 * root filesystem and switches to its {@code /sbin/init} ({@code tools/guest/disk-init}), which prints
 * {@value #INIT_MARKER} first and then runs the test, so {@link Result#millisToInitMarker()} is the time to the
 * disk's init. The disk must hold such a root filesystem: {@link #buildRootDisk} makes one with
 * {@code tools/guest/build-rootdisk.sh} (ext4 in front, a raw scratch area behind it, ballast the boot never reads).
 * The tests then are
 * <ul>
 *   <li>{@code boot}: nothing besides running the init script: the boot-time benchmark.</li>
 *   <li>{@code rw}: writes the pattern raw in the scratch area ({@code lazyblk.off=} blocks from its start, default
 *       0; the absolute offset is the result field {@code pattern_off}) and as the file {@value #ROOT_PATTERN_FILE},
 *       reads both back, remounts the root read-only and reads the whole disk ({@code lazyblk.diskmd5=0} skips that;
 *       {@link Result#diskMd5()} is then {@code skipped}).</li>
 *   <li>{@code ro}: the root is mounted read-only (the device is); reads the whole disk and passes only if a raw
 *       write is refused.</li>
 * </ul>
 * Every root-disk boot ends with the root remounted read-only, leaving a clean filesystem, but changes the image
 * (mounting writes the superblock).
 *
 * <p>{@link #boot} never hangs: QEMU (and anything it started) is killed forcibly when the timeout expires.
 * Needs {@code qemu-system-x86_64} on the PATH and, to build the guest, a Debian host with apt and
 * {@code busybox-static}; see {@link #available()}.
 */
public final class QemuGuest {
    /** Offset unit of {@code lazyblk.off=}. */
    public static final int PATTERN_BLOCK_SIZE = 4096;
    /** {@code lazyblk.off=} the guest uses when none is given: 8 MiB. */
    public static final int DEFAULT_PATTERN_OFFSET_BLOCKS = 2048;
    /** Printed by {@code /init} as early as possible; when booting from the disk, by the disk's {@code /sbin/init}. */
    public static final String INIT_MARKER = "LAZYBLK-INIT";
    /** Printed by the initramfs's {@code /init} instead of {@link #INIT_MARKER} when booting from the disk. */
    public static final String INITRAMFS_MARKER = "LAZYBLK-INITRAMFS";
    /** Kernel argument that makes the initramfs mount the disk as root and run its {@code /sbin/init}. */
    public static final String ROOT_KERNEL_ARG = "lazyblk.root=vda";
    /** The file on the root disk that the root-disk {@code rw} test writes the pattern into. */
    public static final String ROOT_PATTERN_FILE = "/var/lib/lazyblk/pattern";
    /** {@code LAZYBLK-DISK size=<bytes> ro=<0|1>}. */
    public static final String DISK_MARKER = "LAZYBLK-DISK";
    /** {@code LAZYBLK-RESULT ok key=value...} or {@code LAZYBLK-RESULT fail <reason>}. */
    public static final String RESULT_MARKER = "LAZYBLK-RESULT";

    private static final String QEMU = "qemu-system-x86_64";
    private static final Path QBOOT = Path.of("/usr/share/qemu/qboot.rom");
    private static final String BUILD_SCRIPT = "build-guest.sh";
    private static final String ROOTDISK_SCRIPT = "build-rootdisk.sh";
    private static final String PATTERN_LINE = "lazyblk-pattern\n";
    private static final int PATTERN_BYTES = 1 << 20;
    private static final Duration BUILD_TIMEOUT = Duration.ofMinutes(10);
    private static final Duration GRACE = Duration.ofSeconds(5);

    /**
     * What one boot produced.
     *
     * @param exitCode QEMU's exit status, or -1 if it was killed because the timeout expired
     * @param ok whether the guest printed {@code LAZYBLK-RESULT ok}
     * @param writeMd5 md5 (hex) of the pattern the guest wrote ({@code rw}), else null
     * @param diskMd5 md5 (hex) of the whole disk as the guest read it ({@code rw}: after the write; {@code ro}),
     *     else null
     * @param diskSize disk size in bytes the guest saw, or -1 if it never got that far
     * @param millisToInitMarker milliseconds from QEMU's start to the {@code LAZYBLK-INIT} line (booting from the
     *     disk: printed by the disk's {@code /sbin/init}), or -1 if never seen
     * @param millisToInitramfsMarker milliseconds from QEMU's start to the {@code LAZYBLK-INITRAMFS} line (booting
     *     from the disk only), or -1 if never seen
     * @param millisToResultMarker milliseconds from QEMU's start to the {@code LAZYBLK-RESULT} line, or -1 if never
     *     seen: for the {@code realboot} test, "ready" (its userland's first commands have run)
     * @param consoleLines everything QEMU printed (serial console, stdout and stderr), without line terminators
     * @param logFile the same output, preceded by the command line and followed by the exit status
     */
    public record Result(int exitCode, boolean ok, String writeMd5, String diskMd5, long diskSize,
                         long millisToInitMarker, long millisToInitramfsMarker, long millisToResultMarker,
                         List<String> consoleLines, Path logFile) {
        public Result {
            consoleLines = List.copyOf(consoleLines);
        }

        /** The {@code LAZYBLK-RESULT} line, if the guest printed one. */
        public Optional<String> resultLine() {
            return consoleLines.stream().map(l -> fromMarker(l, RESULT_MARKER)).filter(Objects::nonNull).findFirst();
        }

        /** The value of {@code key=value} in the {@code LAZYBLK-RESULT} line, e.g. {@code pattern_off}. */
        public Optional<String> resultField(final String key) {
            return resultLine().map(l -> field(l, key));
        }
    }

    /**
     * How a run differs from the plain one.
     *
     * @param reconnect the vhost-user chardev reconnects ({@code reconnect=1}): QEMU survives the back end going away
     *     and connects again every second; the guest's requests wait meanwhile
     * @param cpus guest vCPUs ({@code -smp}); more than one spreads the guest's I/O over several queues
     * @param onLine called on the console reader thread with every line as it arrives (null for none); should be quick
     * @param extraArgs appended to QEMU's command line (e.g. {@code -qmp}, {@code -incoming})
     * @param ownDisk null for the engine's disk over vhost-user (the socket); else an image file QEMU serves itself
     *     (virtio-blk-pci over {@code -drive}, raw, cache=none, aio=native): the reference a measurement compares with
     */
    public record RunOptions(boolean reconnect, int cpus, java.util.function.Consumer<String> onLine, List<String> extraArgs,
                             Path ownDisk) {
        public static final RunOptions PLAIN = new RunOptions(false, 1, null);

        public RunOptions {
            extraArgs = List.copyOf(extraArgs);
        }

        public RunOptions(final boolean reconnect, final int cpus, final java.util.function.Consumer<String> onLine) {
            this(reconnect, cpus, onLine, List.of(), null);
        }

        public RunOptions(final boolean reconnect, final int cpus, final java.util.function.Consumer<String> onLine,
                          final List<String> extraArgs) {
            this(reconnect, cpus, onLine, extraArgs, null);
        }
    }

    private final Path guestScriptsDir;
    private final Path guestDir;
    private final Path logDir;
    private boolean built;

    /**
     * @param guestScriptsDir the repository's {@code tools/guest} directory (see {@link #findGuestScriptsDir()})
     * @param guestDir where the kernel and initramfs are built and kept
     * @param logDir where per-boot console logs are written
     */
    public QemuGuest(final Path guestScriptsDir, final Path guestDir, final Path logDir) {
        this.guestScriptsDir = guestScriptsDir.toAbsolutePath();
        this.guestDir = guestDir.toAbsolutePath();
        this.logDir = logDir.toAbsolutePath();
    }

    /**
     * Uses the guest directory {@code build-guest.sh} defaults to ({@code $LAZYBLK_GUEST_DIR}, else
     * {@code ~/.cache/lazyblk/guest}) and logs to {@code java.io.tmpdir/lazyblk-guest-USER}.
     */
    public QemuGuest(final Path guestScriptsDir) {
        this(guestScriptsDir, defaultGuestDir(), Path.of(System.getProperty("java.io.tmpdir"), "lazyblk-guest-" + System.getProperty("user.name")));
    }

    /** Where the kernel and initramfs are built and kept. */
    public Path guestDir() {
        return guestDir;
    }

    /** Whether {@code qemu-system-x86_64} is on the PATH. */
    public static boolean available() {
        return findOnPath(QEMU).isPresent();
    }

    /** Why {@link #available()} is false, or null when it is true. */
    public static String unavailableReason() {
        return available() ? null : QEMU + " not found on PATH (apt-get install qemu-system-x86)";
    }

    /** The nearest {@code tools/guest} holding {@code build-guest.sh}, from the current directory upwards. */
    public static Optional<Path> findGuestScriptsDir() {
        for (Path dir = Path.of("").toAbsolutePath(); dir != null; dir = dir.getParent()) {
            final Path candidate = dir.resolve("tools").resolve("guest");
            if (Files.isRegularFile(candidate.resolve(BUILD_SCRIPT))) {
                return Optional.of(candidate);
            }
        }
        return Optional.empty();
    }

    /**
     * Exactly the bytes the {@code rw} test writes: 1 MiB of the 16-byte line {@code "lazyblk-pattern\n"} repeated
     * (on a shell: {@code yes lazyblk-pattern | head -c 1048576}).
     */
    public static byte[] expectedPattern() {
        return PATTERN_LINE.repeat(PATTERN_BYTES / PATTERN_LINE.length()).getBytes(StandardCharsets.US_ASCII);
    }

    /** Byte offset of the pattern for {@code lazyblk.off=blocks}. */
    public static long patternOffsetBytes(final int blocks) {
        if (blocks < 0) {
            throw new IllegalArgumentException("negative block offset " + blocks);
        }
        return (long) blocks * PATTERN_BLOCK_SIZE;
    }

    /** Builds the kernel and initramfs unless this instance already did; up-to-date files make it a no-op. */
    public synchronized void prepare() throws IOException, InterruptedException {
        if (built) {
            return;
        }
        Files.createDirectories(logDir);
        final Path log = logDir.resolve("build-guest.log");
        final Process build = new ProcessBuilder("bash", guestScriptsDir.resolve(BUILD_SCRIPT).toString(),
                guestDir.toString())
                .redirectErrorStream(true)
                .redirectOutput(log.toFile())
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .start();
        try {
            if (!build.waitFor(BUILD_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
                throw new IOException(BUILD_SCRIPT + " timed out after " + BUILD_TIMEOUT + "; see " + log);
            }
            if (build.exitValue() != 0) {
                throw new IOException(BUILD_SCRIPT + " failed (exit " + build.exitValue() + "):\n"
                        + Files.readString(log));
            }
        } finally {
            kill(build);
        }
        built = true;
    }

    /**
     * Builds (or, if it is up to date, keeps) a root disk image with {@code tools/guest/build-rootdisk.sh} for
     * {@link #bootFromDisk}: ext4 with busybox, the test init and incompressible ballast, then a raw scratch area.
     * The script caches: an image built with the same inputs is left as it is, even if boots changed it since.
     *
     * @param image the raw image file to create
     * @param size image size as the script takes it, e.g. {@code 1G} or {@code 256M}
     * @param extraArgs further options of the script, e.g. {@code --ballast 0} or {@code --force}
     * @return {@code image}
     */
    public Path buildRootDisk(final Path image, final String size, final String... extraArgs)
            throws IOException, InterruptedException {
        Files.createDirectories(logDir);
        final List<String> cmd = new ArrayList<>(List.of("bash",
                guestScriptsDir.resolve(ROOTDISK_SCRIPT).toString(), "--size", size));
        cmd.addAll(List.of(extraArgs));
        cmd.add(image.toAbsolutePath().toString());
        final Path log = logDir.resolve("build-rootdisk.log");
        final Process build = new ProcessBuilder(cmd)
                .redirectErrorStream(true)
                .redirectOutput(log.toFile())
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .start();
        try {
            if (!build.waitFor(BUILD_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
                throw new IOException(ROOTDISK_SCRIPT + " timed out after " + BUILD_TIMEOUT + "; see " + log);
            }
            if (build.exitValue() != 0) {
                throw new IOException(ROOTDISK_SCRIPT + " failed (exit " + build.exitValue() + "):\n"
                        + Files.readString(log));
            }
        } finally {
            kill(build);
        }
        return image;
    }

    /**
     * Boots the guest against the vhost-user-blk backend listening on {@code socket} and waits for it to power off.
     *
     * @param test {@code rw}, {@code ro} or {@code boot}
     * @param queues num-queues of the vhost-user-blk-pci device
     * @param timeout after which QEMU is killed (the result then has exit code -1)
     * @param extraKernelArgs appended to the kernel command line, e.g. {@code lazyblk.off=4096}
     */
    public Result boot(final Path socket, final String test, final int queues, final Duration timeout,
                       final String... extraKernelArgs) throws IOException, InterruptedException {
        return run(socket, test, queues, timeout, null, null, RunOptions.PLAIN, extraKernelArgs);
    }

    /** {@link #boot(Path, String, int, Duration, String...)} with {@code options}. */
    public Result boot(final Path socket, final String test, final int queues, final Duration timeout, final RunOptions options,
                       final String... extraKernelArgs) throws IOException, InterruptedException {
        return run(socket, test, queues, timeout, null, null, options, extraKernelArgs);
    }

    /**
     * Boots the guest with the disk as its root filesystem (see the class comment; the disk must come from
     * {@link #buildRootDisk} or {@code build-rootdisk.sh}): like {@link #boot} with {@value #ROOT_KERNEL_ARG}, and
     * {@link Result#millisToInitMarker()} measured to the {@code LAZYBLK-INIT} of the disk's {@code /sbin/init}.
     *
     * @param test {@code boot} (boot-time benchmark: reads only what running the init needs), {@code rw} or {@code ro}
     */
    public Result bootFromDisk(final Path socket, final String test, final int queues, final Duration timeout,
                               final String... extraKernelArgs) throws IOException, InterruptedException {
        return bootFromDisk(socket, test, queues, timeout, null, extraKernelArgs);
    }

    /**
     * {@link #bootFromDisk(Path, String, int, Duration, String...)}, running {@code atInitMarker} on the console
     * reader thread as soon as the disk's {@code LAZYBLK-INIT} line arrives (while the guest keeps running), e.g. to
     * snapshot a backend's read counters: "bytes read before init". It should be quick; if it throws, the exception
     * is rethrown once the guest is done.
     */
    public Result bootFromDisk(final Path socket, final String test, final int queues, final Duration timeout,
                               final Runnable atInitMarker, final String... extraKernelArgs)
            throws IOException, InterruptedException {
        return bootFromDisk(socket, test, queues, timeout, atInitMarker, null, extraKernelArgs);
    }

    /**
     * As {@link #bootFromDisk(Path, String, int, Duration, Runnable, String...)}, also running {@code atResultMarker}
     * (if not null) when the {@code LAZYBLK-RESULT} line arrives: for {@code realboot}, the moment the guest is ready.
     */
    public Result bootFromDisk(final Path socket, final String test, final int queues, final Duration timeout,
                               final Runnable atInitMarker, final Runnable atResultMarker, final String... extraKernelArgs)
            throws IOException, InterruptedException {
        final String[] args = new String[extraKernelArgs.length + 1];
        args[0] = ROOT_KERNEL_ARG;
        System.arraycopy(extraKernelArgs, 0, args, 1, extraKernelArgs.length);
        return run(socket, test, queues, timeout, atInitMarker, atResultMarker, RunOptions.PLAIN, args);
    }

    private Result run(final Path socket, final String test, final int queues, final Duration timeout,
                       final Runnable atInitMarker, final Runnable atResultMarker, final RunOptions options,
                       final String... extraKernelArgs)
            throws IOException, InterruptedException {
        if (queues < 1) {
            throw new IllegalArgumentException("queues must be >= 1: " + queues);
        }
        prepare();
        final List<String> command = command(socket, test, queues, options, extraKernelArgs);
        final Path logFile = Files.createTempFile(logDir, "qemu-" + test + "-", ".log");
        final List<String> lines = Collections.synchronizedList(new ArrayList<>());
        final long[] initNanos = {-1};
        final long[] initramfsNanos = {-1};
        final long[] resultNanos = {-1};
        final RuntimeException[] callbackFailure = {null};

        try (BufferedWriter log = Files.newBufferedWriter(logFile)) {
            log.write("# " + String.join(" ", command));
            log.newLine();
            final Process qemu = new ProcessBuilder(command)
                    .redirectErrorStream(true)
                    .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                    .start();
            final long start = System.nanoTime();
            final Thread reader = Thread.ofPlatform().daemon().name("qemu-console-" + qemu.pid()).start(() -> {
                try (BufferedReader in = new BufferedReader(
                        new InputStreamReader(qemu.getInputStream(), StandardCharsets.UTF_8))) {
                    for (String line; (line = in.readLine()) != null; ) {
                        line = line.replace("\r", "");
                        if (initNanos[0] < 0 && hasMarker(line, INIT_MARKER)) {
                            initNanos[0] = System.nanoTime() - start;
                            if (atInitMarker != null) {
                                try {
                                    atInitMarker.run();
                                } catch (RuntimeException e) {
                                    callbackFailure[0] = e;
                                }
                            }
                        }
                        if (resultNanos[0] < 0 && hasMarker(line, RESULT_MARKER)) {
                            resultNanos[0] = System.nanoTime() - start;
                            if (atResultMarker != null) {
                                try {
                                    atResultMarker.run();
                                } catch (RuntimeException e) {
                                    callbackFailure[0] = e;
                                }
                            }
                        }
                        if (initramfsNanos[0] < 0 && hasMarker(line, INITRAMFS_MARKER)) {
                            initramfsNanos[0] = System.nanoTime() - start;
                        }
                        lines.add(line);
                        if (options.onLine() != null) {
                            options.onLine().accept(line);
                        }
                        synchronized (log) {
                            log.write(line);
                            log.newLine();
                            log.flush();
                        }
                    }
                } catch (IOException e) {
                    if (qemu.isAlive()) {
                        throw new UncheckedIOException(e);
                    }
                }
            });
            final int exitCode;
            try {
                exitCode = qemu.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS) ? qemu.exitValue() : -1;
            } finally {
                kill(qemu);
                reader.join(GRACE);
                if (reader.isAlive()) {
                    qemu.getInputStream().close();
                    reader.join(GRACE);
                }
            }
            synchronized (log) {
                log.write("# exit " + (exitCode == -1 ? "-1 (killed after " + timeout + ")" : exitCode));
                log.newLine();
            }
            if (callbackFailure[0] != null) {
                throw callbackFailure[0];
            }
            return result(exitCode, lines, initNanos[0], initramfsNanos[0], resultNanos[0], logFile);
        }
    }

    private List<String> command(final Path socket, final String test, final int queues, final RunOptions options,
                                 final String... extraKernelArgs) {
        final List<String> cmd = new ArrayList<>(List.of(QEMU,
                "-nographic", "-no-reboot", "-nic", "none",
                "-machine", "q35,accel=tcg", "-cpu", "max", "-m", "512M", "-smp", Integer.toString(options.cpus())));
        if (Files.isRegularFile(QBOOT)) {
            cmd.addAll(List.of("-bios", QBOOT.toString()));
        }
        cmd.addAll(List.of("-object", "memory-backend-memfd,id=mem0,size=512M,share=on", "-numa", "node,memdev=mem0"));
        if (options.ownDisk() == null) {
            cmd.addAll(List.of(
                "-chardev", "socket,id=vub0,path=" + socket.toAbsolutePath() + (options.reconnect() ? ",reconnect=1" : ""),
                "-device", "vhost-user-blk-pci,chardev=vub0,num-queues=" + queues));
        } else {
            cmd.addAll(List.of(
                "-drive", "file=" + options.ownDisk().toAbsolutePath() + ",format=raw,if=none,id=d0,cache=none,aio=native",
                "-device", "virtio-blk-pci,drive=d0,num-queues=" + queues));
        }
        cmd.addAll(List.of(
                "-kernel", guestDir.resolve("vmlinuz").toString(),
                "-initrd", guestDir.resolve("initramfs.gz").toString(),
                "-append", "console=ttyS0 quiet panic=-1 lazyblk.test=" + test
                        + (extraKernelArgs.length == 0 ? "" : " " + String.join(" ", extraKernelArgs))));
        cmd.addAll(options.extraArgs());
        return cmd;
    }

    private static Result result(final int exitCode, final List<String> lines, final long initNanos,
                                 final long initramfsNanos, final long resultNanos, final Path logFile) {
        final List<String> console;
        synchronized (lines) {
            console = List.copyOf(lines);
        }
        boolean ok = false;
        String writeMd5 = null;
        String diskMd5 = null;
        long diskSize = -1;
        for (final String line : console) {
            final String disk = fromMarker(line, DISK_MARKER);
            if (disk != null && diskSize < 0) {
                final String size = field(disk, "size");
                diskSize = size == null ? -1 : Long.parseLong(size);
            }
            final String res = fromMarker(line, RESULT_MARKER);
            if (res != null && res.startsWith(RESULT_MARKER + " ok")) {
                ok = true;
                writeMd5 = field(res, "write_md5");
                diskMd5 = field(res, "disk_md5");
            }
        }
        final long initMillis = initNanos < 0 ? -1 : TimeUnit.NANOSECONDS.toMillis(initNanos);
        final long initramfsMillis = initramfsNanos < 0 ? -1 : TimeUnit.NANOSECONDS.toMillis(initramfsNanos);
        final long resultMillis = resultNanos < 0 ? -1 : TimeUnit.NANOSECONDS.toMillis(resultNanos);
        return new Result(exitCode, ok, writeMd5, diskMd5, diskSize, initMillis, initramfsMillis, resultMillis, console, logFile);
    }

    /**
     * Whether {@code line} holds {@code marker} as a whole word: followed by a space or the end of the line, so that
     * {@code LAZYBLK-INITRAMFS} is not taken for {@code LAZYBLK-INIT}.
     */
    static boolean hasMarker(final String line, final String marker) {
        for (int at = line.indexOf(marker); at >= 0; at = line.indexOf(marker, at + 1)) {
            final int end = at + marker.length();
            if (end == line.length() || line.charAt(end) == ' ') {
                return true;
            }
        }
        return false;
    }

    /** The part of {@code line} from {@code marker} on (kernel messages may precede it), or null. */
    private static String fromMarker(final String line, final String marker) {
        final int at = line.indexOf(marker);
        return at < 0 ? null : line.substring(at);
    }

    /** The value of {@code key=value} among the space-separated words of {@code line}, or null. */
    private static String field(final String line, final String key) {
        for (final String word : line.split(" ")) {
            if (word.startsWith(key + "=")) {
                return word.substring(key.length() + 1);
            }
        }
        return null;
    }

    private static void kill(final Process process) throws InterruptedException {
        process.descendants().forEach(ProcessHandle::destroyForcibly);
        process.destroyForcibly();
        process.waitFor(GRACE.toMillis(), TimeUnit.MILLISECONDS);
    }

    public static Path defaultGuestDir() {
        final String env = System.getenv("LAZYBLK_GUEST_DIR");
        return env != null && !env.isEmpty()
                ? Path.of(env)
                : Path.of(System.getProperty("user.home"), ".cache", "lazyblk", "guest");
    }

    /** {@code program} if it is an executable file in a directory on the PATH. */
    public static Optional<Path> findOnPath(final String program) {
        final String path = System.getenv("PATH");
        if (path == null) {
            return Optional.empty();
        }
        for (final String dir : path.split(File.pathSeparator)) {
            if (dir.isEmpty()) {
                continue;
            }
            final Path candidate = Path.of(dir, program);
            if (Files.isExecutable(candidate)) {
                return Optional.of(candidate);
            }
        }
        return Optional.empty();
    }
}
