package io.lazyblk.pull.tcp;

import com.code_intelligence.jazzer.api.BugDetectors;
import com.code_intelligence.jazzer.junit.FuzzTest;
import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageGeometry;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.provider.ProviderProtocol;
import io.lazyblk.sys.fuzz.FuzzBytes;
import io.lazyblk.sys.fuzz.LiveThreads;
import io.lazyblk.sys.fuzz.OpenFds;
import io.lazyblk.sys.fuzz.RecordingLogs;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicIntegerArray;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The TCP transport's reading of a hostile provider's responses (TcpTransportAgent): a real TcpPageSource against a
 * provider played here on loopback, which greets it properly and then answers its requests as the input says.
 *
 * <p>Input: up to 8 fetches (first page, page count, priority), whether the provider closes after its answers, then
 * response instructions (a correct response to the k-th request received, a read error, a response with a wrong id,
 * a wrong length, a raw status, or raw bytes). Properties: every accepted fetch completes exactly once; one completes OK
 * only if a response with its id, status OK and its exact length was sent, and then holds exactly the bytes sent;
 * a fetch outside the image never completes OK; no internal error is logged; once the source is closed its thread and socket are
 * gone.
 */
class TcpClientFuzzTest {
    private static final int PAGE = 4096;
    private static final byte[] CONTENT = new byte[5 * PAGE - 1024];
    private static final Manifest MANIFEST;
    private static final TcpPageSource.Options OPTIONS = new TcpPageSource.Options(16, 16, 1 << 20, Duration.ofSeconds(5),
        Duration.ofSeconds(30), Duration.ofSeconds(30)); // no reconnect within an input
    private static final long WAIT_MILLIS = 5_000;
    private static final int MAX_RAW_LENGTH = 3 * PAGE;

    static {
        try {
            BugDetectors.allowNetworkConnections(); // loopback to the provider played here
        } catch (final IllegalStateException noAgent) {
            // replaying without Jazzer's agent: no detector to tell
        }
        for (int i = 0; i < CONTENT.length; i++) {
            CONTENT[i] = (byte) (i * 31 + 7);
        }
        MANIFEST = Manifest.of(CONTENT, PAGE);
    }

    /** Whether one session ran already: the JDK opens a socket of its own on its first connection and keeps it. */
    private static boolean warm;

    @FuzzTest
    void providerBytes(final byte[] input) throws Exception {
        RecordingLogs.requireActive();
        if (!warm) {
            session(new FuzzBytes(new byte[0]));
            warm = true;
        }
        RecordingLogs.drainErrors();
        final Map<Integer, String> fdsBefore = OpenFds.snapshot(null);
        final Set<Long> threadsBefore = LiveThreads.ids();
        session(new FuzzBytes(input));
        final List<String> errors = RecordingLogs.drainErrors();
        assertTrue(errors.isEmpty(), "the transport logged an internal error:\n" + String.join("\n", errors));
        final Map<Integer, String> leaked = OpenFds.added(fdsBefore, OpenFds.snapshot(null));
        assertTrue(leaked.isEmpty(), "fds left open after close: " + leaked);
        assertEquals(List.of(), LiveThreads.addedAfter(threadsBefore, 5_000), "threads left after close");
    }

    private static void session(final FuzzBytes in) throws Exception {
        try (ServerSocketChannel server = ServerSocketChannel.open(); Arena arena = Arena.ofShared()) {
            server.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
            final TcpPageSource[] source = new TcpPageSource[1];
            final Exception[] failed = new Exception[1];
            final Thread connecting = Thread.ofPlatform().name("fuzz-tcp-connect").start(() -> {
                try {
                    source[0] = TcpPageSource.connect((InetSocketAddress) server.getLocalAddress(), "disk", "token", OPTIONS);
                } catch (final Exception e) {
                    failed[0] = e;
                }
            });
            try (SocketChannel provider = server.accept()) {
                provider.socket().setSoTimeout(200);
                greet(provider);
                connecting.join();
                if (failed[0] != null) {
                    throw failed[0];
                }
                run(in, provider, source[0], arena);
            } finally {
                connecting.join();
                if (source[0] != null) {
                    source[0].close();
                }
            }
        }
    }

