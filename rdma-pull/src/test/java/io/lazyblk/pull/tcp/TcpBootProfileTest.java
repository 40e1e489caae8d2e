package io.lazyblk.pull.tcp;

import io.lazyblk.pagemap.Await;
import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.provider.ProviderProtocol;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.io.DataInputStream;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.time.Duration;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The client's side of the boot profile request, against a provider played by hand over real loopback TCP: a good
 * answer comes back as sent; a malformed one is refused (empty profile); a provider that declines, closes the
 * connection or stays silent gives an empty profile, and the source goes on (reconnecting where the provider closed).
 */
class TcpBootProfileTest {
    private static final int PAGE = 4096;
    private static final int PAGES = 32;
    private static final byte[] CONTENT = new byte[PAGES * PAGE];
    private static final Manifest MANIFEST;

    static {
        new Random(8).nextBytes(CONTENT);
        MANIFEST = Manifest.of(CONTENT, PAGE);
    }

    /** What the fake provider does with a profile request: answer these bytes (header included), or close if null. */
    private volatile java.util.function.LongFunction<ByteBuffer> onProfile;
    private final AtomicInteger accepted = new AtomicInteger();
    private final ServerSocketChannel listener;
    private final Thread acceptor;
    private final Arena arena = Arena.ofShared();

    TcpBootProfileTest() throws IOException {
        listener = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
        acceptor = Thread.ofPlatform().daemon().name("fake-provider").start(this::accept);
    }

    @AfterEach
    void stop() throws Exception {
        listener.close();
        acceptor.join();
        arena.close();
    }

    private void accept() {
        while (true) {
            final SocketChannel ch;
            try {
                ch = listener.accept();
            } catch (final IOException e) {
                return;
            }
            accepted.incrementAndGet();
            Thread.ofPlatform().daemon().start(() -> serve(ch));
        }
    }

    private void serve(final SocketChannel ch) {
        try (ch) {
            final DataInputStream in = new DataInputStream(ch.socket().getInputStream());
            final ByteBuffer fixed = read(in, ProviderProtocol.HELLO_FIXED_BYTES);
            read(in, Short.toUnsignedInt(fixed.getShort(ProviderProtocol.HELLO_NAME_LENGTH_OFFSET)));
            read(in, Short.toUnsignedInt(read(in, 2).getShort(0)));
            write(ch, ProviderProtocol.encodeAnswer(ProviderProtocol.HelloStatus.OK, "ok", MANIFEST));
            while (true) {
                final ByteBuffer r = read(in, ProviderProtocol.REQUEST_BYTES);
                final long id = r.getLong(0);
                final int first = r.getInt(8);
                final int word = r.getInt(12);
                if (first == ProviderProtocol.CONTROL_MARKER && word == 0) {
                    final ByteBuffer tail = read(in, ProviderProtocol.CONTROL_TAIL_BYTES);
                    assertEquals(ProviderProtocol.OP_PROFILE, tail.getInt(0));
                    final ByteBuffer answer = onProfile.apply(id);
                    if (answer == null) {
                        return; // as a provider that does not know the request: it closes the connection
                    }
                    write(ch, answer);
                    continue;
                }
                final int count = word & ProviderProtocol.REQUEST_COUNT_MASK;
                write(ch, ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(id).putInt(ProviderProtocol.RESPONSE_OK)
                    .putInt(count * PAGE).flip());
                write(ch, ByteBuffer.wrap(CONTENT, first * PAGE, count * PAGE));
            }
        } catch (final IOException e) {
            // the client went away
        }
    }

