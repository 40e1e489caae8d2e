package io.lazyblk.pull.tcp;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.pull.token.TokenSource;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.function.BooleanSupplier;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/** A provider that goes away costs fetches (UNAVAILABLE, never wrong bytes), not the source; a different image is refused. */
class TcpReconnectTest {
    private static final byte[] SECRET = "reconnect-test-secret-0123456789".getBytes();
    private static final int PAGE = 16 << 10;
    private static final int PAGES = 64;
    private static final TcpPageSource.Options FAST = TcpPageSource.Options.defaults()
        .withBackoff(Duration.ofMillis(10), Duration.ofMillis(200));

    @TempDir
    Path dir;
    private final Arena arena = Arena.ofShared();
    private ImageServer server;
    private TcpPageSource source;

    @AfterEach
    void stop() {
        if (source != null) {
            source.close();
        }
        if (server != null) {
            server.close();
        }
        arena.close();
    }

    private Path image(final String name, final long seed) throws IOException {
        final byte[] b = new byte[PAGES * PAGE];
        new Random(seed).nextBytes(b);
        return Files.write(dir.resolve(name), b);
    }

    private static ImageServer serve(final InetSocketAddress at, final Path image) throws IOException {
        return ImageServer.start(at, List.of(new ImageExport("img", image, ManifestBuilder.build(image, PAGE, ManifestBuilder.Progress.NONE))), SECRET);
    }

    private static String token() {
        return AccessToken.mint(SECRET, "img", Instant.now().plus(Duration.ofHours(1)));
    }

    @Test
    void shouldFailFetchesUnavailableWhileTheProviderIsDownAndResumeWhenItRestartsOnTheSamePort() throws Exception {
        final Path img = image("a.img", 1);
        final byte[] content = Files.readAllBytes(img);
        server = serve(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), img);
        final InetSocketAddress address = server.address();
        source = TcpPageSource.connect(address, "img", token(), FAST);

        // Stall the transport in the first completion, so the rest are still in flight when the provider dies.
        final int n = 200;
        final CountDownLatch stall = new CountDownLatch(1);
        final CountDownLatch firstArrived = new CountDownLatch(1);
        final AtomicIntegerArray status = new AtomicIntegerArray(n);
        final AtomicIntegerArray calls = new AtomicIntegerArray(n);
        final Semaphore done = new Semaphore(0);
        final MemorySegment dst = arena.allocate((long) n * PAGE);
        final PageSource.Listener listener = (tag, first, count, st) -> {
            calls.incrementAndGet((int) tag);
            status.set((int) tag, st);
            if (firstArrived.getCount() == 1) {
                firstArrived.countDown();
                await(stall);
            }
            done.release();
        };
        for (int i = 0; i < n; i++) {
            assertTrue(source.fetch(i % PAGES, 1, dst.asSlice((long) i * PAGE, PAGE), PageSource.BACKGROUND, i, listener));
        }
        await(firstArrived);
        server.close();
        stall.countDown();
        assertTrue(done.tryAcquire(n, 10, TimeUnit.SECONDS));
        int unavailable = 0;
        for (int i = 0; i < n; i++) {
            assertEquals(1, calls.get(i));
            if (status.get(i) == PageSource.OK) {
                final long from = (long) (i % PAGES) * PAGE;
                assertEquals(-1, MemorySegment.mismatch(dst, (long) i * PAGE, (long) (i + 1) * PAGE, MemorySegment.ofArray(content), from, from + PAGE),
                    "fetch " + i + " completed OK with wrong bytes");
            } else {
                assertEquals(PageSource.UNAVAILABLE, status.get(i));
                unavailable++;
            }
        }
        assertTrue(unavailable > 0, "fetches in flight when the provider died complete UNAVAILABLE");
        awaitCondition(() -> !source.connected(), "connected() false after the drop");

        // While down: a fetch is refused (PageSource.fetch returns false when down) or, if it raced with the
        // drop, completes UNAVAILABLE; never OK.
        final CompletableFuture<Integer> whileDown = new CompletableFuture<>();
        if (!source.fetch(0, 1, arena.allocate(PAGE), PageSource.DEMAND, 0, (t, f, c, st) -> whileDown.complete(st))) {
            whileDown.complete(PageSource.UNAVAILABLE);
        }
        assertEquals(PageSource.UNAVAILABLE, whileDown.get(10, TimeUnit.SECONDS));
        assertEquals(0, source.inFlight());

