package io.lazyblk.tools;

import io.lazyblk.tools.guest.QemuGuest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.io.TempDir;
import org.w3c.dom.Document;
import org.w3c.dom.Element;
import org.w3c.dom.Node;

import javax.xml.parsers.DocumentBuilderFactory;
import javax.xml.transform.OutputKeys;
import javax.xml.transform.TransformerFactory;
import javax.xml.transform.dom.DOMSource;
import javax.xml.transform.stream.StreamResult;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.nio.file.attribute.UserPrincipal;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The libvirt domain the project ships ({@code tools/libvirt/lazyblk-vm.xml}) under a real {@code libvirtd} from
 * Debian's packages, started by the test: libvirt's schema accepts the file as shipped, and libvirt starts QEMU from it
 * and boots the project's test guest, whose disk an engine serves lazily from an image server.
 *
 * <p>The daemon runs in libvirt's session mode, as an unprivileged user ({@code nobody} when the tests run as root,
 * else the test's own user), with its sockets, configuration and state under the test's directory: it touches nothing
 * of the host's, and QEMU runs as that user, as libvirt's system daemon runs it as {@code libvirt-qemu}. So the engine
 * serves its socket as the units do, to QEMU's group with mode 0660, and QEMU connects only through that group.
 * Changed from the shipped file, and only these: TCG instead of KVM (KVM does not work on the test machines), no host
 * CPU model, 512 MiB of RAM, the test guest's kernel instead of firmware, the test's socket and a console file.
 */
class LibvirtGuestTest {
    private static final Path REPO = Path.of("").toAbsolutePath().getParent();
    private static final Path SHIPPED = REPO.resolve("tools/libvirt/lazyblk-vm.xml");
    private static final String DOMAIN = "lazyblk-test";
    private static final Duration BOOT_TIMEOUT = Duration.ofSeconds(180);
    private static final Duration DAEMON_TIMEOUT = Duration.ofSeconds(30);
    private static final String MISSING = "libvirt is not installed (apt-get install libvirt-daemon-driver-qemu libvirt-clients)";

    @TempDir
    Path dir;

    @Test
    void shouldShipADomainThatLibvirtsSchemaAccepts() throws Exception {
        final Optional<Path> validate = onPath("virt-xml-validate");
        assumeTrue(validate.isPresent(), MISSING);
        assumeTrue(onPath("xmllint").isPresent(), "virt-xml-validate needs xmllint (apt-get install libxml2-utils)");
        final Run r = run(List.of(validate.get().toString(), SHIPPED.toString(), "domain"), Map.of(), Duration.ofSeconds(30));
        assertEquals(0, r.exit(), r.output());
        assertTrue(r.output().contains("validates"), r.output());
    }

    @Test
    void shouldBootTheTestGuestFromTheShippedDomainWithItsDiskServedLazilyByTheEngine(final TestInfo test) throws Exception {
        assumeTrue(QemuGuest.available(), QemuGuest.unavailableReason());
        final Optional<Path> libvirtd = onPath("libvirtd");
        final Optional<Path> virsh = onPath("virsh");
        assumeTrue(libvirtd.isPresent() && virsh.isPresent(), MISSING);
        final boolean root = "root".equals(System.getProperty("user.name"));
        final String user = root ? "nobody" : System.getProperty("user.name");
        final Run ids = run(List.of("id", "-u", user), Map.of(), Duration.ofSeconds(10));
        assumeTrue(ids.exit() == 0, "running libvirtd unprivileged needs the user " + user + ": " + ids.output());
        final String uid = ids.output().strip();
        final String gid = run(List.of("id", "-g", user), Map.of(), Duration.ofSeconds(10)).output().strip();
        final String group = run(List.of("id", "-gn", user), Map.of(), Duration.ofSeconds(10)).output().strip();

        final QemuGuest guest = new QemuGuest(QemuGuest.findGuestScriptsDir().orElseThrow(
            () -> new IllegalStateException("no tools/guest above the working directory")));
        guest.prepare();

        // QEMU, as libvirtd's user, must reach the socket and the guest's files, and nothing else of the test's.
        Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString("rwx--x--x"));
        final Path lv = Files.createDirectories(dir.resolve("lv"));
        final Path run = Files.createDirectories(lv.resolve("run"));
        final Path config = Files.createDirectories(lv.resolve("config/libvirt"));
        Files.createDirectories(lv.resolve("cache"));
        Files.createDirectories(lv.resolve("data"));
        // Console and QEMU output into files: no virtlogd to start and stop beside libvirtd.
        Files.writeString(config.resolve("qemu.conf"), "stdio_handler = \"file\"\n");
        Files.writeString(config.resolve("libvirtd.conf"), "log_outputs = \"3:stderr\"\n");
        final Path kernel = Files.copy(guest.guestDir().resolve("vmlinuz"), lv.resolve("vmlinuz"));
        final Path initrd = Files.copy(guest.guestDir().resolve("initramfs.gz"), lv.resolve("initramfs.gz"));
        Files.setPosixFilePermissions(run, PosixFilePermissions.fromString("rwx------"));
        if (root) {
            final UserPrincipal owner = dir.getFileSystem().getUserPrincipalLookupService().lookupPrincipalByName(user);
            try (Stream<Path> all = Files.walk(lv)) {
                for (final Path p : all.toList()) {
                    Files.setOwner(p, owner);
                }
            }
        }
        final Path socket = dir.resolve("vm.sock");
        final Path console = lv.resolve("console.log");

