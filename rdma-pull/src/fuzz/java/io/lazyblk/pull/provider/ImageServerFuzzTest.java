package io.lazyblk.pull.provider;

import com.code_intelligence.jazzer.api.BugDetectors;
import com.code_intelligence.jazzer.junit.FuzzTest;
import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageGeometry;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.sys.LibC;
import io.lazyblk.sys.UnixSocket;
import io.lazyblk.sys.fuzz.FuzzBytes;
import io.lazyblk.sys.fuzz.LiveThreads;
import io.lazyblk.sys.fuzz.OpenFds;
import io.lazyblk.sys.fuzz.RecordingLogs;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.ConcurrentLinkedQueue;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The provider's server side on hostile client bytes: a real ImageServer on loopback TCP and on a UNIX socket,
 * parsing hellos (ProviderConnection), page requests and control requests.
 *
 * <p>Input: a mode byte (bit 0: the UNIX socket), a hello kind (raw bytes; a valid hello for the exported image; a
 * hello for a name from the input with a valid token for it; the exported image with token bytes from the input),
 * then the bytes sent after it. Properties: the server's whole output is what the protocol says for those bytes,
 * byte for byte (computed here from ProviderProtocol: the answer, each valid request answered once, in order, with
 * the image's bytes, RDMA offers answered "unavailable", the boot profile request answered with the profile earlier
 * inputs' demand requests taught the server, and the connection closed at the first violation; a reset
 * may cut it short, never change it); a UNIX client gets a read-only fd of the image; no internal error is logged,
 * no server thread dies, and the connection's thread and fds are gone once it ended. Slower than the parser
 * targets (one connection per input).
 */
class ImageServerFuzzTest {
    private static final byte[] SECRET = "image-server-fuzz-secret-0123456".getBytes(StandardCharsets.US_ASCII);
    private static final String NAME = "disk";
    private static final int PAGE = 4096;
    private static final ConcurrentLinkedQueue<String> UNCAUGHT = new ConcurrentLinkedQueue<>();
    private static final long SETTLE_MILLIS = 10_000;

    private static final Path DIR;
    private static final byte[] CONTENT;
    private static final Path IMAGE;
    private static final Manifest MANIFEST;
    private static final ImageServer SERVER;
    private static final Path SOCKET;