        server = serve(address, img);
        awaitCondition(source::connected, "reconnected to the restarted provider");
        final MemorySegment again = arena.allocate(2L * PAGE);
        final CompletableFuture<Integer> ok = new CompletableFuture<>();
        assertTrue(source.fetch(10, 2, again, PageSource.DEMAND, 1, (t, f, c, st) -> ok.complete(st)));
        assertEquals(PageSource.OK, ok.get(10, TimeUnit.SECONDS));
        assertEquals(-1, MemorySegment.mismatch(again, 0, 2L * PAGE, MemorySegment.ofArray(content), 10L * PAGE, 12L * PAGE));
    }

    @Test
    void shouldRefuseAProviderThatComesBackServingADifferentImageUnderTheSameName() throws Exception {
        final Path original = image("a.img", 1);
        final Path impostor = image("b.img", 2); // same size and page size, other bytes
        server = serve(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), original);
        final InetSocketAddress address = server.address();
        source = TcpPageSource.connect(address, "img", token(), FAST);
        server.close();
        awaitCondition(() -> !source.connected(), "disconnected");

        server = serve(address, impostor);
        awaitCondition(() -> String.valueOf(source.lastFailure()).contains("different image"), "the impostor refused");
        assertFalse(source.connected());
        assertFalse(source.fetch(0, 1, arena.allocate(PAGE), PageSource.DEMAND, 0, (t, f, c, st) -> fail("served by the impostor")));
        final long served = server.stats().bytes();
        assertEquals(0, served, "not one page asked of the impostor");

        // The source keeps trying: the real image back under that name is accepted again.
        server.close();
        server = serve(address, original);
        awaitCondition(source::connected, "reconnected to the original image");
    }

    /**
     * An engine that asks for nothing loses its connections to the provider's idle timeout; both lanes of its tcp://
     * source reconnect on their own, and the next demand fetch is served.
     */
    @Test
    void shouldReconnectBothLanesAfterTheProviderClosesThemAsIdleAndServeTheNextDemandFetch() throws Exception {
        final Path img = image("a.img", 1);
        final byte[] content = Files.readAllBytes(img);
        server = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), null,
            List.of(new ImageExport("img", img, ManifestBuilder.build(img, PAGE, ManifestBuilder.Progress.NONE))), SECRET,
            new ImageServer.Limits(16, 4, Duration.ofSeconds(1)));
        try (TwoLaneTcpSource lanes = TwoLaneTcpSource.connect(server.address(), "img", token(), FAST)) {
            awaitCondition(() -> server.stats().idleClosed() >= 2, "both lanes closed as idle");
            final MemorySegment dst = arena.allocate(2L * PAGE);
            // The reconnected lanes idle out again a second later: a fetch sent just as that happens completes
            // UNAVAILABLE (the engine asks again, as here). It happened in CI on a loaded host; it must be that race,
            // shown by another idle close, and a later attempt must be served.
            int status = PageSource.UNAVAILABLE;
            for (int attempt = 0; attempt < 3 && status != PageSource.OK; attempt++) {
                awaitCondition(() -> server.stats().open() == 2 && lanes.connected(), "both lanes reconnected");
                final long idleBefore = server.stats().idleClosed();
                final CompletableFuture<Integer> done = new CompletableFuture<>();
                assertTrue(lanes.fetch(20, 2, dst, PageSource.DEMAND, 7 + attempt, (t, f, c, st) -> done.complete(st)));
                status = done.get(10, TimeUnit.SECONDS);
                if (status != PageSource.OK) {
                    final long before = idleBefore;
                    awaitCondition(() -> server.stats().idleClosed() > before, "a failed fetch lost its lane to an idle close");
                }
            }
            assertEquals(PageSource.OK, status);
            assertEquals(-1, MemorySegment.mismatch(dst, 0, 2L * PAGE, MemorySegment.ofArray(content), 20L * PAGE, 22L * PAGE));
        }
    }

    /**
     * Token rotation: a source whose token (in a file) expired while it was connected is refused when it reconnects,
     * says once to rotate the file and keeps trying, reading the file at each attempt; once the file holds a fresh token
     * (written to a new file and renamed over it) it reconnects and serves a demand fetch.
     */
    @Test
    void shouldReconnectWithTheTokenRotatedIntoItsFileAfterTheOldOneExpired() throws Exception {
        final Path img = image("a.img", 1);
        final byte[] content = Files.readAllBytes(img);
        server = serve(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), img);
        final InetSocketAddress address = server.address();
        final Path tokenFile = dir.resolve("token");
        final Instant expiry = Instant.now().plusSeconds(2); // whole seconds: valid for 1 to 2 s from now
        Files.writeString(tokenFile, AccessToken.mint(SECRET, "img", expiry) + "\n");
        source = TcpPageSource.connect(address, "img", TokenSource.file(tokenFile, 0), FAST);
        io.lazyblk.pagemap.Await.until("the token expired", Duration.ofSeconds(10),
            () -> Instant.now().getEpochSecond() >= expiry.getEpochSecond());

        server.close(); // the provider restarts: the connection drops, and the reconnect presents the expired token
        server = serve(address, img);
        awaitCondition(() -> String.valueOf(source.lastFailure()).contains("EXPIRED_TOKEN"), "the expired token refused");
        assertTrue(source.lastFailure().contains("rename it over " + tokenFile), "says to rotate the file: " + source.lastFailure());
        final long refused = server.stats().refused();
        awaitCondition(() -> server.stats().refused() >= refused + 3, "retried with backoff, and refused each time");
        assertFalse(source.connected(), "the old token stays refused");

        final Path fresh = dir.resolve("token.new");
        Files.writeString(fresh, AccessToken.mint(SECRET, "img", Instant.now().plus(Duration.ofHours(1))) + "\n");
        Files.move(fresh, tokenFile, java.nio.file.StandardCopyOption.ATOMIC_MOVE, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        awaitCondition(source::connected, "reconnected with the rotated token");
        final MemorySegment dst = arena.allocate(PAGE);
        final CompletableFuture<Integer> ok = new CompletableFuture<>();
        assertTrue(source.fetch(33, 1, dst, PageSource.DEMAND, 1, (t, f, c, st) -> ok.complete(st)));
        assertEquals(PageSource.OK, ok.get(10, TimeUnit.SECONDS));
        assertEquals(-1, MemorySegment.mismatch(dst, 0, PAGE, MemorySegment.ofArray(content), 33L * PAGE, 34L * PAGE));
    }

    private static void await(final CountDownLatch latch) {
        try {
            if (!latch.await(10, TimeUnit.SECONDS)) {
                throw new AssertionError("latch not released in time");
            }
        } catch (final InterruptedException e) {
            throw new AssertionError(e);
        }
    }

    private static void awaitCondition(final BooleanSupplier condition, final String what) throws Exception {
        io.lazyblk.pagemap.Await.until(what, java.time.Duration.ofSeconds(10), condition::getAsBoolean);
    }
}