        final Document xml = parse(SHIPPED);
        final int queues = Integer.parseInt(first(xml, "disk").getElementsByTagName("driver").item(0).getAttributes()
            .getNamedItem("queues").getNodeValue());
        final Path domainXml = lv.resolve("domain.xml");
        Files.writeString(domainXml, forTest(xml, kernel, initrd, socket, console));

        try (LazyProcesses lp = new LazyProcesses(dir, test)) {
            final int port = LazyProcesses.portOf(lp.startProvider("provider", 0));
            final Path tokenFile = Files.writeString(dir.resolve("vm.token"), lp.token(LazyProcesses.IMAGE) + "\n");
            final Path local = dir.resolve("vm.img");
            final LazyblkProcess engine = lp.start("engine", Map.of(), "serve", "--socket", socket.toString(),
                "--local", local.toString(), "--source", "tcp://127.0.0.1:" + port + "/" + LazyProcesses.IMAGE,
                "--token-file", tokenFile.toString(), "--queues", String.valueOf(queues),
                "--socket-group", group, "--socket-mode", "0660",
                // slow enough that the guest boots on pages it pulls on demand
                "--fill-rate", "1M", "--memory-budget", "4M");
            engine.awaitLine("lazyblk: serving", LazyblkProcess.START_TIMEOUT);

            try (Libvirtd daemon = Libvirtd.start(libvirtd.get(), virsh.get(), lv, root ? uid : null, root ? gid : null,
                Files.createDirectories(Path.of("target", "lazy-process-logs", "libvirt")))) {
                final Run created = daemon.virsh("create", domainXml.toString());
                assertEquals(0, created.exit(), "virsh create: " + created.output());
                final long pid = Long.parseLong(Files.readString(run.resolve("libvirt/qemu/run/" + DOMAIN + ".pid")).strip());
                final Optional<ProcessHandle> qemu = ProcessHandle.of(pid);
                // The guest powers off when its test is done (on_poweroff destroy): QEMU then exits.
                if (qemu.isPresent()) {
                    qemu.get().onExit().get(BOOT_TIMEOUT.toSeconds(), TimeUnit.SECONDS);
                }
            }
            final List<String> lines = Files.readAllLines(console, StandardCharsets.UTF_8);
            final String result = lines.stream().map(l -> l.replace("\r", ""))
                .filter(l -> l.startsWith(QemuGuest.RESULT_MARKER)).findFirst()
                .orElseThrow(() -> new AssertionError("the guest printed no result; console:\n" + String.join("\n", lines)));
            assertTrue(result.startsWith(QemuGuest.RESULT_MARKER + " ok"), result);
            assertTrue(lines.stream().anyMatch(l -> l.contains(QemuGuest.DISK_MARKER + " size=" + LazyProcesses.SIZE + " ro=0")),
                "the guest saw the golden image's size, writable");
            // What the guest read back is the golden image with its own write in it: lazily pulled through libvirt's QEMU.
            final long off = QemuGuest.patternOffsetBytes(QemuGuest.DEFAULT_PATTERN_OFFSET_BLOCKS);
            final byte[] pattern = QemuGuest.expectedPattern();
            final byte[] expected = lp.golden.clone();
            System.arraycopy(pattern, 0, expected, (int) off, pattern.length);
            assertEquals("write_md5=" + md5(pattern), field(result, "write_md5"));
            assertEquals("disk_md5=" + md5(expected), field(result, "disk_md5"));
            assertTrue(engine.printed("front end connected", 0), "QEMU connected through the socket's group");

            // The guest flushed its write: it is in the engine's file even though the engine is killed now.
            engine.close();
            assertArrayEquals(pattern, DemoCommand.readAt(local, off, pattern.length));
        }
    }

    /** The shipped domain, changed only where the test machine or the test guest needs it (see the class comment). */
    private static String forTest(final Document xml, final Path kernel, final Path initrd, final Path socket, final Path console)
        throws Exception {
        final Element domain = xml.getDocumentElement();
        domain.setAttribute("type", "qemu");
        first(xml, "name").setTextContent(DOMAIN);
        final Element memory = first(xml, "memory");
        memory.setAttribute("unit", "MiB");
        memory.setTextContent("512");
        final Element cpu = first(xml, "cpu");
        cpu.getParentNode().removeChild(cpu);
        final Element os = first(xml, "os");
        os.appendChild(text(xml, "kernel", kernel.toString()));
        os.appendChild(text(xml, "initrd", initrd.toString()));
        os.appendChild(text(xml, "cmdline", "console=ttyS0 quiet panic=-1 lazyblk.test=rw"));
        ((Element) first(xml, "disk").getElementsByTagName("source").item(0)).setAttribute("path", socket.toString());
        for (final String tag : List.of("serial", "console")) {
            final Element e = first(xml, tag);
            e.setAttribute("type", "file");
            final Element source = xml.createElement("source");
            source.setAttribute("path", console.toString());
            e.insertBefore(source, e.getFirstChild());
        }
        final var out = new java.io.StringWriter();
        final var t = TransformerFactory.newInstance().newTransformer();
        t.setOutputProperty(OutputKeys.OMIT_XML_DECLARATION, "yes");
        t.transform(new DOMSource(xml), new StreamResult(out));
        return out.toString();
    }

    private static Document parse(final Path file) throws Exception {
        final DocumentBuilderFactory f = DocumentBuilderFactory.newInstance();
        f.setFeature("http://apache.org/xml/features/disallow-doctype-decl", true);
        return f.newDocumentBuilder().parse(file.toFile());
    }

    private static Element first(final Document xml, final String tag) {
        final Node n = xml.getElementsByTagName(tag).item(0);
        if (n == null) {
            throw new AssertionError(SHIPPED + " has no <" + tag + ">");
        }
        return (Element) n;
    }

    private static Element text(final Document xml, final String tag, final String value) {
        final Element e = xml.createElement(tag);
        e.setTextContent(value);
        return e;
    }

    private static String field(final String line, final String key) {
        for (final String word : line.split(" ")) {
            if (word.startsWith(key + "=")) {
                return word;
            }
        }
        return key + " missing in: " + line;
    }

    private static String md5(final byte[] data) throws Exception {
        return HexFormat.of().formatHex(MessageDigest.getInstance("MD5").digest(data));
    }

    private static Optional<Path> onPath(final String name) {
        for (final String d : System.getenv().getOrDefault("PATH", "").split(":")) {
            final Path p = Path.of(d.isEmpty() ? "." : d, name);
            if (Files.isExecutable(p)) {
                return Optional.of(p);
            }
        }
        for (final String d : List.of("/usr/sbin", "/sbin")) {
            final Path p = Path.of(d, name);
            if (Files.isExecutable(p)) {
                return Optional.of(p);
            }
        }
        return Optional.empty();
    }

    record Run(int exit, String output) {
    }

    private static Run run(final List<String> cmd, final Map<String, String> env, final Duration timeout) throws Exception {
        final ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true)
            .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")));
        pb.environment().putAll(env);
        final Process p = pb.start();
        final var output = java.util.concurrent.CompletableFuture.supplyAsync(() -> {
            try {
                return new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            } catch (final IOException e) {
                return "(output unreadable: " + e.getMessage() + ")";
            }
        }, r -> Thread.ofPlatform().daemon().start(r));
        if (!p.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
            p.destroyForcibly();
            throw new AssertionError(String.join(" ", cmd) + " did not finish within " + timeout);
        }
        return new Run(p.exitValue(), output.get(timeout.toSeconds(), TimeUnit.SECONDS));
    }

    /**
     * {@code libvirtd} in session mode with every directory under {@code home} (the XDG variables point there), as the
     * user {@code uid}:{@code gid} (through util-linux's {@code setpriv}) when given. Closing destroys the test domain
     * if it still runs, stops the daemon and kills a QEMU it left behind.
     */
    private static final class Libvirtd implements AutoCloseable {
        private final Process process;
        private final Path virsh;
        private final Path home;
        private final String uri;

        private Libvirtd(final Process process, final Path virsh, final Path home) {
            this.process = process;
            this.virsh = virsh;
            this.home = home;
            this.uri = "qemu+unix:///session?socket=" + home.resolve("run/libvirt/libvirt-sock");
        }

        static Libvirtd start(final Path libvirtd, final Path virsh, final Path home, final String uid, final String gid,
                              final Path logs) throws IOException {
            final List<String> cmd = new ArrayList<>();
            if (uid != null) {
                cmd.addAll(List.of("setpriv", "--reuid=" + uid, "--regid=" + gid, "--clear-groups"));
            }
            // --timeout: should this JVM die, the idle daemon does not outlive it by more than ten minutes.
            cmd.addAll(List.of(libvirtd.toString(), "--timeout", "600"));
            final ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true)
                .redirectOutput(logs.resolve("libvirtd.log").toFile())
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")));
            pb.environment().clear();
            pb.environment().putAll(Map.of("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", "LANG", "C", "HOME", home.toString(),
                "XDG_RUNTIME_DIR", home.resolve("run").toString(), "XDG_CONFIG_HOME", home.resolve("config").toString(),
                "XDG_CACHE_HOME", home.resolve("cache").toString(), "XDG_DATA_HOME", home.resolve("data").toString()));
            final Libvirtd d = new Libvirtd(pb.start(), virsh, home);
            final Path sock = home.resolve("run/libvirt/libvirt-sock");
            final long deadline = System.nanoTime() + DAEMON_TIMEOUT.toNanos();
            while (!Files.exists(sock)) {
                if (!d.process.isAlive() || System.nanoTime() - deadline > 0) {
                    d.close();
                    throw new AssertionError("libvirtd did not open " + sock + " within " + DAEMON_TIMEOUT + " (alive: "
                        + d.process.isAlive() + "); see " + logs.resolve("libvirtd.log").toAbsolutePath() + ":\n"
                        + Files.readString(logs.resolve("libvirtd.log")));
                }
                LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(50));
            }
            return d;
        }

        Run virsh(final String... args) throws Exception {
            final List<String> cmd = new ArrayList<>(List.of(virsh.toString(), "-c", uri));
            cmd.addAll(List.of(args));
            return run(cmd, Map.of(), Duration.ofSeconds(60));
        }

        @Override
        public void close() throws IOException {
            final Path pidFile = home.resolve("run/libvirt/qemu/run/" + DOMAIN + ".pid");
            try {
                if (process.isAlive() && Files.exists(pidFile)) {
                    virsh("destroy", DOMAIN);
                }
            } catch (final Exception | AssertionError e) {
                // the kill below takes care of it
            }
            if (Files.exists(pidFile)) {
                try {
                    ProcessHandle.of(Long.parseLong(Files.readString(pidFile).strip())).ifPresent(ProcessHandle::destroyForcibly);
                } catch (final NumberFormatException | IOException e) {
                    // unreadable pid file: nothing to kill
                }
            }
            process.destroy();
            try {
                if (!process.waitFor(10, TimeUnit.SECONDS)) {
                    process.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
                }
            } catch (final InterruptedException e) {
                Thread.currentThread().interrupt();
                process.destroyForcibly();
            }
        }
    }
}
