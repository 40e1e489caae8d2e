package io.lazyblk.pull.rdma;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

/**
 * Whether {@code rdma://} can work in this JVM, decided once and without touching a DiSNI class until the native
 * half is known to be there: DiSNI's first native call without {@code libdisni} throws
 * {@link UnsatisfiedLinkError} and every later one {@link NoClassDefFoundError}, which must never reach the engine.
 * The order of the checks gives the most useful reason first: the library (which a user must build), then the
 * devices and their ports (from {@code /sys/class/infiniband}), and only then a real load and an RDMA CM event
 * channel inside a catch-all. Thread-safe; {@link #probe()} is computed once per JVM.
 */
public final class RdmaProbe {
    /** What {@link System#loadLibrary} looks for: libdisni.so on Linux. */
    static final String LIBRARY_FILE = System.mapLibraryName("disni");

    /** One port of an RDMA device as the kernel reports it ({@code state} is e.g. ACTIVE, DOWN, INIT). */
    public record Port(String device, int port, String state) {
        public boolean active() {
            return "ACTIVE".equals(state);
        }

        @Override
        public String toString() {
            return device + " port " + port + " " + state;
        }
    }

    /**
     * The verdict and what it was based on.
     *
     * @param usable  true only if libdisni loaded, a port is ACTIVE and an RDMA CM event channel opened
     * @param reason  one line for a person: why not, or what will be used
     * @param devices RDMA devices found under /sys/class/infiniband (may be empty)
     * @param ports   their ports and states
     * @param libdisni where libdisni.so was found, or null
     * @param searched the directories searched for it (java.library.path, then LD_LIBRARY_PATH)
     */
    public record Availability(boolean usable, String reason, List<String> devices, List<Port> ports, Path libdisni,
                               List<Path> searched) {
        public Availability {
            devices = List.copyOf(devices);
            ports = List.copyOf(ports);
            searched = List.copyOf(searched);
        }
    }

    /** Loads libdisni and opens (then closes) an RDMA CM event channel; returns null if that worked, else why not. */
    @FunctionalInterface
    interface Loader {
        String load(Path library);
    }

    private static volatile Availability cached;

    private RdmaProbe() {
    }

    /** The verdict for this JVM and host, computed on first call. */
    public static Availability probe() {
        Availability a = cached;
        if (a == null) {
            synchronized (RdmaProbe.class) {
                a = cached;
                if (a == null) {
                    a = probe(Path.of("/"), librarySearchPath(), RdmaProbe::loadForReal);
                    cached = a; // volatile write: publishes the finished record to every later unsynchronized read
                }
            }
        }
        return a;
    }

    /** The probe against {@code root} (a fake /sys tree in tests), the given library directories and loader. */
    static Availability probe(final Path root, final List<Path> libraryDirs, final Loader loader) {
        final List<Port> ports = ports(root);
        final List<String> allDevices = devices(root);
        final Path lib = findLibrary(libraryDirs);
        if (lib == null) {
            return new Availability(false, LIBRARY_FILE + " (DiSNI's native library) not found on java.library.path or "
                + "LD_LIBRARY_PATH (" + join(libraryDirs) + "): build it from DiSNI's source, see docs/rdma.md",
                allDevices, ports, null, libraryDirs);
        }
        if (allDevices.isEmpty()) {
            return new Availability(false, "no RDMA device (" + root.resolve("sys/class/infiniband") + " is empty or missing)",
                allDevices, ports, lib, libraryDirs);
        }
        if (ports.stream().noneMatch(Port::active)) {
            final String states = ports.isEmpty() ? "device " + String.join(", ", allDevices) + " reports no ports"
                : String.join(", ", ports.stream().map(p -> "device " + p.device() + " port " + p.port() + " is " + p.state()).toList());
            return new Availability(false, states + " (no ACTIVE port: check the link and 'ibv_devinfo')", allDevices, ports, lib,
                libraryDirs);
        }
        final String failure = loader.load(lib);
        if (failure != null) {
            return new Availability(false, failure, allDevices, ports, lib, libraryDirs);
        }
        final Port active = ports.stream().filter(Port::active).findFirst().orElseThrow();
        return new Availability(true, "libdisni at " + lib + ", " + active, allDevices, ports, lib, libraryDirs);
    }

