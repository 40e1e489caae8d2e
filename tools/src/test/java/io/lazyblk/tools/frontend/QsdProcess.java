package io.lazyblk.tools.frontend;

import java.io.IOException;
import java.nio.file.FileSystems;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardWatchEventKinds;
import java.nio.file.WatchKey;
import java.nio.file.WatchService;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The reference back end, {@code qemu-storage-daemon}, exporting one block node as vhost-user-blk on a UNIX socket.
 * Readiness is its pid file: QSD writes it after creating exports and before accepting connections (a documented
 * ordering), so once the pid file exists the socket is listening. Waits use inotify with a deadline, never sleeps.
 */
final class QsdProcess implements AutoCloseable {
    static final String BINARY = "qemu-storage-daemon";
    private static final Duration START_TIMEOUT = Duration.ofSeconds(20);

    private final Process process;
    private final Path socket;
    private final Path log;

    private QsdProcess(final Process process, final Path socket, final Path log) {
        this.process = process;
        this.socket = socket;
        this.log = log;
    }

    static boolean installed() {
        for (final String dir : System.getenv().getOrDefault("PATH", "/usr/bin:/bin").split(":")) {
            if (!dir.isEmpty() && Files.isExecutable(Path.of(dir, BINARY))) {
                return true;
            }
        }
        return false;
    }

    /** Exports raw file {@code image} with {@code queues} queues; discards punch holes (discard=unmap). */
    static QsdProcess file(final Path dir, final Path image, final int queues) throws IOException {
        return start(dir, "driver=file,node-name=f0,filename=" + image + ",discard=unmap", queues);
    }

    /** Exports a null-co node of {@code bytes} (reads return zeros without touching memory, writes vanish). */
    static QsdProcess nullDevice(final Path dir, final long bytes, final int queues) throws IOException {
        return start(dir, "driver=null-co,node-name=f0,size=" + bytes, queues);
    }

    static QsdProcess start(final Path dir, final String blockdev, final int queues) throws IOException {
        final Path socket = dir.resolve("qsd.sock");
        final Path pidFile = dir.resolve("qsd.pid");
        final Path log = dir.resolve("qsd.log");
        Files.deleteIfExists(pidFile);
        final List<String> cmd = new ArrayList<>(List.of(BINARY,
            "--blockdev", blockdev,
            "--export", "type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path=" + socket
                + ",writable=on,num-queues=" + queues,
            "--pidfile", pidFile.toString()));
        try (WatchService watch = FileSystems.getDefault().newWatchService()) {
            dir.register(watch, StandardWatchEventKinds.ENTRY_CREATE, StandardWatchEventKinds.ENTRY_MODIFY);
            final Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
            final QsdProcess qsd = new QsdProcess(p, socket, log);
            try {
                qsd.awaitReady(watch, pidFile);
                return qsd;
            } catch (final IOException | RuntimeException e) {
                qsd.close();
                throw e;
            }
        }
    }

    private void awaitReady(final WatchService watch, final Path pidFile) throws IOException {
        final long deadline = System.nanoTime() + START_TIMEOUT.toNanos();
        while (!(Files.exists(pidFile) && Files.exists(socket))) {
            if (!process.isAlive()) {
                throw new IOException(BINARY + " exited with " + process.exitValue() + " before it was ready: " + logText());
            }
            final long left = deadline - System.nanoTime();
            if (left <= 0) {
                throw new IOException(BINARY + " not ready after " + START_TIMEOUT.toSeconds() + " s: " + logText());
            }
            try {
                // Also wake every 100 ms to notice the process dying (an exit is no file event).
                final WatchKey key = watch.poll(Math.min(left, 100_000_000L), TimeUnit.NANOSECONDS);
                if (key != null) {
                    key.pollEvents();
                    key.reset();
                }
            } catch (final InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted waiting for " + BINARY, e);
            }
        }
    }

    Path socket() {
        return socket;
    }

    boolean isAlive() {
        return process.isAlive();
    }

    String logText() {
        try {
            return Files.exists(log) ? Files.readString(log).strip() : "(no log)";
        } catch (final IOException e) {
            return "(log unreadable: " + e.getMessage() + ")";
        }
    }

    /** SIGTERM, then SIGKILL if it has not exited within 5 s. */
    @Override
    public void close() {
        process.destroy();
        try {
            if (!process.waitFor(5, TimeUnit.SECONDS)) {
                process.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
            }
        } catch (final InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
        }
    }
}
