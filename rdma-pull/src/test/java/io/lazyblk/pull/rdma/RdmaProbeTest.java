package io.lazyblk.pull.rdma;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** The probe's verdicts from fake /sys trees and library directories, and the real one on this host. */
class RdmaProbeTest {
    @TempDir
    Path dir;
    private final List<Path> loaded = new ArrayList<>();

    private RdmaProbe.Loader loader(final String result) {
        return lib -> {
            loaded.add(lib);
            return result;
        };
    }

    private Path fakeLibDir() throws IOException {
        final Path lib = Files.createDirectories(dir.resolve("lib"));
        Files.writeString(lib.resolve(RdmaProbe.LIBRARY_FILE), "not really a library");
        return lib;
    }

    private Path sysWith(final String... devicePortStates) throws IOException {
        final Path root = Files.createDirectories(dir.resolve("root"));
        Files.createDirectories(root.resolve("sys/class/infiniband"));
        for (final String d : devicePortStates) {
            final String[] f = d.split("/"); // device/port/state-file-content
            final Path port = Files.createDirectories(root.resolve("sys/class/infiniband").resolve(f[0]).resolve("ports").resolve(f[1]));
            Files.writeString(port.resolve("state"), f[2] + "\n");
        }
        return root;
    }

    @Test
    void shouldSayLibdisniIsMissingAndNotLoadAnythingWhenTheLibraryIsNowhere() throws IOException {
        final Path root = sysWith("mlx5_0/1/4: ACTIVE");
        final RdmaProbe.Availability a = RdmaProbe.probe(root, List.of(dir.resolve("empty1"), dir.resolve("empty2")), loader(null));
        assertFalse(a.usable());
        assertTrue(a.reason().contains("libdisni.so") && a.reason().contains(dir.resolve("empty1").toString())
            && a.reason().contains("docs/rdma.md"), a.reason());
        assertNull(a.libdisni());
        assertEquals(List.of("mlx5_0"), a.devices(), "devices are still reported");
        assertTrue(loaded.isEmpty(), "nothing may be loaded without the library");
    }

    @Test
    void shouldSayThereIsNoDeviceWhenTheLibraryIsThereButSysHasNone() throws IOException {
        final Path lib = fakeLibDir();
        final RdmaProbe.Availability a = RdmaProbe.probe(dir.resolve("no-such-root"), List.of(dir.resolve("x"), lib), loader(null));
        assertFalse(a.usable());
        assertTrue(a.reason().startsWith("no RDMA device"), a.reason());
        assertEquals(lib.resolve(RdmaProbe.LIBRARY_FILE), a.libdisni());
        assertTrue(loaded.isEmpty());
    }

    @Test
    void shouldReportEveryDevicePortAndStateAndRefuseWhenNoneIsActive() throws IOException {
        final Path root = sysWith("mlx5_1/1/1: DOWN", "mlx5_0/2/2: INIT", "mlx5_0/1/1: DOWN");
        final RdmaProbe.Availability a = RdmaProbe.probe(root, List.of(fakeLibDir()), loader(null));
        assertFalse(a.usable());
        assertEquals(List.of("mlx5_0", "mlx5_1"), a.devices());
        assertEquals(List.of(new RdmaProbe.Port("mlx5_0", 1, "DOWN"), new RdmaProbe.Port("mlx5_0", 2, "INIT"),
            new RdmaProbe.Port("mlx5_1", 1, "DOWN")), a.ports());
        assertTrue(a.reason().contains("device mlx5_0 port 1 is DOWN"), a.reason());
        assertTrue(loaded.isEmpty());
    }

    @Test
    void shouldLoadOnlyWithLibraryAndActivePortAndPassOnTheLoadersReason() throws IOException {
        final Path root = sysWith("rxe0/1/4: ACTIVE");
        final Path lib = fakeLibDir();
        final RdmaProbe.Availability failed = RdmaProbe.probe(root, List.of(lib), loader("rdma_create_event_channel failed: No such device"));
        assertFalse(failed.usable());
        assertEquals("rdma_create_event_channel failed: No such device", failed.reason());
        final RdmaProbe.Availability ok = RdmaProbe.probe(root, List.of(lib), loader(null));
        assertTrue(ok.usable(), ok.reason());
        assertTrue(ok.reason().contains("rxe0 port 1 ACTIVE"), ok.reason());
        assertEquals(List.of(lib.resolve(RdmaProbe.LIBRARY_FILE), lib.resolve(RdmaProbe.LIBRARY_FILE)), loaded);
    }

    @Test
    void shouldReadAStateFileWithoutItsNumericPrefix() throws IOException {
        final Path f = dir.resolve("state");
        Files.writeString(f, "4: ACTIVE\n");
        assertEquals("ACTIVE", RdmaProbe.state(f));
        assertEquals("UNKNOWN", RdmaProbe.state(dir.resolve("missing")));
    }

    @Test
    void shouldReportThisHostUnusableNamingLibdisniWhenItIsNotInstalled() {
        assumeTrue(RdmaProbe.findLibrary(RdmaProbe.librarySearchPath()) == null, "libdisni is installed on this host");
        final RdmaProbe.Availability a = RdmaProbe.probe();
        assertFalse(a.usable());
        assertTrue(a.reason().contains("libdisni"), a.reason());
        assertSame(a, RdmaProbe.probe(), "probed once");
    }
}