    /** Directories {@link System#loadLibrary} searches (java.library.path), then LD_LIBRARY_PATH's, without duplicates. */
    static List<Path> librarySearchPath() {
        final Set<Path> dirs = new LinkedHashSet<>();
        for (final String s : new String[] {System.getProperty("java.library.path", ""), System.getenv("LD_LIBRARY_PATH")}) {
            if (s == null) {
                continue;
            }
            for (final String d : s.split(":")) {
                if (!d.isBlank()) {
                    dirs.add(Path.of(d));
                }
            }
        }
        return List.copyOf(dirs);
    }

    /** The first {@code libdisni.so} in {@code dirs}, or null. */
    static Path findLibrary(final List<Path> dirs) {
        for (final Path d : dirs) {
            final Path f = d.resolve(LIBRARY_FILE);
            if (Files.isRegularFile(f)) {
                return f;
            }
        }
        return null;
    }

    /** Device names under {@code root}/sys/class/infiniband, sorted; empty if the directory is missing. */
    static List<String> devices(final Path root) {
        final Path dir = root.resolve("sys/class/infiniband");
        final List<String> names = new ArrayList<>();
        if (!Files.isDirectory(dir)) {
            return names;
        }
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir)) {
            for (final Path d : ds) {
                names.add(d.getFileName().toString());
            }
        } catch (final IOException e) {
            return names;
        }
        names.sort(null);
        return names;
    }

    /** Every port of every device, from {@code ports/N/state} ("4: ACTIVE"), sorted by device and port. */
    static List<Port> ports(final Path root) {
        final List<Port> ports = new ArrayList<>();
        for (final String device : devices(root)) {
            final Path dir = root.resolve("sys/class/infiniband").resolve(device).resolve("ports");
            if (!Files.isDirectory(dir)) {
                continue;
            }
            try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir)) {
                for (final Path p : ds) {
                    final int number;
                    try {
                        number = Integer.parseInt(p.getFileName().toString());
                    } catch (final NumberFormatException e) {
                        continue;
                    }
                    ports.add(new Port(device, number, state(p.resolve("state"))));
                }
            } catch (final IOException e) {
                // an unreadable device counts as one without ports
            }
        }
        ports.sort((a, b) -> a.device().equals(b.device()) ? Integer.compare(a.port(), b.port()) : a.device().compareTo(b.device()));
        return ports;
    }

    /** "4: ACTIVE" becomes ACTIVE; an unreadable file UNKNOWN. */
    static String state(final Path file) {
        try {
            final String s = Files.readString(file).trim();
            final int colon = s.indexOf(':');
            final String name = (colon >= 0 ? s.substring(colon + 1) : s).trim();
            return name.isEmpty() ? "UNKNOWN" : name;
        } catch (final IOException e) {
            return "UNKNOWN";
        }
    }

    private static String join(final List<Path> dirs) {
        return dirs.isEmpty() ? "nothing set" : String.join(":", dirs.stream().map(Path::toString).toList());
    }

    /** The real load: only reached when libdisni.so exists and a port is ACTIVE. Never throws. */
    private static String loadForReal(final Path library) {
        try {
            System.loadLibrary("disni"); // what DiSNI's NativeDispatcher does; found above, so this should succeed
        } catch (final UnsatisfiedLinkError | SecurityException e) {
            return "found " + library + " but it does not load: " + e.getMessage()
                + " (if it is only on LD_LIBRARY_PATH, java.library.path was set without it)";
        }
        try {
            return DisniCheck.openEventChannel();
        } catch (final LinkageError | RuntimeException e) {
            return "libdisni at " + library + " loaded but DiSNI failed: " + e + " (is it built from DiSNI 2.1's source?)";
        }
    }
}
