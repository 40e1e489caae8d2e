package io.lazyblk.pull.chain;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.tcp.TcpPageSource;
import io.lazyblk.pull.token.AccessToken;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicIntegerArray;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** A peer and a seed, both real providers over TCP: what the chain does when the peer lacks pages, corrupts one, or dies. */
class SourceChainTest {
    private static final byte[] SECRET = "chain-secret-0123456789abcdef012".getBytes();
    private static final int PAGE = 16 << 10;
    private static final int PAGES = 64;

    @TempDir
    Path dir;
    private byte[] content;
    private ImageExport golden;
    private ImageServer seed;
    private ImageServer peer;
    private SourceChain chain;
    private Arena arena;

    @BeforeEach
    void start() throws Exception {
        content = new byte[PAGES * PAGE];
        new Random(3).nextBytes(content);
        final Path image = Files.write(dir.resolve("img.raw"), content);
        golden = new ImageExport("img", image, ManifestBuilder.build(image, PAGE, ManifestBuilder.Progress.NONE));
        seed = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), List.of(golden), SECRET);
        arena = Arena.ofShared();
    }

    @AfterEach
    void stop() {
        if (chain != null) {
            chain.close();
        }
        if (peer != null) {
            peer.close();
        }
        seed.close();
        arena.close();
    }

    private void chainWithPeer(final ImageExport peerExport) throws Exception {
        peer = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), List.of(peerExport), SECRET);
        final String token = AccessToken.mint(SECRET, "img", Instant.now().plus(Duration.ofHours(1)));
        chain = new SourceChain(List.of(TcpPageSource.connect(peer.address(), "img", token),
            TcpPageSource.connect(seed.address(), "img", token)), List.of("peer", "seed"));
    }

    /** Fetches every page, one fetch each, and checks every byte; returns the statuses. */
    private void fetchAllAndCheck() throws Exception {
        final MemorySegment dst = arena.allocate((long) PAGES * PAGE);
        final AtomicIntegerArray status = new AtomicIntegerArray(PAGES);
        final CountDownLatch done = new CountDownLatch(PAGES);
        for (int p = 0; p < PAGES; p++) {
            status.set(p, -1);
            final int page = p;
            final PageSource.Listener l = (t, f, c, st) -> {
                status.set(page, st);
                done.countDown();
            };
            io.lazyblk.pagemap.Await.until("the chain accepts the fetch of page " + p, Duration.ofSeconds(10),
                () -> chain.fetch(page, 1, dst.asSlice((long) page * PAGE, PAGE), PageSource.BACKGROUND, page, l));
        }
        assertTrue(done.await(20, TimeUnit.SECONDS), "every fetch completes");
        for (int p = 0; p < PAGES; p++) {
            assertEquals(PageSource.OK, status.get(p), "page " + p);
        }
        final byte[] got = new byte[PAGES * PAGE];
        MemorySegment.copy(dst, ValueLayout.JAVA_BYTE, 0, got, 0, got.length);
        assertArrayEquals(content, got, "the image's bytes, whichever source they came from");
    }

    @Test
    void shouldTakePagesThePeerLacksFromTheSeed() throws Exception {
        chainWithPeer(new ImageExport("img", golden.image(), golden.manifest(), (first, count) -> first % 2 == 0, true));
        fetchAllAndCheck();
        assertEquals(PAGES / 2, seed.stats().bytes() / PAGE, "the seed sent exactly the odd pages, which the peer lacks");
        assertEquals(PAGES / 2, peer.stats().bytes() / PAGE, "the peer sent the even ones");
        assertTrue(!chain.backingOff(0), "a peer that lacks pages is not a failing peer");
    }

    @Test
    void shouldRefetchAPageThePeerCorruptsFromTheSeedAndBackOffThePeer() throws Exception {
        chainWithPeer(golden);
        peer.corruptServedPageForTesting("img", 5);
        fetchAllAndCheck();
        assertTrue(seed.stats().requests() >= 1, "page 5 came from the seed");
        assertEquals(1, chain.penalties(0), "the corrupt peer was backed off, once");
    }

    @Test
    void shouldFinishFromTheSeedWhenThePeerDiesMidFill() throws Exception {
        chainWithPeer(golden);
        final MemorySegment one = arena.allocate(PAGE);
        final CountDownLatch first = new CountDownLatch(1);
        assertTrue(chain.fetch(0, 1, one, PageSource.DEMAND, 0, (t, f, c, st) -> first.countDown()));
        assertTrue(first.await(5, TimeUnit.SECONDS));
        assertEquals(0, seed.stats().requests(), "while the peer is up, the seed is not asked");
        peer.close();
        fetchAllAndCheck();
        assertTrue(seed.stats().requests() >= PAGES - 1, "the rest came from the seed");
        assertTrue(chain.connected(), "up while the seed is");
    }
}