    private static ByteBuffer read(final DataInputStream in, final int n) throws IOException {
        final byte[] b = new byte[n];
        in.readFully(b);
        return ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN);
    }

    private static void write(final SocketChannel ch, final ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    private static ByteBuffer answer(final long id, final int status, final int... words) {
        final ByteBuffer b = ByteBuffer.allocate(16 + 4 * words.length).order(ByteOrder.LITTLE_ENDIAN).putLong(id).putInt(status)
            .putInt(4 * words.length);
        for (final int w : words) {
            b.putInt(w);
        }
        return b.flip();
    }

    private TcpPageSource connect(final Duration timeout) throws IOException {
        return TcpPageSource.connect((InetSocketAddress) listener.getLocalAddress(), "img", "token",
            TcpPageSource.Options.defaults().withConnectTimeout(timeout).withBackoff(Duration.ofMillis(10), Duration.ofMillis(100)));
    }

    private void fetchWorks(final PageSource s) throws Exception {
        final MemorySegment dst = arena.allocate(PAGE);
        final CompletableFuture<Integer> done = new CompletableFuture<>();
        Await.until("the source is connected", Duration.ofSeconds(10), s::connected);
        assertTrue(s.fetch(5, 1, dst, PageSource.DEMAND, 0, (tag, first, n, status) -> done.complete(status)));
        assertEquals(PageSource.OK, done.get(10, TimeUnit.SECONDS));
        assertEquals(CONTENT[5 * PAGE], dst.get(java.lang.foreign.ValueLayout.JAVA_BYTE, 0));
    }

    @Test
    void shouldReturnAWellFormedProfileAsSentAndKeepTheConnection() throws Exception {
        onProfile = id -> answer(id, ProviderProtocol.RESPONSE_PROFILE, 30, 1, 2, 0);
        try (TcpPageSource s = connect(Duration.ofSeconds(5))) {
            assertArrayEquals(new int[] {30, 1, 2, 0}, s.bootProfile());
            fetchWorks(s);
            assertArrayEquals(new int[] {30, 1, 2, 0}, s.bootProfile(), "asked again: the same answer");
            assertEquals(1, accepted.get(), "one connection carried it all");
        }
    }

    @Test
    void shouldRefuseAMalformedProfileAnswerAndKeepTheConnection() throws Exception {
        final java.util.List<java.util.function.LongFunction<ByteBuffer>> bad = java.util.List.of(
            id -> answer(id, ProviderProtocol.RESPONSE_PROFILE, 1, PAGES),        // a page past the image's end
            id -> answer(id, ProviderProtocol.RESPONSE_PROFILE, 1, -1),           // page 2^32-1
            id -> answer(id, ProviderProtocol.RESPONSE_PROFILE, 4, 5, 4),         // a page twice
            id -> ByteBuffer.allocate(16 + 6).order(ByteOrder.LITTLE_ENDIAN).putLong(id).putInt(ProviderProtocol.RESPONSE_PROFILE)
                .putInt(6).put(new byte[6]).flip(),                                // not whole u32s
            id -> answer(id, 77, 0x6e6f6e65));                                      // another status: declined, 4 bytes of reason
        try (TcpPageSource s = connect(Duration.ofSeconds(5))) {
            for (int i = 0; i < bad.size(); i++) {
                onProfile = bad.get(i);
                assertEquals(0, s.bootProfile().length, "answer " + i);
                fetchWorks(s);
            }
            assertEquals(1, accepted.get(), "the stream stayed in step: no reconnect");
        }
    }

    @Test
    void shouldGiveNoProfileAndReconnectWhenTheProviderClosesOrAnnouncesAnOversizedAnswer() throws Exception {
        try (TcpPageSource s = connect(Duration.ofSeconds(5))) {
            onProfile = id -> null;
            assertEquals(0, s.bootProfile().length, "a provider that closes the connection");
            fetchWorks(s);
            onProfile = id -> ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(id).putInt(ProviderProtocol.RESPONSE_PROFILE)
                .putInt(ProviderProtocol.MAX_PROFILE_ANSWER_BYTES + 4).flip();
            assertEquals(0, s.bootProfile().length, "an answer larger than any profile: a protocol error");
            fetchWorks(s);
            assertEquals(3, accepted.get(), "each drop was followed by a reconnect");
        }
    }

    @Test
    void shouldGiveNoProfileWhenTheProviderDoesNotAnswerInTime() throws Exception {
        final CompletableFuture<Void> release = new CompletableFuture<>();
        onProfile = id -> {
            release.join(); // silent until the test is done with it
            return answer(id, ProviderProtocol.RESPONSE_PROFILE, 1);
        };
        try (TcpPageSource s = connect(Duration.ofMillis(200))) {
            final long t0 = System.nanoTime();
            assertEquals(0, s.bootProfile().length);
            assertTrue(System.nanoTime() - t0 < TimeUnit.SECONDS.toNanos(5), "bounded by the timeout");
            release.complete(null);
        }
    }
}
