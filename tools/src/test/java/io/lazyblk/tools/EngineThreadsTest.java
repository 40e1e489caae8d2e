package io.lazyblk.tools;

import io.lazyblk.pagemap.Await;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The threads an engine costs, by name, as an operator counts them ({@code ls /proc/PID/task/*}{@code /comm}): hosts run
 * one engine per VM and many per host, so a local engine must not start what it does not use (no fill agent, no source
 * transports), and closing it must end what it started.
 */
class EngineThreadsTest {
    @TempDir
    Path dir;

    private static Set<Thread> live() {
        return Thread.getAllStackTraces().keySet();
    }

    @Test
    void localEngineStartsOnlyItsControlAndStatusThreadsAndCloseEndsThem() throws Exception {
        final Path image = TestImage.create(dir.resolve("disk.img"), 1 << 20, 1);
        final Set<Thread> before = live();
        final List<Thread> started;
        try (Engine engine = Engine.start(Engine.Options.file(dir.resolve("vhost.sock"), image))) {
            started = live().stream().filter(t -> !before.contains(t)).toList();
            assertEquals(Set.of("vhost-user-control", "status"), started.stream().map(Thread::getName).collect(Collectors.toSet()),
                "a local engine with no front end connected runs its vhost-user control thread and its status server, nothing else");
            assertEquals(2, started.size(), "one thread each");
        }
        for (final Thread t : started) {
            Await.until(t.getName() + " ended after close()", FrontEnds.DEADLINE, () -> !t.isAlive());
        }
    }

    /** The names of a process's threads as the kernel shows them (15 characters at most). */
    private static List<String> threadNames(final long pid) throws IOException {
        try (var tasks = Files.list(Path.of("/proc", Long.toString(pid), "task"))) {
            return tasks.map(t -> {
                try {
                    return Files.readString(t.resolve("comm")).strip();
                } catch (final IOException e) {
                    return null; // the thread ended meanwhile
                }
            }).filter(java.util.Objects::nonNull).toList();
        }
    }

    @Test
    void serveAnswersStatusOnItsMainThreadWithNoStatusThreadOfItsOwn() throws Exception {
        final Path image = TestImage.create(dir.resolve("disk.img"), 1 << 20, 1);
        final Path sock = dir.resolve("vhost.sock");
        try (LazyblkProcess serve = LazyblkProcess.start("serve", dir, "serve", "--socket", sock.toString(), "--local", image.toString())) {
            serve.awaitLine("serving", LazyblkProcess.START_TIMEOUT);
            final Map<String, String> status = StatusCommand.read(StatusServer.controlSocket(sock));
            assertEquals("disk-only", status.get("mode"), "status answered: " + status);
            assertEquals("ok", status.get("storage"), "status answered: " + status);
            final List<String> names = threadNames(serve.pid());
            assertTrue(names.contains("vhost-user-cont"), "the control thread runs: " + names);
            assertFalse(names.contains("status"), "status is answered by serve's main thread, which only waited before: " + names);
        }
    }
}
