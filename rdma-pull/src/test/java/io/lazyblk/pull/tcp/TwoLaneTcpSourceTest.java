package io.lazyblk.pull.tcp;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pagemap.PageSourceContract;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The PageSource contract over two real TCP lanes on loopback, and what the second lane is for. */
class TwoLaneTcpSourceTest extends PageSourceContract {
    private final List<ImageServer> servers = new ArrayList<>();

    @Override
    protected PageSource open(final Path image, final int pageSize) throws Exception {
        final ImageServer server = TcpPageSourceTest.serve(image, pageSize, servers);
        return TwoLaneTcpSource.connect(server.address(), "contract", TcpPageSourceTest.token(), TcpPageSource.Options.defaults());
    }

    @Override
    protected void cleanUp() {
        servers.forEach(ImageServer::close);
    }

    /**
     * Background responses the engine has not taken yet (here: a listener that blocks, standing in for a full window
     * of background data on the wire) must not hold up a demand fetch. Over one connection this demand fetch would
     * not complete until the background lane moved again.
     */
    @Test
    void shouldCompleteADemandFetchWhileTheBackgroundLaneIsHeldUp() throws Exception {
        try (PageSource s = open(image, PAGE); Arena arena = Arena.ofShared()) {
            final CountDownLatch held = new CountDownLatch(1);
            final CountDownLatch release = new CountDownLatch(1);
            final AtomicInteger backgroundDone = new AtomicInteger();
            final PageSource.Listener backgroundListener = (tag, first, count, status) -> {
                held.countDown();
                awaitQuietly(release);
                backgroundDone.incrementAndGet();
            };
            final int background = 8;
            final MemorySegment bg = arena.allocate((long) background * PAGE);
            for (int i = 0; i < background; i++) {
                assertTrue(s.fetch(i, 1, bg.asSlice((long) i * PAGE, PAGE), PageSource.BACKGROUND, i, backgroundListener));
            }
            assertTrue(held.await(30, TimeUnit.SECONDS), "the first background fetch should complete");
            final CountDownLatch demandDone = new CountDownLatch(1);
            final AtomicInteger demandStatus = new AtomicInteger(-1);
            final MemorySegment d = arena.allocate(PAGE);
            assertTrue(s.fetch(40, 1, d, PageSource.DEMAND, 99, (tag, first, count, status) -> {
                demandStatus.set(status);
                demandDone.countDown();
            }));
            final boolean demandCompleted = demandDone.await(30, TimeUnit.SECONDS);
            release.countDown();
            assertTrue(demandCompleted, "the demand fetch should complete while the background lane is held up");
            assertEquals(PageSource.OK, demandStatus.get());
            assertImageBytes(d, 40, 1);
            awaitCondition(() -> backgroundDone.get() == background, "every background fetch completes once released");
        }
    }

    /**
     * The background lane's work is what nobody waits for: its transport thread, and the provider's thread serving that
     * connection, drop to nice 10 (they give way to the guest's vCPU and the demand lane when cores are short); the
     * demand lane's stay at 0. Read back from the kernel (/proc), as an operator's {@code top -H} would show them.
     */
    @Test
    void shouldRunTheBackgroundLaneAndItsProviderThreadAtALowerCpuWeight() throws Exception {
        try (PageSource s = open(image, PAGE); Arena arena = Arena.ofShared()) {
            final MemorySegment d = arena.allocate(PAGE);
            for (final int priority : new int[] {PageSource.BACKGROUND, PageSource.DEMAND}) {
                final CountDownLatch done = new CountDownLatch(1);
                assertTrue(s.fetch(3, 1, d, priority, 0, (tag, first, count, status) -> done.countDown()));
                assertTrue(done.await(30, TimeUnit.SECONDS));
            }
            awaitCondition(() -> io.lazyblk.sys.Threads.niceValues("lazyblk-tcp-con").equals(List.of(0, 10)),
                "transport threads at nice 0 (demand) and 10 (background): " + io.lazyblk.sys.Threads.niceValues("lazyblk-tcp-con"));
            // The provider's acceptor shares the kernel name (lazyblk-provider-accept): nice 0 as well.
            awaitCondition(() -> io.lazyblk.sys.Threads.niceValues("lazyblk-provide").equals(List.of(0, 0, 10)),
                "the provider's acceptor and demand connection at nice 0, its background connection at 10: "
                    + io.lazyblk.sys.Threads.niceValues("lazyblk-provide"));
        }
    }