    private static void run(final FuzzBytes in, final SocketChannel provider, final TcpPageSource source, final Arena arena)
        throws Exception {
        final PageGeometry g = MANIFEST.geometry();
        final int n = in.pick(9);
        final AtomicIntegerArray completions = new AtomicIntegerArray(n);
        final int[] status = new int[n];
        final MemorySegment[] dst = new MemorySegment[n];
        final int[] first = new int[n];
        final int[] count = new int[n];
        final boolean[] accepted = new boolean[n];
        final int[] priority = new int[n];
        final PageSource.Listener listener = (tag, f, c, st) -> {
            status[(int) tag] = st; // written before the count: the waiter reads the count first (volatile), then this
            completions.incrementAndGet((int) tag);
        };
        int valid = 0;
        for (int i = 0; i < n; i++) {
            first[i] = in.pick(g.pageCount() + 1); // the last one is past the end
            count[i] = 1 + in.pick(3);
            dst[i] = arena.allocate((long) count[i] * PAGE);
            priority[i] = in.pick(2);
            accepted[i] = source.fetch(first[i], count[i], dst[i], priority[i], i, listener);
            if (accepted[i] && first[i] + count[i] <= g.pageCount()) {
                valid++;
            }
        }
        final boolean closeAfter = in.bool();
        // The requests the source put on the wire, by arrival: id, first page, count.
        final List<long[]> requests = new ArrayList<>();
        final ByteBuffer req = ByteBuffer.allocate(ProviderProtocol.REQUEST_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        final var stream = provider.socket().getInputStream();
        while (requests.size() < valid) {
            final byte[] b = new byte[ProviderProtocol.REQUEST_BYTES];
            try {
                new java.io.DataInputStream(stream).readFully(b);
            } catch (final SocketTimeoutException e) {
                break; // fewer requests than valid fetches: the window holds some back, or a fetch failed early
            }
            req.clear().put(b).flip();
            final int word = req.getInt(12);
            final int flags = word & ~ProviderProtocol.REQUEST_COUNT_MASK;
            final long rFirst = Integer.toUnsignedLong(req.getInt(8));
            final int rCount = word & ProviderProtocol.REQUEST_COUNT_MASK;
            // The demand flag says exactly the fetch's priority: some accepted fetch of this range has it.
            assertTrue(flags == 0 || flags == ProviderProtocol.FLAG_DEMAND, "request flags 0x" + Integer.toHexString(flags));
            final int want = flags == ProviderProtocol.FLAG_DEMAND ? PageSource.DEMAND : PageSource.BACKGROUND;
            boolean matches = false;
            for (int i = 0; i < n; i++) {
                matches |= accepted[i] && first[i] == rFirst && count[i] == rCount && priority[i] == want;
            }
            assertTrue(matches, "a request for [" + rFirst + ", +" + rCount + ") flagged 0x" + Integer.toHexString(flags)
                + " matches no fetch of that priority");
            requests.add(new long[] {req.getLong(0), rFirst, rCount});
        }
        // id -> the bytes of a well-formed OK response sent for it (the only way a fetch may complete OK)
        final Map<Long, byte[]> sentOk = new HashMap<>();
        boolean open = true;
        while (open && in.more()) {
            final ByteBuffer out;
            final int kind = in.pick(6);
            final long[] r = requests.isEmpty() ? null : requests.get(in.pick(requests.size()));
            if (kind == 5 || r == null) {
                out = ByteBuffer.wrap(in.bytes(in.u8()));
            } else {
                final long id = kind == 2 ? in.u64() : r[0];
                final int bytes = ProviderProtocol.rangeBytes(g, (int) r[1], (int) r[2]);
                final int st = switch (kind) {
                    case 1 -> ProviderProtocol.RESPONSE_READ_ERROR;
                    case 4 -> in.u32();
                    default -> ProviderProtocol.RESPONSE_OK;
                };
                final int length = switch (kind) {
                    case 0 -> bytes;
                    case 1 -> 0;
                    default -> in.u16() % (MAX_RAW_LENGTH + 1);
                };
                final byte[] data = kind == 0 ? Arrays.copyOfRange(CONTENT, (int) g.pageStart((int) r[1]), (int) g.pageStart((int) r[1]) + bytes)
                    : pattern(length, in.u8());
                out = ByteBuffer.allocate(ProviderProtocol.RESPONSE_HEADER_BYTES + data.length).order(ByteOrder.LITTLE_ENDIAN)
                    .putLong(id).putInt(st).putInt(length).put(data).flip();
                if (st == ProviderProtocol.RESPONSE_OK && length == bytes && !sentOk.containsKey(id)) {
                    sentOk.put(id, data);
                }
            }
            try {
                while (out.hasRemaining()) {
                    provider.write(out);
                }
            } catch (final IOException e) {
                open = false; // the client dropped the connection (a protocol error): as it should
            }
        }
        if (closeAfter) {
            provider.shutdownOutput(); // the provider goes away: whatever is in flight becomes UNAVAILABLE
            awaitAll(completions, accepted);
        }
        source.close(); // completes every fetch still in flight before it returns
        final Map<Long, long[]> byId = new HashMap<>();
        requests.forEach(r -> byId.put(r[0], r));
        for (int i = 0; i < n; i++) {
            if (!accepted[i]) {
                continue;
            }
            assertEquals(1, completions.get(i), "fetch " + i + " completed " + completions.get(i) + " times");
            final int st = status[i];
            assertTrue(st == PageSource.OK || st == PageSource.UNAVAILABLE || st == PageSource.FAILED, "status " + st);
            if (first[i] + count[i] > g.pageCount()) {
                // FAILED once the transport takes it; UNAVAILABLE if the link dropped first (FetchScheduler.submit says
                // FAILED: reported, not this target's to decide). Never OK.
                assertTrue(st != PageSource.OK, "a fetch past the end of the image completed OK");
            }
            if (st == PageSource.OK) {
                final int fi = first[i];
                final int ci = count[i];
                final long[] r = requests.stream().filter(x -> x[1] == fi && x[2] == ci && sentOk.containsKey(x[0]))
                    .findFirst().orElse(null);
                if (r == null) {
                    fail("fetch " + i + " of pages [" + first[i] + ", " + (first[i] + count[i]) + ") completed OK, but no well-formed "
                        + "OK response was sent for it");
                }
                final byte[] got = dst[i].asSlice(0, sentOk.get(r[0]).length).toArray(JAVA_BYTE);
                assertArrayEquals(sentOk.get(r[0]), got, "fetch " + i + " holds other bytes than its response carried");
            }
        }
    }

    private static void awaitAll(final AtomicIntegerArray completions, final boolean[] accepted) throws InterruptedException {
        final long deadline = System.nanoTime() + WAIT_MILLIS * 1_000_000;
        for (int i = 0; i < accepted.length; i++) {
            while (accepted[i] && completions.get(i) == 0) {
                if (System.nanoTime() > deadline) {
                    fail("fetch " + i + " did not complete within " + WAIT_MILLIS + " ms of the provider closing");
                }
                Thread.sleep(1); // the transport thread fails the fetches on end of stream: a deadline bounds this wait
            }
        }
    }

    /** Reads the client's hello (fixed part, name, token) and answers OK with the manifest. */
    private static void greet(final SocketChannel provider) throws IOException {
        final var in = new java.io.DataInputStream(provider.socket().getInputStream());
        final byte[] fixed = new byte[ProviderProtocol.HELLO_FIXED_BYTES];
        in.readFully(fixed);
        final int nameLength = Short.toUnsignedInt(ByteBuffer.wrap(fixed).order(ByteOrder.LITTLE_ENDIAN).getShort(ProviderProtocol.HELLO_NAME_LENGTH_OFFSET));
        in.readFully(new byte[nameLength]);
        final byte[] tl = new byte[2];
        in.readFully(tl);
        in.readFully(new byte[Short.toUnsignedInt(ByteBuffer.wrap(tl).order(ByteOrder.LITTLE_ENDIAN).getShort(0))]);
        final ByteBuffer answer = ProviderProtocol.encodeAnswer(ProviderProtocol.HelloStatus.OK, "serving 'disk'", MANIFEST);
        while (answer.hasRemaining()) {
            provider.write(answer);
        }
    }

    private static byte[] pattern(final int length, final int seed) {
        final byte[] b = new byte[length];
        for (int i = 0; i < length; i++) {
            b[i] = (byte) (seed + i);
        }
        return b;
    }

    /** Writes the seed corpus into directory {@code args[0]} (tools/fuzz tcp-client --write-seeds). */
    public static void main(final String[] args) throws IOException {
        final Path dir = Path.of(args[0]);
        Files.createDirectories(dir);
        // Three fetches (pages 0, 1..2, 4), answered correctly, out of order; then the provider closes.
        Files.write(dir.resolve("correct-answers"), new FuzzBytes.Writer().u8(3)
            .u8(0).u8(0).u8(0).u8(1).u8(1).u8(1).u8(4).u8(0).u8(0).u8(1)
            .u8(0).u8(1).u8(0).u8(0).u8(0).u8(2).toByteArray());
        // A read error for one, a wrong length for the other (a protocol error: the client drops the connection).
        Files.write(dir.resolve("read-error-then-wrong-length"), new FuzzBytes.Writer().u8(2)
            .u8(0).u8(0).u8(0).u8(2).u8(0).u8(1).u8(0)
            .u8(1).u8(0).u8(3).u8(1).u16(100).u8(9).toByteArray());
        // A response for an id nobody asked for; the provider stays (close() fails the rest).
        Files.write(dir.resolve("unknown-id"), new FuzzBytes.Writer().u8(1).u8(3).u8(0).u8(1).u8(0)
            .u8(2).u8(0).u64(0x7777).u16(0).u8(0).toByteArray());
        // A fetch past the end of the image, and raw bytes that cut a header in half; then the provider closes.
        Files.write(dir.resolve("past-end-and-half-header"), new FuzzBytes.Writer().u8(2).u8(5).u8(0).u8(0).u8(0).u8(0).u8(0).u8(1)
            .u8(5).u8(0).u8(7).bytes(new byte[] {1, 0, 0, 0, 0, 0, 0}).toByteArray());
    }
}
