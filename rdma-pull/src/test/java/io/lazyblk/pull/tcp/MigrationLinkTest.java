package io.lazyblk.pull.tcp;

import io.lazyblk.pagemap.Await;
import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.provider.ProviderProtocol;
import io.lazyblk.pull.provider.ProviderRefusedException;
import io.lazyblk.pull.provider.TestMigration;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.pull.token.TokenSource;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.LongFunction;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The destination's side of a live migration against a real ImageServer on loopback exporting a live disk, and against
 * hand-made hostile servers: every answer checked, nothing waits past its bound.
 */
class MigrationLinkTest {
    private static final byte[] SECRET = "migration-link-secret-0123456789".getBytes();
    private static final int PAGE = 4096;
    private static final int PAGES = 32;
    private static final Duration TIMEOUT = Duration.ofSeconds(5);

    @TempDir
    Path dir;
    private Path disk;
    private byte[] content;
    private final List<AutoCloseable> closing = new ArrayList<>();
    /** Control requests the hand-made providers have read. */
    private final AtomicInteger hostileAsked = new AtomicInteger();

    @BeforeEach
    void image() throws IOException {
        content = new byte[PAGES * PAGE - 1024];
        new Random(17).nextBytes(content);
        disk = dir.resolve("vm1.img");
        Files.write(disk, content);
    }

    @AfterEach
    void close() throws Exception {
        for (final AutoCloseable c : closing.reversed()) {
            c.close();
        }
    }

    private static TokenSource token(final String image) {
        return TokenSource.fixed(AccessToken.mint(SECRET, image, Instant.now().plus(Duration.ofHours(1))));
    }