    static {
        try {
            try {
                BugDetectors.allowNetworkConnections(); // loopback to our own server: not a server-side request forgery
            } catch (final IllegalStateException noAgent) {
                // replaying without Jazzer's agent (the fuzz-corpus test run): no detector to tell
            }
            DIR = Files.createTempDirectory("lazyblk-fuzz-provider");
            CONTENT = new byte[5 * PAGE - 1024]; // a short last page
            new Random(11).nextBytes(CONTENT);
            IMAGE = DIR.resolve("disk.img");
            Files.write(IMAGE, CONTENT);
            MANIFEST = ManifestBuilder.build(IMAGE, PAGE, ManifestBuilder.Progress.NONE);
            SOCKET = DIR.resolve("provider.sock");
            SERVER = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), SOCKET,
                List.of(new ImageExport(NAME, IMAGE, MANIFEST)), SECRET, RdmaExporter.unavailable("no RDMA in the fuzz harness"));
            Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                SERVER.close();
                try {
                    Files.deleteIfExists(IMAGE);
                    Files.deleteIfExists(DIR);
                } catch (final IOException e) {
                    // a temp dir left behind
                }
            }));
            final Thread.UncaughtExceptionHandler previous = Thread.getDefaultUncaughtExceptionHandler();
            Thread.setDefaultUncaughtExceptionHandler((t, e) -> {
                UNCAUGHT.add(t.getName() + ": " + e);
                if (previous != null) {
                    previous.uncaughtException(t, e);
                }
            });
        } catch (final IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @FuzzTest
    void clientBytes(final byte[] input) throws Exception {
        RecordingLogs.requireActive();
        RecordingLogs.drainErrors();
        final FuzzBytes in = new FuzzBytes(input);
        final boolean unix = (in.u8() & 1) != 0;
        final int kind = in.pick(4);
        final String token = AccessToken.mint(SECRET, NAME, Instant.now().plus(Duration.ofHours(1)));
        final byte[] hello = switch (kind) {
            case 0 -> new byte[0];
            case 1 -> hello(NAME.getBytes(StandardCharsets.UTF_8), token.getBytes(StandardCharsets.US_ASCII));
            case 2 -> {
                final byte[] name = in.bytes(1 + in.u8());
                yield hello(name, AccessToken.mint(SECRET, new String(name, StandardCharsets.UTF_8), Instant.now().plusSeconds(3600))
                    .getBytes(StandardCharsets.US_ASCII));
            }
            default -> hello(NAME.getBytes(StandardCharsets.UTF_8), in.bytes(in.u16() % 600));
        };
        final byte[] sent = concat(hello, in.rest());
        final Map<Integer, String> fdsBefore = OpenFds.snapshot(DIR);
        final Set<Long> threadsBefore = LiveThreads.ids();
        // What OP_PROFILE answers during this connection: the boots earlier inputs merged (each at its connection's end,
        // before its thread ended, which settle() waited for); this connection's own boot is merged only when it ends.
        final int[] profile = SERVER.profileForTesting(NAME, false);
        final Received got = unix ? overUnix(sent) : overTcp(sent);
        try {
            expect(sent, got, unix, profile);
        } finally {
            settle(fdsBefore, threadsBefore);
        }
        final List<String> errors = RecordingLogs.drainErrors();
        assertTrue(errors.isEmpty(), "the server logged an internal error:\n" + String.join("\n", errors));
        assertTrue(UNCAUGHT.isEmpty(), "a thread died: " + UNCAUGHT);
    }

    /** What the client received: the bytes, whether the stream ended with a reset, and an fd if one came. */
    private record Received(byte[] bytes, boolean reset, int fd) {
    }

    private static Received overTcp(final byte[] sent) throws Exception {
        try (SocketChannel ch = SocketChannel.open(SERVER.address())) {
            ch.socket().setSoTimeout((int) SETTLE_MILLIS);
            final ByteArrayOutputStream out = new ByteArrayOutputStream();
            final boolean[] reset = {false};
            final InputStream is = ch.socket().getInputStream();
            // Read while sending: a client that sends without reading could block the server on its responses.
            final Thread reader = Thread.ofPlatform().name("fuzz-provider-reader").start(() -> {
                final byte[] b = new byte[64 << 10];
                try {
                    int n;
                    while ((n = is.read(b)) >= 0) {
                        out.write(b, 0, n);
                    }
                } catch (final SocketException e) {
                    reset[0] = true; // the server closed with our requests unread: TCP resets
                } catch (final IOException e) {
                    throw new UncheckedIOException(e);
                }
            });
            try {
                final ByteBuffer b = ByteBuffer.wrap(sent);
                while (b.hasRemaining()) {
                    ch.write(b);
                }
                ch.shutdownOutput();
            } catch (final IOException e) {
                reset[0] = true; // the server closed first
            }
            reader.join(SETTLE_MILLIS * 2);
            if (reader.isAlive()) {
                ch.close();
                reader.join();
                fail("the server neither answered nor closed within " + SETTLE_MILLIS * 2 + " ms");
            }
            return new Received(out.toByteArray(), reset[0], -1);
        }
    }

    private static Received overUnix(final byte[] sent) throws Exception {
        final UnixSocket s = UnixSocket.connect(SOCKET);
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment buf = a.allocate(Math.max(1, sent.length));
            MemorySegment.copy(sent, 0, buf, JAVA_BYTE, 0, sent.length);
            boolean reset = false;
            try {
                s.send(buf, sent.length, new int[0], 0);
            } catch (final IOException e) {
                reset = true;
            }
            s.shutdownOutput();
            final ByteArrayOutputStream out = new ByteArrayOutputStream();
            final MemorySegment r = a.allocate(64 << 10);
            final int[] fds = new int[UnixSocket.MAX_FDS];
            final int[] nfds = new int[1];
            int fd = -1;
            while (true) {
                final long n;
                try {
                    n = s.receive(r, r.byteSize(), fds, nfds);
                } catch (final IOException e) {
                    reset = true;
                    break;
                }
                for (int i = 0; i < nfds[0]; i++) {
                    if (fd < 0 && nfds[0] == 1) {
                        fd = fds[i];
                    } else {
                        LibC.close(fds[i]);
                        fail("the server passed " + nfds[0] + " fds in one message");
                    }
                }
                if (n == 0) {
                    break;
                }
                out.write(r.asSlice(0, n).toArray(JAVA_BYTE));
            }
            return new Received(out.toByteArray(), reset, fd);
        } finally {
            s.close();
        }
    }

    /** Checks the server's output against what the protocol prescribes for {@code sent}. */
    private static void expect(final byte[] sent, final Received got, final boolean unix, final int[] profile) {
        final Output o = new Output(got);
        try {
            final int helloLength = helloLength(sent);
            if (got.bytes.length == 0) {
                assertTrue(got.fd < 0, "an fd without an answer");
                return; // the hello never completed (end of stream or reset before the server answered)
            }
            final int status = o.u32();
            final int messageLength = o.u16();
            assertTrue(messageLength <= ProviderProtocol.MAX_MESSAGE_BYTES, "a message of " + messageLength + " bytes");
            o.skip(messageLength);
            final ProviderProtocol.HelloStatus st = ProviderProtocol.HelloStatus.ofCode(status);
            assertTrue(st != null, "unknown hello status " + status);
            final boolean valid = helloLength > 0 && validHello(sent);
            assertEquals(valid, st == ProviderProtocol.HelloStatus.OK, "hello status " + st + " for a hello that is "
                + (valid ? "" : "not ") + "valid");
            if (st != ProviderProtocol.HelloStatus.OK) {
                o.end();
                assertTrue(got.fd < 0, "an fd after a refusal");
                return;
            }
            final int manifestLength = o.u32();
            o.expect(bytes(MANIFEST.encode()), "the manifest", manifestLength);
            if (unix) {
                o.expect(new byte[] {ProviderProtocol.SHM_FD_MESSAGE}, "the fd message", 1);
                assertTrue(got.fd >= 0, "no fd with the fd message");
                assertTrue(LibC.describeFd(got.fd).endsWith(IMAGE.getFileName().toString()), "the fd is " + LibC.describeFd(got.fd));
                o.end();
                return;
            }
            requests(Arrays.copyOfRange(sent, helloLength, sent.length), o, profile);
        } catch (final Truncated t) {
            assertTrue(got.reset, "the output ended early without a reset: " + t.getMessage());
        } finally {
            if (got.fd >= 0) {
                LibC.close(got.fd);
            }
        }
    }

    /** The responses to the request bytes after the hello, then the end (a close at the first violation). */
    private static void requests(final byte[] req, final Output o, final int[] profile) {
        final ByteBuffer r = ByteBuffer.wrap(req).order(ByteOrder.LITTLE_ENDIAN);
        final PageGeometry g = MANIFEST.geometry();
        while (r.remaining() >= ProviderProtocol.REQUEST_BYTES) {
            final long id = r.getLong();
            final long first = Integer.toUnsignedLong(r.getInt());
            final int word = r.getInt();
            // A valid hello here is always of this version, which may set the known flags (demand) and nothing else.
            final long count = word & ProviderProtocol.REQUEST_COUNT_MASK;
            final int flags = word & ~ProviderProtocol.REQUEST_COUNT_MASK;
            if (first == Integer.toUnsignedLong(ProviderProtocol.CONTROL_MARKER) && word == 0) {
                if (r.remaining() < ProviderProtocol.CONTROL_TAIL_BYTES) {
                    break;
                }
                final int op = r.getInt();
                final long length = Integer.toUnsignedLong(r.getInt());
                if (op != ProviderProtocol.OP_RDMA_OFFER && op != ProviderProtocol.OP_RDMA_CLAIM && op != ProviderProtocol.OP_PROFILE
                    || length > ProviderProtocol.MAX_CONTROL_PAYLOAD || r.remaining() < length) {
                    break;
                }
                r.position(r.position() + (int) length);
                if (op == ProviderProtocol.OP_PROFILE) {
                    if (length != 0) {
                        break; // a profile request with a payload
                    }
                    final ByteBuffer want = ProviderProtocol.encodeProfileAnswer(id, profile);
                    o.expect(bytes(want), "the profile answer", want.remaining());
                    continue;
                }
                if (op == ProviderProtocol.OP_RDMA_CLAIM || length != 0) {
                    break; // a claim without an offer (none is ever made here), or an offer with a payload
                }
                assertEquals(id, o.u64(), "control answer id");
                assertEquals(ProviderProtocol.RESPONSE_RDMA_UNAVAILABLE, o.u32(), "control answer status");
                final int reason = o.u32();
                assertTrue(reason >= 0 && reason <= ProviderProtocol.MAX_MESSAGE_BYTES, "a reason of " + reason + " bytes");
                o.skip(reason);
                continue;
            }
            if ((flags & ~ProviderProtocol.KNOWN_FLAGS) != 0 || !ProviderProtocol.validRange(g, first, count)) {
                break;
            }
            final int length = ProviderProtocol.rangeBytes(g, (int) first, (int) count);
            assertEquals(id, o.u64(), "response id (answers in the order asked)");
            assertEquals(ProviderProtocol.RESPONSE_OK, o.u32(), "response status for pages [" + first + ", " + (first + count) + ")");
            assertEquals(length, o.u32(), "response length");
            final int start = (int) g.pageStart((int) first);
            o.expect(Arrays.copyOfRange(CONTENT, start, start + length), "the image's bytes", length);
        }
        o.end();
    }

    /** The server's bytes, read in order; running out of them throws {@link Truncated}. */
    private static final class Output {
        private final ByteBuffer b;

        Output(final Received r) {
            this.b = ByteBuffer.wrap(r.bytes).order(ByteOrder.LITTLE_ENDIAN);
        }

        private void need(final int n) {
            if (b.remaining() < n) {
                throw new Truncated("wanted " + n + " more bytes at " + b.position() + ", have " + b.remaining());
            }
        }

        int u16() {
            need(2);
            return Short.toUnsignedInt(b.getShort());
        }

        int u32() {
            need(4);
            return b.getInt();
        }

        long u64() {
            need(8);
            return b.getLong();
        }

        void skip(final int n) {
            need(n);
            b.position(b.position() + n);
        }

        void expect(final byte[] want, final String what, final int announced) {
            assertEquals(want.length, announced, what + ": announced length");
            final int n = Math.min(want.length, b.remaining());
            final byte[] have = new byte[n];
            b.get(have);
            assertTrue(Arrays.equals(have, Arrays.copyOf(want, n)), what + " differ");
            need(want.length - n);
        }

        void end() {
            assertEquals(0, b.remaining(), "the server sent " + b.remaining() + " bytes more than the protocol says");
        }
    }

    private static final class Truncated extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Truncated(final String message) {
            super(message, null, false, false);
        }
    }

    /** Length of the hello at the start of {@code sent} as the server delimits it, or -1 if it is not complete. */
    private static int helloLength(final byte[] sent) {
        final ByteBuffer b = ByteBuffer.wrap(sent).order(ByteOrder.LITTLE_ENDIAN);
        if (sent.length < ProviderProtocol.HELLO_FIXED_BYTES) {
            return -1;
        }
        final int nameLength = Short.toUnsignedInt(b.getShort(ProviderProtocol.HELLO_NAME_LENGTH_OFFSET));
        final int tokenAt = ProviderProtocol.HELLO_NAME_OFFSET + nameLength;
        if (sent.length < tokenAt + 2) {
            return -1;
        }
        final int tokenLength = Short.toUnsignedInt(b.getShort(tokenAt));
        return sent.length < tokenAt + 2 + tokenLength ? -1 : tokenAt + 2 + tokenLength;
    }

    /** Whether a complete hello names the exported image with a token that grants it now. */
    private static boolean validHello(final byte[] sent) {
        final ByteBuffer b = ByteBuffer.wrap(sent).order(ByteOrder.LITTLE_ENDIAN);
        final int nameLength = Short.toUnsignedInt(b.getShort(ProviderProtocol.HELLO_NAME_LENGTH_OFFSET));
        if (b.getInt(0) != ProviderProtocol.MAGIC || Short.toUnsignedInt(b.getShort(4)) != ProviderProtocol.VERSION
            || nameLength < 1 || nameLength > ProviderProtocol.MAX_NAME_BYTES) {
            return false;
        }
        final String name = new String(sent, ProviderProtocol.HELLO_NAME_OFFSET, nameLength, StandardCharsets.UTF_8);
        final int tokenLength = Short.toUnsignedInt(b.getShort(ProviderProtocol.HELLO_NAME_OFFSET + nameLength));
        if (!name.equals(NAME) || tokenLength > ProviderProtocol.MAX_TOKEN_BYTES) {
            return false;
        }
        final String token = new String(sent, ProviderProtocol.HELLO_NAME_OFFSET + nameLength + 2, tokenLength, StandardCharsets.ISO_8859_1);
        return AccessToken.verify(SECRET, NAME, token, Instant.now()) == AccessToken.Verdict.OK;
    }

    /** Waits until the connection's thread and fds are gone (it ends just after its last byte); fails if they stay. */
    private static void settle(final Map<Integer, String> fdsBefore, final Set<Long> threadsBefore) throws InterruptedException {
        final long deadline = System.nanoTime() + SETTLE_MILLIS * 1_000_000;
        Map<Integer, String> added;
        while (true) {
            added = OpenFds.added(fdsBefore, OpenFds.snapshot(DIR));
            final List<String> threads = LiveThreads.added(threadsBefore);
            if (added.isEmpty() && threads.isEmpty()) {
                return;
            }
            if (System.nanoTime() > deadline) {
                fail("the connection left " + added + " open and threads " + threads + " running " + SETTLE_MILLIS
                    + " ms after it ended");
            }
            Thread.sleep(1); // the server's connection thread is finishing its close: a deadline bounds this wait
        }
    }

    private static byte[] hello(final byte[] name, final byte[] token) {
        return ByteBuffer.allocate(ProviderProtocol.HELLO_FIXED_BYTES + name.length + 2 + token.length).order(ByteOrder.LITTLE_ENDIAN)
            .putInt(ProviderProtocol.MAGIC).putShort((short) ProviderProtocol.VERSION).putShort((short) name.length).put(name)
            .putShort((short) token.length).put(token).array();
    }

    private static byte[] concat(final byte[] a, final byte[] b) {
        final byte[] c = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, c, a.length, b.length);
        return c;
    }

    private static byte[] bytes(final ByteBuffer b) {
        return io.lazyblk.sys.fuzz.FuzzBytes.toArray(b);
    }

    /** Writes the seed corpus into directory {@code args[0]} (tools/fuzz image-server --write-seeds). */
    public static void main(final String[] args) throws IOException {
        final Path dir = Path.of(args[0]);
        Files.createDirectories(dir);
        final ByteBuffer reqs = ByteBuffer.allocate(16 * 5 + 8).order(ByteOrder.LITTLE_ENDIAN);
        reqs.putLong(1).putInt(0).putInt(1);          // page 0
        reqs.putLong(2).putInt(3).putInt(2);          // pages 3, 4 (short)
        reqs.putLong(3).putInt(-1).putInt(0).putInt(ProviderProtocol.OP_RDMA_OFFER).putInt(0); // an RDMA offer request
        reqs.putLong(4).putInt(1).putInt(3);          // pages 1..3
        reqs.putLong(5).putInt(4).putInt(2);          // past the end: the server closes
        Files.write(dir.resolve("tcp-requests"), new FuzzBytes.Writer().u8(0).u8(1).bytes(reqs.array()).toByteArray());
        Files.write(dir.resolve("unix-handover"), new FuzzBytes.Writer().u8(1).u8(1).toByteArray());
        Files.write(dir.resolve("unknown-image"), new FuzzBytes.Writer().u8(0).u8(2).u8(4).bytes("other".getBytes(StandardCharsets.UTF_8))
            .toByteArray());
        Files.write(dir.resolve("bad-token"), new FuzzBytes.Writer().u8(0).u8(3).u16(12).bytes("v1.12.AAAAAA".getBytes(StandardCharsets.US_ASCII))
            .toByteArray());
        Files.write(dir.resolve("raw-garbage"), new FuzzBytes.Writer().u8(0).u8(0).bytes("GET / HTTP/1.1\r\n\r\n".getBytes(StandardCharsets.US_ASCII))
            .toByteArray());
        final ByteBuffer profile = ByteBuffer.allocate(16 * 4 + 8).order(ByteOrder.LITTLE_ENDIAN);
        profile.putLong(1).putInt(2).putInt(ProviderProtocol.countWord(1, true));   // a demand fetch of page 2
        profile.putLong(2).putInt(0).putInt(ProviderProtocol.countWord(2, false));  // a background fetch of pages 0, 1
        profile.putLong(3).putInt(-1).putInt(0).putInt(ProviderProtocol.OP_PROFILE).putInt(0); // the boot profile
        profile.putLong(4).putInt(1).putInt(1 | 0x4000_0000);                       // an unknown flag: the server closes
        Files.write(dir.resolve("demand-profile-unknown-flag"), new FuzzBytes.Writer().u8(0).u8(1).bytes(profile.array()).toByteArray());
        final ByteBuffer claim = ByteBuffer.allocate(16 + 8 + 6).order(ByteOrder.LITTLE_ENDIAN);
        claim.putLong(9).putInt(-1).putInt(0).putInt(ProviderProtocol.OP_RDMA_CLAIM).putInt(6).put(new byte[] {127, 0, 0, 1, 1, 0});
        Files.write(dir.resolve("claim-without-offer"), new FuzzBytes.Writer().u8(0).u8(1).bytes(claim.array()).toByteArray());
    }
}
