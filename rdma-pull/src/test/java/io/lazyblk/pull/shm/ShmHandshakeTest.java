package io.lazyblk.pull.shm;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.onesided.OneSidedPageSource;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.provider.ProviderRefusedException;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.sys.UnixSocket;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The same-host handshake against a real image server on a real UNIX socket: tokens, hostile clients, a shrinking file. */
class ShmHandshakeTest {
    private static final byte[] SECRET = "handshake-secret-0123456789abcdef".getBytes();
    private static final int PAGE = 16 << 10;

    @TempDir
    Path dir;
    private Path image;
    private byte[] content;
    private Path sock;
    private ImageServer server;

    @BeforeEach
    void start() throws Exception {
        content = new byte[64 * PAGE];
        new Random(9).nextBytes(content);
        image = dir.resolve("img.raw");
        Files.write(image, content);
        sock = dir.resolve("cache.sock");
        server = ImageServer.start(null, sock, List.of(new ImageExport("img", image,
            ManifestBuilder.build(image, PAGE, ManifestBuilder.Progress.NONE))), SECRET);
    }

    @AfterEach
    void stop() {
        server.close();
    }

    private static String token(final String name, final Duration ttl) {
        return AccessToken.mint(SECRET, name, Instant.now().plus(ttl));
    }

    @Test
    void shouldRefuseWrongExpiredAndOtherImagesTokensAndHandNoFd() {
        final ProviderRefusedException wrong = assertThrows(ProviderRefusedException.class,
            () -> ShmPageSource.connect(sock, "img", AccessToken.mint("another-secret-0123456789abcdef0".getBytes(), "img",
                Instant.now().plusSeconds(60)), Duration.ofSeconds(5)));
        assertTrue(wrong.getMessage().contains("not valid for image 'img'"), wrong.getMessage());
        final ProviderRefusedException expired = assertThrows(ProviderRefusedException.class,
            () -> ShmPageSource.connect(sock, "img", token("img", Duration.ofSeconds(-5)), Duration.ofSeconds(5)));
        assertTrue(expired.getMessage().contains("expired"), expired.getMessage());
        assertThrows(ProviderRefusedException.class, () -> ShmPageSource.connect(sock, "img", token("other", Duration.ofHours(1)),
            Duration.ofSeconds(5)), "a token for another image");
        assertEquals(0, server.stats().handovers());
        assertEquals(3, server.stats().refused());
    }

    @Test
    void shouldCloseAMalformedOrSilentClientAndKeepServingOthers() throws Exception {
        try (UnixSocket bad = UnixSocket.connect(sock); Arena a = Arena.ofConfined()) {
            final MemorySegment junk = a.allocate(64).fill((byte) 0x41);
            bad.send(junk, 64, new int[0], 0);
            // The server answers MALFORMED and closes (a reset, as our junk is unread): the connection ends, with no fd.
            final int[] fds = new int[UnixSocket.MAX_FDS];
            final int[] n = new int[1];
            try {
                while (bad.receive(a.allocate(256), 256, fds, n) > 0) {
                    assertEquals(0, n[0], "no fd for a malformed hello");
                }
            } catch (final IOException reset) {
                assertTrue(reset.getMessage().contains("reset"), reset.getMessage());
            }
        }
        assertEquals(1, server.stats().refused(), "refused, with a log line");
        try (OneSidedPageSource s = ShmPageSource.connect(sock, "img", token("img", Duration.ofHours(1)), Duration.ofSeconds(5))) {
            assertEquals(64, s.manifest().pageCount());
        }
        assertEquals(1, server.stats().handovers());
    }