    /** A provider exporting {@link #disk} as "vm1" with a live manifest, migrating by {@code control} (null: not migrating). */
    private ImageServer serve(final TestMigration control) throws IOException {
        final ImageExport live = new ImageExport("vm1", disk, Manifest.live(content.length, PAGE, digest()));
        final ImageServer s = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0),
            List.of(control == null ? live : live.withMigration(control)), SECRET);
        closing.add(s);
        return s;
    }

    private static byte[] digest() {
        final byte[] d = new byte[32];
        Arrays.fill(d, (byte) 0x5a);
        return d;
    }

    private MigrationLink link(final InetSocketAddress at) throws IOException {
        final MigrationLink l = MigrationLink.connect(at, "vm1", token("vm1"), TIMEOUT);
        closing.add(l);
        return l;
    }

    @Test
    void shouldServeALiveDiskThroughTcpPageSourceAsTheFileHoldsIt() throws Exception {
        final ImageServer server = serve(null);
        try (TcpPageSource source = TcpPageSource.connect(server.address(), "vm1", token("vm1"), TcpPageSource.Options.defaults());
             Arena arena = Arena.ofShared()) {
            final Manifest m = source.manifest();
            assertTrue(m.isLive());
            assertArrayEquals(digest(), m.digest());
            assertEquals(PAGES, m.pageCount());
            final MemorySegment dst = arena.allocate((long) PAGES * PAGE);
            final AtomicInteger done = new AtomicInteger();
            final AtomicInteger bad = new AtomicInteger();
            for (int p = 0; p < PAGES; p += 8) {
                assertTrue(source.fetch(p, 8, dst.asSlice((long) p * PAGE), PageSource.DEMAND, p, (tag, first, count, status) -> {
                    if (status != PageSource.OK) {
                        bad.incrementAndGet();
                    }
                    done.incrementAndGet();
                }));
            }
            Await.until("four fetches complete", Duration.ofSeconds(10), () -> done.get() == 4);
            assertEquals(0, bad.get());
            assertArrayEquals(content, dst.asSlice(0, content.length).toArray(ValueLayout.JAVA_BYTE), "the file's bytes, unverified");
        }
    }

    @Test
    void shouldAskAgainWhileTheSourceSaysPendingAndReturnTheFinalSetOnceItSwitchesOver() throws Exception {
        final TestMigration control = new TestMigration(20_000_000L); // each wait answers "pending" after 20 ms
        final MigrationLink link = link(serve(control).address());
        assertTrue(link.manifest().isLive());
        assertThrows(IllegalStateException.class, link::guestWriteback, "no mode before the final set");
        final CompletableFuture<int[]> fin = CompletableFuture.supplyAsync(() -> {
            try {
                return link.awaitFinal(Duration.ofSeconds(30));
            } catch (final IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
        Await.until("the link asked again after a pending answer", Duration.ofSeconds(10), () -> control.asked.get() >= 3);
        control.switchOver(31, 0, 12, 5);
        assertArrayEquals(new int[] {31, 0, 12, 5}, fin.get(10, TimeUnit.SECONDS));
        assertTrue(link.guestWriteback(), "the control's default mode came with the set");
        link.complete();
        assertEquals(1, control.completed.get(), "complete() reaches destinationComplete");
    }

    @Test
    void shouldCarryTheGuestsWriteCacheModeFromTheSourceEngineEitherWay() throws Exception {
        for (final boolean mode : new boolean[] {false, true}) {
            final TestMigration control = new TestMigration(0);
            control.writeback = mode;
            control.switchOver(3, 1);
            final MigrationLink link = link(serve(control).address());
            assertArrayEquals(new int[] {3, 1}, link.awaitFinal(TIMEOUT));
            assertEquals(mode, link.guestWriteback(), "writeback " + mode + " through a real ImageServer");
        }
    }

    @Test
    void shouldGiveUpAtItsBoundAndPickUpTheStillOpenQuestionOnTheNextWait() throws Exception {
        final TestMigration control = new TestMigration(Long.MAX_VALUE); // the server waits its whole 20 s
        final MigrationLink link = link(serve(control).address());
        final long start = System.nanoTime();
        final IOException e = assertThrows(IOException.class, () -> link.awaitFinal(Duration.ofMillis(300)));
        final long tookMs = (System.nanoTime() - start) / 1_000_000;
        assertTrue(e.getMessage().contains("has not reached its switchover within 300 ms"), e.getMessage());
        assertTrue(tookMs >= 300 && tookMs < 3_000, "gave up after " + tookMs + " ms");
        assertThrows(IllegalStateException.class, link::complete, "done before the final set");
        control.switchOver(2);
        assertArrayEquals(new int[] {2}, link.awaitFinal(Duration.ofSeconds(30)), "the server's wait still runs: no second question");
        assertEquals(1, control.asked.get());
    }

    @Test
    void shouldSayWhyAnExportThatIsNotMigratingCannotAnswer() throws Exception {
        final MigrationLink link = link(serve(null).address());
        final IOException e = assertThrows(IOException.class, () -> link.awaitFinal(TIMEOUT));
        assertTrue(e.getMessage().contains("not the disk of a migrating engine"), e.getMessage());
        final IOException done = assertThrows(IOException.class, link::complete, "the link stays usable after a reasoned refusal");
        assertTrue(done.getMessage().contains("not the disk of a migrating engine"), done.getMessage());
    }

    @Test
    void shouldPassOnTheProvidersRefusalOfTheHello() throws Exception {
        final ImageServer server = serve(new TestMigration(0));
        final ProviderRefusedException e = assertThrows(ProviderRefusedException.class,
            () -> MigrationLink.connect(server.address(), "vm1", token("vm2"), TIMEOUT));
        assertEquals(ProviderProtocol.HelloStatus.BAD_TOKEN, e.status());
    }

    @Test
    void shouldReadAFinalSetOfMillionsOfPagesWrittenInChunks() throws Exception {
        // A sparse 16 GiB live disk in 4 KiB pages: 4 Mi pages, a 16 MiB answer, far past any socket buffer and chunk.
        final long size = 16L << 30;
        final Path big = dir.resolve("big.img");
        try (RandomAccessFile f = new RandomAccessFile(big.toFile(), "rw")) {
            f.setLength(size);
        }
        final TestMigration control = new TestMigration(0);
        final ImageServer server = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0),
            List.of(new ImageExport("vm1", big, Manifest.live(size, PAGE, digest())).withMigration(control)), SECRET);
        closing.add(server);
        final int pages = (int) (size / PAGE);
        final int[] all = new int[pages];
        for (int i = 0; i < pages; i++) {
            all[i] = pages - 1 - i;
        }
        control.switchOver(all);
        final MigrationLink link = link(server.address());
        assertArrayEquals(all, link.awaitFinal(Duration.ofSeconds(60)));
    }

    /**
     * A hand-made provider: greets with a live manifest of {@link #PAGES} pages, reads one control request and answers
     * it with {@code answer.apply(id)} (null: never answers; empty: closes the connection, as a provider that predates
     * the op does), then keeps the connection open.
     */
    private InetSocketAddress hostile(final LongFunction<ByteBuffer> answer) throws IOException {
        final ServerSocketChannel listener = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
        closing.add(listener);
        final Thread t = Thread.ofPlatform().daemon().start(() -> {
            try (SocketChannel c = listener.accept()) {
                read(c, ProviderProtocol.encodeHello("vm1", token("vm1").token()).remaining());
                write(c, ProviderProtocol.encodeAnswer(ProviderProtocol.HelloStatus.OK, "ok", Manifest.live(content.length, PAGE, digest())));
                final long id = read(c, ProviderProtocol.REQUEST_BYTES + ProviderProtocol.CONTROL_TAIL_BYTES).getLong(0);
                hostileAsked.incrementAndGet();
                final ByteBuffer a = answer.apply(id);
                if (a != null && a.capacity() == 0) {
                    return;
                }
                if (a != null) {
                    write(c, a);
                }
                read(c, 1); // until the client closes
            } catch (final IOException e) {
                // the client went away: done
            }
        });
        closing.add(() -> t.join(10_000));
        return (InetSocketAddress) listener.getLocalAddress();
    }

    private static ByteBuffer read(final SocketChannel c, final int n) throws IOException {
        final ByteBuffer b = ByteBuffer.allocate(n).order(ByteOrder.LITTLE_ENDIAN);
        while (b.hasRemaining()) {
            if (c.read(b) < 0) {
                throw new java.io.EOFException();
            }
        }
        return b.flip();
    }

    private static void write(final SocketChannel c, final ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            c.write(b);
        }
    }

    private static ByteBuffer finalAnswer(final long id, final int... pages) {
        final ByteBuffer b = ProviderProtocol.encodeFinalHeader(id, pages.length, true);
        final ByteBuffer out = ByteBuffer.allocate(b.remaining() + 4 * pages.length).order(ByteOrder.LITTLE_ENDIAN).put(b);
        ProviderProtocol.putPages(pages, 0, out);
        return out.flip();
    }

    private MigrationLink assertRefused(final LongFunction<ByteBuffer> answer, final String says) throws Exception {
        final MigrationLink link = link(hostile(answer));
        final IOException e = assertThrows(IOException.class, () -> link.awaitFinal(Duration.ofSeconds(1)));
        assertTrue(e.getMessage().contains(says), e.getMessage());
        final IOException after = assertThrows(IOException.class, () -> link.awaitFinal(Duration.ofSeconds(1)));
        assertTrue(after.getMessage().contains("is closed"), "a link that got a bad answer is closed: " + after.getMessage());
        return link;
    }

    /** A final answer of {@code pages} with the flags word {@code flags}, whatever bits it holds. */
    private static ByteBuffer finalAnswerFlagged(final long id, final int flags, final int... pages) {
        final ByteBuffer b = finalAnswer(id, pages);
        b.putInt(ProviderProtocol.RESPONSE_HEADER_BYTES, flags);
        return b;
    }

    @Test
    void shouldRefuseAFinalAnswerWithAnUnknownFlagBit() throws Exception {
        final MigrationLink link = assertRefused(id -> finalAnswerFlagged(id, 0b11, 2),
            "final answer with unknown flags 0x2");
        assertThrows(IllegalStateException.class, link::guestWriteback, "a refused answer's mode is not taken");
        assertRefused(id -> finalAnswerFlagged(id, 0x8000_0000), "unknown flags 0x80000000");
    }

    @Test
    void shouldRefuseAFinalAnswerWhoseLengthIsNotFlagsAndWholePages() throws Exception {
        assertRefused(id -> ProviderProtocol.encodeControlAnswer(id, ProviderProtocol.RESPONSE_MIGRATION_FINAL, new byte[2]),
            "announced a final answer of 2 bytes (a u32 of flags, then whole u32 pages");
        assertRefused(id -> ProviderProtocol.encodeControlAnswer(id, ProviderProtocol.RESPONSE_MIGRATION_FINAL, new byte[0]),
            "final answer of 0 bytes");
    }

    @Test
    void shouldRefuseAFinalSetWithAPageOutsideTheExport() throws Exception {
        assertRefused(id -> finalAnswer(id, 1, PAGES), "sent page 32 in the final set, outside the export's 32 pages");
        assertRefused(id -> finalAnswer(id, -1), "sent page 4294967295");
    }

    @Test
    void shouldRefuseAFinalSetNamingAPageTwice() throws Exception {
        assertRefused(id -> finalAnswer(id, 4, 9, 4), "sent page 4 twice in the final set");
    }

    @Test
    void shouldRefuseAnswersThatDoNotHoldTogether() throws Exception {
        assertRefused(id -> finalAnswer(id + 1, 1), "answered request");
        assertRefused(id -> ProviderProtocol.encodeControlAnswer(id, ProviderProtocol.RESPONSE_MIGRATION_FINAL, new byte[6]),
            "final answer of 6 bytes");
        assertRefused(id -> ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(id)
            .putInt(ProviderProtocol.RESPONSE_MIGRATION_FINAL).putInt(4 + 4 * (PAGES + 1)).flip(), "at most 32 of them");
        assertRefused(id -> ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(id)
            .putInt(ProviderProtocol.RESPONSE_MIGRATION_FINAL).putInt(-4).flip(), "final answer of 4294967292 bytes");
        assertRefused(id -> ProviderProtocol.encodeControlAnswer(id, ProviderProtocol.RESPONSE_MIGRATION_PENDING, new byte[4]),
            "pending answer with a 4-byte payload");
        assertRefused(id -> ProviderProtocol.encodeControlAnswer(id, 77, new byte[0]), "with status 77");
        assertRefused(id -> ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(id)
            .putInt(ProviderProtocol.RESPONSE_MIGRATION_UNAVAILABLE).putInt(1 << 20).flip(), "1048576-byte reason");
        assertRefused(id -> ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN).putLong(id).putInt(0).flip(),
            "stopped in the middle of an answer");
    }

    @Test
    void shouldGiveUpOnASourceThatNeverAnswersWithinTheBound() throws Exception {
        final MigrationLink link = link(hostile(id -> null));
        final long start = System.nanoTime();
        final IOException e = assertThrows(IOException.class, () -> link.awaitFinal(Duration.ofMillis(500)));
        final long tookMs = (System.nanoTime() - start) / 1_000_000;
        assertTrue(e.getMessage().contains("has not reached its switchover"), e.getMessage());
        assertTrue(tookMs < 3_000, "gave up after " + tookMs + " ms");
    }

    @Test
    void shouldTakeAProviderThatClosesOnTheUnknownOpForOneThatCannotMigrate() throws Exception {
        final MigrationLink link = link(hostile(id -> ByteBuffer.allocate(0)));
        final IOException e = assertThrows(IOException.class, () -> link.awaitFinal(TIMEOUT));
        assertTrue(e.getMessage().contains("closed the connection") && e.getMessage().contains("migrate-export"), e.getMessage());
    }

    @Test
    void shouldEndAWaitAtOnceWhenClosedFromAnotherThread() throws Exception {
        final MigrationLink link = link(hostile(id -> null));
        final CompletableFuture<Void> wait = CompletableFuture.runAsync(() -> {
            try {
                link.awaitFinal(Duration.ofSeconds(60));
            } catch (final IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
        Await.until("the link asked and waits", Duration.ofSeconds(10), () -> hostileAsked.get() == 1);
        link.close();
        final java.util.concurrent.ExecutionException e = assertThrows(java.util.concurrent.ExecutionException.class,
            () -> wait.get(5, TimeUnit.SECONDS));
        assertTrue(e.getCause().getMessage().contains("closed"), e.getCause().getMessage());
    }
}
