package io.lazyblk.tools;

import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.Callable;

/** {@code lazyblk status}: what a running engine is doing, for a person or (with {@code --format kv}) a script. */
@Command(name = "status", mixinStandardHelpOptions = true,
    description = {"Show a running engine's mode, fill progress, bytes fetched, fill rate and ETA.",
        "Reads the control socket SOCK.ctl that 'serve --socket SOCK' creates beside SOCK."})
public final class StatusCommand implements Callable<Integer> {
    enum Format { human, kv, json }

    @Option(names = "--socket", required = true, description = "the engine's vhost-user socket (as given to serve)")
    Path socket;

    @Option(names = "--watch", arity = "0..1", fallbackValue = "1s", converter = DurationConverter.class, paramLabel = "INTERVAL",
        description = "print the status again every INTERVAL (default 1s) until interrupted or the engine goes away")
    java.time.Duration watch;

    @Option(names = "--format", defaultValue = "human", description = {"human, json (one object per status, numbers as"
        + " numbers) or kv (key=value lines: mode=lazy|disk-only|standby|handed-over,"
        + " migration=exporting|switched-over|complete|closed (a migrate-export runs), migration_name, migration_listen, migration_final_pages,"
        + " storage=ok|failed, storage_error=WHY, pages_local=N, pages_total=N, page_size, bytes_on_demand, bytes_background,"
        + " pages_zero (pages of zeros: never fetched), profile_pages (the learned boot set, fetched ahead of the guest),"
        + " profile_ahead_bytes (profile pages here before the guest first read them) = profile_used_bytes (read by the guest"
        + " since) + profile_wasted_bytes (not read so far), fill_rate_bytes_per_s, fill_mode=idle|active|backoff|done,"
        + " fill_window (background runs in flight allowed), fill_backoffs, fill_backoff_ms, fill_active_ms, background_runs,"
        + " guest_requests, demand_fetches, source.N, page_cache_bytes,"
        + " memory_budget_bytes, eta_seconds)"})
    Format format;

    @Override
    public Integer call() {
        final Path ctl = StatusServer.controlSocket(socket);
        boolean first = true;
        while (true) {
            final Map<String, String> m;
            try {
                m = read(ctl);
            } catch (final IOException e) {
                System.err.println("lazyblk status: " + (first ? "cannot reach" : "lost") + " the engine at " + ctl + " ("
                    + e.getMessage() + "); is 'lazyblk serve --socket " + socket + "' running?");
                return 1;
            }
            switch (format) {
                case kv -> System.out.print(StatusServer.render(m) + (watch != null ? "\n" : ""));
                case json -> System.out.println(json(m));
                default -> System.out.println(StatusServer.human(m));
            }
            System.out.flush();
            if (watch == null) {
                return 0;
            }
            first = false;
            try {
                Thread.sleep(watch.toMillis());
            } catch (final InterruptedException e) {
                return 0;
            }
        }
    }

    /** One JSON object: keys as given, values that are whole or decimal numbers as numbers, the rest as strings. */
    static String json(final Map<String, String> m) {
        final StringBuilder b = new StringBuilder("{");
        for (final Map.Entry<String, String> e : m.entrySet()) {
            if (b.length() > 1) {
                b.append(',');
            }
            b.append(quote(e.getKey())).append(':');
            final String v = e.getValue();
            b.append(v.matches("-?(0|[1-9]\\d{0,17})(\\.\\d+)?") ? v : quote(v));
        }
        return b.append('}').toString();
    }

    private static String quote(final String s) {
        final StringBuilder b = new StringBuilder("\"");
        for (final char c : s.toCharArray()) {
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                default -> {
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        return b.append('"').toString();
    }

    static Map<String, String> read(final Path ctl) throws IOException {
        return request(ctl, "status", true);
    }

    /** Sends {@code request} on the engine's control socket and returns its key=value answer. */
    static Map<String, String> request(final Path ctl, final String request, final boolean status) throws IOException {
        try (SocketChannel c = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            c.connect(UnixDomainSocketAddress.of(ctl));
            c.write(ByteBuffer.wrap((request + "\n").getBytes(StandardCharsets.UTF_8))); // else the engine waits 200 ms for a request
            final ByteBuffer b = ByteBuffer.allocate(1 << 16);
            while (b.hasRemaining() && c.read(b) >= 0) {
                // read to end of stream (the engine closes after writing)
            }
            final Map<String, String> m = new LinkedHashMap<>();
            for (final String line : new String(b.array(), 0, b.position(), StandardCharsets.UTF_8).split("\n")) {
                final int eq = line.indexOf('=');
                if (eq > 0) {
                    m.put(line.substring(0, eq), line.substring(eq + 1));
                }
            }
            if (status && !m.containsKey("mode")) {
                throw new IOException("the control socket answered without a status");
            }
            return m;
        }
    }
}
