package io.lazyblk.tools;

import io.lazyblk.blk.LazyStore;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The engine's control socket ({@code SOCK.ctl} beside the vhost-user socket): each connection gets the current
 * status as {@code key=value} lines and is closed. Also samples the fill every second to report a rate and an
 * ETA. On a daemon thread of its own, or on a caller's thread ({@link #serveUntil}); {@link #close()} stops it.
 */
final class StatusServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(StatusServer.class);
    private static final int RATE_WINDOW = 5;

    private final Engine engine;
    private final Path path;
    private final ServerSocketChannel channel;
    /** Its own thread, or null when a caller serves it ({@link #serveUntil}). */
    private final Thread thread;
    /**
     * The selector {@link #serveUntil} waits in, so {@link #close()} can wake it; null until then. Set by the serving
     * thread before it reads {@link #closed}; {@link #close()} writes {@code closed} before it reads this: both volatile,
     * so either the loop sees {@code closed} or close() sees the selector to wake (waking a closed one does nothing).
     */
    private volatile java.nio.channels.Selector selector;
    private final long[] sampleBytes = new long[RATE_WINDOW + 1];
    private final long[] sampleNanos = new long[RATE_WINDOW + 1];
    private int samples;
    private volatile boolean closed;

    /** @param ownThread serve on a daemon thread started here; else a caller serves it with {@link #serveUntil}. */
    StatusServer(final Engine engine, final Path vhostSocket, final boolean ownThread) throws IOException {
        this.engine = engine;
        this.path = controlSocket(vhostSocket);
        io.lazyblk.sys.UnixSocket.removeStale(path);
        this.channel = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        channel.bind(UnixDomainSocketAddress.of(path));
        channel.configureBlocking(false);
        if (ownThread) {
            this.thread = new Thread(() -> serveUntil(() -> false), "status");
            thread.setDaemon(true);
            thread.start();
        } else {
            this.thread = null;
        }
    }

    boolean ownThread() {
        return thread != null;
    }

    static Path controlSocket(final Path vhostSocket) {
        return vhostSocket.resolveSibling(vhostSocket.getFileName() + ".ctl");
    }

    /**
     * Answers status requests and samples the fill on the calling thread until {@link #close()} or until {@code done}
     * holds (checked at least once a second).
     */
    void serveUntil(final java.util.function.BooleanSupplier done) {
        try (java.nio.channels.Selector sel = java.nio.channels.Selector.open()) {
            selector = sel;
            channel.register(sel, java.nio.channels.SelectionKey.OP_ACCEPT);
            long nextSample = 0;
            while (!closed && !done.getAsBoolean()) {
                final long now = System.nanoTime();
                if (now >= nextSample) {
                    sample(now);
                    nextSample = now + 1_000_000_000L;
                }
                sel.select(Math.max(1, (nextSample - now) / 1_000_000));
                sel.selectedKeys().clear();
                SocketChannel c;
                while ((c = channel.accept()) != null) {
                    try (SocketChannel client = c) {
                        final String request = readRequest(client);
                        client.configureBlocking(true);
                        final ByteBuffer b = ByteBuffer.wrap(render(answer(request)).getBytes(StandardCharsets.UTF_8));
                        while (b.hasRemaining()) {
                            client.write(b);
                        }
                    } catch (final IOException e) {
                        LOG.debug("status client went away: {}", e.getMessage());
                    }
                }
            }
        } catch (final IOException | java.nio.channels.ClosedSelectorException e) {
            if (!closed) {
                LOG.warn("status socket {} stopped: {}", path, e.getMessage());
            }
        }
    }

    /** How long a client that sends nothing (a script of an earlier release, {@code socat}) is waited for: then status. */
    private static final long REQUEST_WAIT_MILLIS = 200;
    private static final int MAX_REQUEST_BYTES = 4096;

    /**
     * The client's request line ({@code status}, or {@code migrate-export listen=HOST:PORT name=NAME secret-file=FILE}),
     * or "" if it sent none within {@link #REQUEST_WAIT_MILLIS} (it gets the status). Hostile input: bounded in size and time.
     */
    private static String readRequest(final SocketChannel client) throws IOException {
        client.configureBlocking(false);
        final ByteBuffer b = ByteBuffer.allocate(MAX_REQUEST_BYTES);
        try (java.nio.channels.Selector sel = java.nio.channels.Selector.open()) {
            client.register(sel, java.nio.channels.SelectionKey.OP_READ);
            final long deadline = System.nanoTime() + REQUEST_WAIT_MILLIS * 1_000_000L;
            while (b.hasRemaining()) {
                final long left = (deadline - System.nanoTime()) / 1_000_000L;
                if (left <= 0 || sel.select(left) == 0) {
                    break;
                }
                sel.selectedKeys().clear();
                if (client.read(b) < 0 || containsNewline(b)) {
                    break;
                }
            }
            sel.selectedKeys().clear();
        }
        final String s = new String(b.array(), 0, b.position(), StandardCharsets.UTF_8);
        final int nl = s.indexOf('\n');
        return (nl >= 0 ? s.substring(0, nl) : s).strip();
    }

    private static boolean containsNewline(final ByteBuffer b) {
        for (int i = 0; i < b.position(); i++) {
            if (b.get(i) == '\n') {
                return true;
            }
        }
        return false;
    }

    /** What a request gets: the status, or a command's outcome ({@code ok=1} and what it did, or {@code error=WHY}). */
    private Map<String, String> answer(final String request) {
        if (request.isEmpty() || request.equals("status")) {
            return status();
        }
        final String[] words = request.split(" ");
        final Map<String, String> args = new LinkedHashMap<>();
        for (int i = 1; i < words.length; i++) {
            final int eq = words[i].indexOf('=');
            if (eq > 0) {
                args.put(words[i].substring(0, eq), words[i].substring(eq + 1));
            }
        }
        final Map<String, String> m = new LinkedHashMap<>();
        if (!words[0].equals("migrate-export")) {
            m.put("error", "unknown request '" + words[0] + "' (this engine knows status and migrate-export)");
            return m;
        }
        try {
            final String listen = args.get("listen");
            final String name = args.get("name");
            final String secretFile = args.get("secret-file");
            if (listen == null || name == null || secretFile == null) {
                throw new IllegalArgumentException("migrate-export needs listen=HOST:PORT name=NAME secret-file=FILE");
            }
            final MigrationExport e = engine.migrateExport(new ListenAddressConverter().convert(listen), name,
                io.lazyblk.pull.token.SecretFile.read(Path.of(secretFile)), Long.parseLong(args.getOrDefault("rate", "0")));
            m.put("ok", "1");
            m.put("listen", hostPort(e.address()));
            m.put("name", e.name());
        } catch (final IOException | RuntimeException e) {
            m.put("error", String.valueOf(e.getMessage()).replace('\n', ' '));
        }
        return m;
    }

    static String hostPort(final java.net.InetSocketAddress a) {
        final String h = a.getHostString();
        return (h.contains(":") ? "[" + h + "]" : h) + ":" + a.getPort();
    }

    private synchronized void sample(final long now) {
        final LazyStore s = engine.lazyStore();
        if (s == null) {
            return;
        }
        System.arraycopy(sampleBytes, 0, sampleBytes, 1, RATE_WINDOW);
        System.arraycopy(sampleNanos, 0, sampleNanos, 1, RATE_WINDOW);
        sampleBytes[0] = s.bytesFetchedOnDemand() + s.bytesFetchedInBackground();
        sampleNanos[0] = now;
        samples = Math.min(samples + 1, RATE_WINDOW + 1);
    }

    /** Bytes per second over the last few seconds, 0 before two samples. */
    synchronized long rate() {
        if (samples < 2) {
            return 0;
        }
        final int old = samples - 1;
        final long dt = sampleNanos[0] - sampleNanos[old];
        return dt <= 0 ? 0 : (sampleBytes[0] - sampleBytes[old]) * 1_000_000_000L / dt;
    }

    Map<String, String> status() {
        final Map<String, String> m = new LinkedHashMap<>();
        final LazyStore s = engine.lazyStore();
        final io.lazyblk.blk.Storage storage = engine.storage();
        // standby: another engine holds the image (a live migration's destination before its switchover); handed-over:
        // this engine let go of it at a switchover (the VM runs on the destination now).
        m.put("mode", storage.standingBy() ? "standby" : storage.handedOver() ? "handed-over"
            : s == null || s.diskOnly() ? "disk-only" : "lazy");
        final String failure = engine.storageFailure();
        m.put("storage", failure == null ? "ok" : "failed");
        if (failure != null) {
            m.put("storage_error", failure.replace('\n', ' '));
        }
        m.put("size_bytes", Long.toString(engine.sizeBytes()));
        final MigrationExport export = engine.migrationExport();
        if (export != null) {
            // exporting: the destination fills; switched-over: the VM stopped here, the destination serves it and fetches
            // what it lacks; complete: the destination has everything, this engine can stop.
            m.put("migration", export.state());
            m.put("migration_name", export.name());
            m.put("migration_listen", hostPort(export.address()));
            m.put("migration_final_pages", Long.toString(export.finalPages()));
        }
        if (s == null) {
            m.put("pages_local", "1");
            m.put("pages_total", "1");
            return m;
        }
        final int local = s.localPages();
        final int total = s.pageCount();
        final long rate = rate();
        m.put("pages_local", Integer.toString(local));
        m.put("pages_total", Integer.toString(total));
        m.put("page_size", Integer.toString(s.pageSize()));
        m.put("bytes_on_demand", Long.toString(s.bytesFetchedOnDemand()));
        m.put("bytes_background", Long.toString(s.bytesFetchedInBackground()));
        m.put("pages_zero", Integer.toString(s.fillStats().zeroPages()));
        // The learned boot set: fetched ahead (here before the guest first read it) = used (read since) + wasted (not yet).
        m.put("profile_pages", Integer.toString(s.fillStats().profilePages()));
        m.put("profile_ahead_bytes", Long.toString(s.fillStats().profileAheadBytes()));
        m.put("profile_used_bytes", Long.toString(s.fillStats().profileUsedBytes()));
        m.put("profile_wasted_bytes", Long.toString(s.fillStats().profileWastedBytes()));
        m.put("fill_rate_bytes_per_s", Long.toString(rate));
        // What the governor makes of the guest (idle: flat out; active: ramping under a CPU bound; backoff: misses).
        m.put("fill_mode", s.diskOnly() ? "done" : s.fillStats().fillMode());
        m.put("fill_window", Integer.toString(s.fillStats().fillWindow()));
        m.put("fill_backoffs", Long.toString(s.fillStats().fillBackoffs()));
        m.put("fill_backoff_ms", Long.toString(s.fillStats().fillBackedOffNanos() / 1_000_000));
        m.put("fill_active_ms", Long.toString(s.fillStats().fillActiveNanos() / 1_000_000));
        m.put("background_runs", Long.toString(s.fillStats().backgroundRuns()));
        m.put("guest_requests", Long.toString(s.fillStats().guestRequests()));
        m.put("demand_fetches", Long.toString(s.fillStats().demandFetches()));
        // Each source as the operator named it, nearest first, with its state: up, down (reconnecting), backing-off.
        final java.util.List<String> names = engine.sourceNames();
        if (!s.diskOnly() && s.source() instanceof io.lazyblk.pull.chain.SourceChain chain) { // one chain entry per --source
            for (int i = 0; i < chain.size(); i++) {
                m.put("source." + i, names.get(i) + " " + chain.state(i));
            }
        } else if (!s.diskOnly() && names.size() == 1) {
            m.put("source.0", names.get(0) + " " + (s.source().connected() ? "up" : "down"));
        }
        m.put("page_cache_bytes", Long.toString(s.cachedBytes()));
        m.put("memory_budget_bytes", Long.toString(s.memoryBudget()));
        final long left = (long) (total - local) * s.pageSize();
        m.put("eta_seconds", local == total ? "0" : rate > 0 ? Long.toString((left + rate - 1) / rate) : "unknown");
        return m;
    }

    static String render(final Map<String, String> m) {
        final StringBuilder sb = new StringBuilder();
        m.forEach((k, v) -> sb.append(k).append('=').append(v).append('\n'));
        return sb.toString();
    }

    /** One line for a person: mode, progress, rate and ETA. */
    static String human(final Map<String, String> m) {
        final String storage = m.containsKey("storage_error") ? "\nSTORAGE FAILED: " + m.get("storage_error") : "";
        return summary(m) + storage;
    }

    private static String summary(final Map<String, String> m) {
        if ("standby".equals(m.get("mode"))) {
            return "standby: another engine holds the image (a live migration's source); taken when this engine's VM starts";
        }
        if ("handed-over".equals(m.get("mode"))) {
            return "handed over: the image went to a live migration's destination engine; this engine serves it again only if its VM restarts here";
        }
        if (!"lazy".equals(m.get("mode"))) {
            return "disk-only: every page is local (" + mib(Long.parseLong(m.getOrDefault("size_bytes", "0"))) + ")";
        }
        final long local = Long.parseLong(m.get("pages_local"));
        final long total = Long.parseLong(m.get("pages_total"));
        final StringBuilder sources = new StringBuilder();
        for (int i = 0; m.containsKey("source." + i); i++) {
            sources.append(i == 0 ? "; sources: " : ", ").append(m.get("source." + i));
        }
        final String profile = Long.parseLong(m.getOrDefault("profile_pages", "0")) == 0 ? ""
            : String.format("; boot profile: %s pages, %s fetched ahead, %s of it read by the guest", m.get("profile_pages"),
                mib(Long.parseLong(m.get("profile_ahead_bytes"))), mib(Long.parseLong(m.get("profile_used_bytes"))));
        return String.format("lazy: %d/%d pages local (%.1f%%), fetched %s on demand and %s in the background, fill %s/s, ETA %s%s%s",
            local, total, 100.0 * local / Math.max(1, total), mib(Long.parseLong(m.get("bytes_on_demand"))),
            mib(Long.parseLong(m.get("bytes_background"))), mib(Long.parseLong(m.get("fill_rate_bytes_per_s"))),
            "unknown".equals(m.get("eta_seconds")) ? "unknown" : m.get("eta_seconds") + " s", profile, sources);
    }

    private static String mib(final long bytes) {
        return String.format("%.1f MiB", bytes / 1048576.0);
    }

    @Override
    public void close() {
        closed = true;
        try {
            channel.close();
        } catch (final IOException ignored) {
            // closing anyway
        }
        if (thread != null) {
            thread.interrupt();
        }
        final java.nio.channels.Selector sel = selector;
        if (sel != null) {
            sel.wakeup(); // a caller serving it: a thread interrupt would not reach the selector of a thread not ours
        }
        try {
            Files.deleteIfExists(path);
        } catch (final IOException ignored) {
            // best effort
        }
    }
}
