package io.lazyblk.tools;

import io.lazyblk.pagemap.Await;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.List;
import java.util.Set;
import java.util.stream.Collectors;

import static org.junit.jupiter.api.Assertions.assertEquals;

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
}
