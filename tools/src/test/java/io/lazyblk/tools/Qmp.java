package io.lazyblk.tools;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.Writer;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A QEMU monitor (QMP) client over its UNIX socket, enough for migration tests: capabilities, a command, its
 * {@code return} as raw JSON text (events in between are skipped), and a field of it read by pattern. Not thread-safe.
 */
final class Qmp implements AutoCloseable {
    private final SocketChannel channel;
    private final BufferedReader in;
    private final Writer out;

    private Qmp(final SocketChannel channel) {
        this.channel = channel;
        this.in = new BufferedReader(new InputStreamReader(Channels.newInputStream(channel), StandardCharsets.UTF_8));
        this.out = Channels.newWriter(channel, StandardCharsets.UTF_8);
    }

    /** Connects to {@code socket} once QEMU has created it (within {@code timeout}) and enters command mode. */
    static Qmp connect(final Path socket, final Duration timeout) throws Exception {
        io.lazyblk.pagemap.Await.until("QEMU's monitor socket " + socket, timeout, () -> Files.exists(socket));
        final Qmp q = new Qmp(SocketChannel.open(UnixDomainSocketAddress.of(socket)));
        q.in.readLine(); // the greeting
        q.execute("qmp_capabilities", null);
        return q;
    }

    /** Runs {@code command} with {@code arguments} (a JSON object's text, or null); returns the "return" member's text. */
    String execute(final String command, final String arguments) throws IOException {
        out.write("{\"execute\":\"" + command + "\"" + (arguments == null ? "" : ",\"arguments\":" + arguments) + "}\n");
        out.flush();
        while (true) {
            final String line = in.readLine();
            if (line == null) {
                throw new IOException("QEMU closed its monitor during " + command);
            }
            if (line.contains("\"error\"")) {
                throw new IOException(command + " failed: " + line);
            }
            if (line.startsWith("{\"return\"")) {
                return line;
            }
        }
    }

    /** The value of {@code "key": value} in {@code json} (a string's contents or a number), or null. */
    static String field(final String json, final String key) {
        final Matcher m = Pattern.compile("\"" + Pattern.quote(key) + "\":\\s*(\"([^\"]*)\"|(-?[0-9]+))").matcher(json);
        return m.find() ? (m.group(2) != null ? m.group(2) : m.group(3)) : null;
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }
}