    /** A refused token is the caller's error on either lane: it comes back as the provider's refusal, with no source. */
    @Test
    void shouldRefuseABadTokenWithTheProvidersRefusal() throws Exception {
        final ImageServer server = TcpPageSourceTest.serve(image, PAGE, servers);
        final String forged = AccessToken.mint("another-secret-0123456789abcdef!".getBytes(), "contract",
            Instant.now().plus(Duration.ofHours(1)));
        final io.lazyblk.pull.provider.ProviderRefusedException e = org.junit.jupiter.api.Assertions.assertThrows(
            io.lazyblk.pull.provider.ProviderRefusedException.class,
            () -> TwoLaneTcpSource.connect(server.address(), "contract", forged, TcpPageSource.Options.defaults()));
        assertEquals(io.lazyblk.pull.provider.ProviderProtocol.HelloStatus.BAD_TOKEN, e.status(), e.getMessage());
    }

    /** While one lane is down, both priorities go to the other; a fetch fails only when both are down. */
    @Test
    void shouldSendFetchesToTheOtherLaneWhileOneIsDown() {
        final FakeLane demand = new FakeLane();
        final FakeLane background = new FakeLane();
        final TwoLaneTcpSource s = new TwoLaneTcpSource(demand, background);
        final PageSource.Listener none = (tag, first, count, status) -> { };
        s.fetch(0, 1, MemorySegment.NULL, PageSource.DEMAND, 0, none);
        s.fetch(1, 1, MemorySegment.NULL, PageSource.BACKGROUND, 0, none);
        assertEquals(1, demand.fetches);
        assertEquals(1, background.fetches);
        demand.up = false;
        assertTrue(s.connected());
        s.fetch(2, 1, MemorySegment.NULL, PageSource.DEMAND, 0, none);
        assertEquals(2, background.fetches, "a demand fetch takes the background lane while its own is down");
        demand.up = true;
        background.up = false;
        s.fetch(3, 1, MemorySegment.NULL, PageSource.BACKGROUND, 0, none);
        assertEquals(2, demand.fetches, "a background fetch takes the demand lane while its own is down");
        demand.up = false;
        assertFalse(s.connected());
        assertFalse(s.fetch(4, 1, MemorySegment.NULL, PageSource.DEMAND, 0, none), "with both down, the lane's own refusal stands");
        assertEquals(3, demand.fetches);
        s.close();
        assertTrue(demand.closed && background.closed);
    }

    /** A poller (a virtqueue's thread) takes demand completions only: background pages stay with their lane's thread. */
    @Test
    void shouldPollTheDemandLaneOnly() {
        final FakeLane demand = new FakeLane();
        final FakeLane background = new FakeLane();
        final TwoLaneTcpSource s = new TwoLaneTcpSource(demand, background);
        demand.ready = 2;
        background.ready = 3;
        assertEquals(2, s.poll());
        assertEquals(1, demand.polls);
        assertEquals(0, background.polls);
        s.close();
    }

    private static void awaitQuietly(final CountDownLatch l) {
        try {
            l.await(60, TimeUnit.SECONDS);
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** A lane that counts the fetches it is given and refuses them while down. */
    private static final class FakeLane implements PageSource {
        boolean up = true;
        int fetches;
        boolean closed;
        int ready;
        int polls;

        @Override
        public Manifest manifest() {
            throw new UnsupportedOperationException();
        }

        @Override
        public boolean fetch(final int firstPage, final int count, final MemorySegment dst, final int priority, final long tag,
                             final Listener listener) {
            fetches++;
            return up;
        }

        @Override
        public int maxPagesPerFetch() {
            return 1;
        }

        @Override
        public int inFlight() {
            return 0;
        }

        @Override
        public boolean connected() {
            return up;
        }

        @Override
        public int poll() {
            polls++;
            final int n = ready;
            ready = 0;
            return n;
        }

        @Override
        public void close() {
            closed = true;
        }
    }
}
