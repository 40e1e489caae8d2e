package io.lazyblk.pull.tcp;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pagemap.PageSourceContract;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The PageSource contract over real TCP on loopback, against a real ImageServer serving a real file. */
class TcpPageSourceTest extends PageSourceContract {
    private static final byte[] SECRET = "contract-secret-0123456789abcdef".getBytes();
    private final List<ImageServer> servers = new ArrayList<>();

    @Override
    protected PageSource open(final Path image, final int pageSize) throws Exception {
        final ImageServer server = serve(image, pageSize, servers);
        return TcpPageSource.connect(server.address(), "contract", token());
    }

    /** A provider on loopback exporting {@code image} as "contract", added to {@code servers} to close after the test. */
    static ImageServer serve(final Path image, final int pageSize, final List<ImageServer> servers) throws Exception {
        final ImageServer server = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0),
            List.of(new ImageExport("contract", image, ManifestBuilder.build(image, pageSize, ManifestBuilder.Progress.NONE))), SECRET);
        servers.add(server);
        return server;
    }

    /** A token for "contract", valid for an hour. */
    static String token() {
        return AccessToken.mint(SECRET, "contract", Instant.now().plus(Duration.ofHours(1)));
    }

    /**
     * A thread that polls the source while its demand fetches are out (as a virtqueue's thread does) gets their
     * completions itself, each exactly once and with the image's bytes, while the transport thread, woken by the same
     * responses, competes for them.
     */
    @Test
    void shouldDeliverDemandCompletionsToACallerThatPolls() throws Exception {
        try (PageSource s = open(image, PAGE); Arena arena = Arena.ofShared()) {
            final MemorySegment dst = arena.allocate(PAGE, 4096);
            final Thread caller = Thread.currentThread();
            final AtomicInteger status = new AtomicInteger();
            final AtomicInteger calls = new AtomicInteger();
            final AtomicReference<Thread> on = new AtomicReference<>();
            final PageSource.Listener listener = (tag, first, count, st) -> {
                on.set(Thread.currentThread());
                calls.incrementAndGet();
                status.set(st); // last: the poll loop below ends on it
            };
            int onCaller = 0;
            int polled = 0;
            for (int i = 0; i < 200; i++) {
                final int page = (i * 7) % 64;
                status.set(-1);
                calls.set(0);
                assertTrue(s.fetch(page, 1, dst, PageSource.DEMAND, i, listener), "fetch " + i + " accepted");
                final long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
                while (status.get() < 0) {
                    polled += s.poll();
                    assertTrue(System.nanoTime() < deadline, "fetch " + i + " of page " + page + " completed within 10 s");
                }
                assertEquals(PageSource.OK, status.get(), "fetch " + i + " status");
                assertImageBytes(dst, page, 1);
                if (on.get() == caller) {
                    onCaller++;
                }
                assertEquals(0, s.poll(), "nothing left to complete after fetch " + i);
                assertEquals(1, calls.get(), "fetch " + i + " completed once");
            }
            assertEquals(onCaller, polled, "poll() counts what it completed");
            assertTrue(onCaller > 0, "at least one of 200 completions came through poll() (" + onCaller + ")");
        }
    }

    @Override
    protected void cleanUp() {
        servers.forEach(ImageServer::close);
    }
}