    @Test
    void shouldTimeOutOnAServerThatNeverAnswers() throws Exception {
        final Path silent = dir.resolve("silent.sock");
        try (UnixSocket listener = UnixSocket.listen(silent)) {
            final CompletableFuture<UnixSocket> accepted = CompletableFuture.supplyAsync(() -> {
                try {
                    return listener.accept();
                } catch (final IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            });
            final long t0 = System.nanoTime();
            assertThrows(IOException.class, () -> ShmPageSource.connect(silent, "img", token("img", Duration.ofHours(1)),
                Duration.ofMillis(300)));
            assertTrue(System.nanoTime() - t0 < TimeUnit.SECONDS.toNanos(10), "gave up after its timeout");
            accepted.get(5, TimeUnit.SECONDS).close();
        }
    }

    @Test
    void shouldFailReadsNotCrashWhenTheImageShrinksUnderTheEngine() throws Exception {
        try (OneSidedPageSource s = ShmPageSource.connect(sock, "img", token("img", Duration.ofHours(1)), Duration.ofSeconds(5));
             Arena a = Arena.ofShared()) {
            final MemorySegment dst = a.allocate(PAGE);
            final CompletableFuture<Integer> first = new CompletableFuture<>();
            assertTrue(s.fetch(3, 1, dst, PageSource.DEMAND, 0, (t, f, c, st) -> first.complete(st)));
            assertEquals(PageSource.OK, first.get(5, TimeUnit.SECONDS));
            final byte[] got = new byte[PAGE];
            MemorySegment.copy(dst, java.lang.foreign.ValueLayout.JAVA_BYTE, 0, got, 0, PAGE);
            assertArrayEquals(java.util.Arrays.copyOfRange(content, 3 * PAGE, 4 * PAGE), got);
            try (FileChannel ch = FileChannel.open(image, StandardOpenOption.WRITE)) {
                ch.truncate(PAGE); // someone shrinks the cached image: pages past 1 are gone from the file
            }
            final CompletableFuture<Integer> lost = new CompletableFuture<>();
            assertTrue(s.fetch(40, 1, dst, PageSource.DEMAND, 1, (t, f, c, st) -> lost.complete(st)));
            assertTrue(lost.get(5, TimeUnit.SECONDS) != PageSource.OK, "a read of a lost page fails");
            io.lazyblk.pagemap.Await.until("the source reports itself down, so the engine uses its next source", Duration.ofSeconds(5),
                () -> !s.connected());
            assertFalse(s.connected(), "the source reports itself down, so the engine uses its next source");
        }
    }

    /**
     * A client that passes fds the protocol has no use for ({@code SCM_RIGHTS} eventfds, in its hello and in the message
     * it may send while the server waits for it to close after the hand-over), over many connections: none of them
     * stays open in the server's process, and a proper client is still served.
     */
    @Test
    void shouldCloseEveryFdAClientPassesInItsHelloOrAfterTheHandOver() throws Exception {
        final int rounds = 40;
        final int[] junk = new int[4];
        for (int i = 0; i < junk.length; i++) {
            junk[i] = io.lazyblk.sys.LibC.eventfd(io.lazyblk.sys.LibC.EFD_CLOEXEC);
        }
        try (Arena a = Arena.ofConfined()) {
            final long before = openFds();
            for (int r = 0; r < rounds; r++) {
                try (UnixSocket c = UnixSocket.connect(sock)) {
                    final java.nio.ByteBuffer hello = io.lazyblk.pull.provider.ProviderProtocol.encodeHello("img", token("img", Duration.ofHours(1)));
                    final MemorySegment out = a.allocate(hello.remaining());
                    out.asByteBuffer().put(hello);
                    // The hello in two pieces, each with fds attached: the server reads it with read(2).
                    c.send(out, 8, junk, junk.length);
                    c.send(out.asSlice(8), out.byteSize() - 8, junk, junk.length);
                    io.lazyblk.pull.provider.ProviderProtocol.readAnswer(n -> {
                        final MemorySegment b = a.allocate(Math.max(1, n));
                        assertTrue(n == 0 || c.readFully(b, n), "the server answered the hello");
                        return java.nio.ByteBuffer.wrap(b.asSlice(0, n).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE))
                            .order(java.nio.ByteOrder.LITTLE_ENDIAN);
                    }, "unix:" + sock, "img");
                    final int[] fds = new int[UnixSocket.MAX_FDS];
                    final int[] n = new int[1];
                    assertEquals(1, c.receive(a.allocate(1), 1, fds, n));
                    assertEquals(1, n[0], "the image's fd");
                    io.lazyblk.sys.LibC.close(fds[0]);
                    // While the server waits for us to close: one byte with fds (the server's receive takes them).
                    c.send(a.allocate(1), 1, junk, junk.length);
                    assertEquals(0, c.receive(a.allocate(1), 1, fds, n), "the server ends the connection");
                }
            }
            assertEquals(rounds, server.stats().handovers());
            // Each leaked round would leave 12 fds behind (480 in all); other threads of this JVM may open a few meanwhile.
            io.lazyblk.pagemap.Await.until("the server's fd count back near " + before + " (not growing with each client)",
                Duration.ofSeconds(10), () -> openFds() <= before + 16);
        } finally {
            for (final int fd : junk) {
                io.lazyblk.sys.LibC.close(fd);
            }
        }
        try (OneSidedPageSource s = ShmPageSource.connect(sock, "img", token("img", Duration.ofHours(1)), Duration.ofSeconds(5))) {
            assertEquals(64, s.manifest().pageCount(), "a proper client is still served");
        }
    }

    /** Open fds of this process (the server runs in it). */
    private static long openFds() throws IOException {
        try (java.util.stream.Stream<Path> fds = Files.list(Path.of("/proc/self/fd"))) {
            return fds.count();
        }
    }
}
