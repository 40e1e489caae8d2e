package io.lazyblk.pull.tcp;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Instant;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Semaphore;

/**
 * Not a test: a manual measurement on loopback. TcpPageSource pulling a whole image (pipelined, background) against
 * a plain bulk TCP copy of the same file (sendfile to a 1 MiB read loop), and the round trip of one demand fetch on an
 * idle source. Run: java -cp ... io.lazyblk.pull.tcp.LoopbackThroughputMain [MiB] [pageKiB].
 */
public final class LoopbackThroughputMain {
    public static void main(final String[] args) throws Exception {
        final int mib = args.length > 0 ? Integer.parseInt(args[0]) : 512;
        final int page = (args.length > 1 ? Integer.parseInt(args[1]) : 64) << 10;
        final Path dir = Files.createTempDirectory("lzb-bench");
        final Path img = dir.resolve("bench.img");
        try (FileChannel ch = FileChannel.open(img, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            final ByteBuffer b = ByteBuffer.allocate(1 << 20);
            final Random r = new Random(1);
            for (int i = 0; i < mib; i++) {
                r.nextBytes(b.array());
                ch.write(b.clear());
            }
        }
        final long t0 = System.nanoTime();
        final var manifest = ManifestBuilder.build(img, page, ManifestBuilder.Progress.NONE);
        System.out.printf("manifest of %d MiB: %.0f MiB/s%n", mib, mib / ((System.nanoTime() - t0) / 1e9));
        final byte[] secret = "bench-secret-0123456789abcdef012".getBytes();
        try (ImageServer server = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0),
            List.of(new ImageExport("bench", img, manifest)), secret); Arena arena = Arena.ofShared()) {
            final String token = AccessToken.mint(secret, "bench", Instant.now().plusSeconds(3600));
            final MemorySegment dst = arena.allocate((long) mib << 20, 4096);
            for (final int pagesPerFetch : new int[] {1, 4, 16}) {
                for (int rep = 0; rep < 3; rep++) {
                    try (TcpPageSource s = TcpPageSource.connect(server.address(), "bench", token)) {
                        System.out.printf("TcpPageSource, %d page(s) of %d KiB per fetch: %.0f MiB/s%n", pagesPerFetch, page >> 10,
                            pullAll(s, dst, pagesPerFetch, page, mib));
                    }
                }
            }
            try (TcpPageSource s = TcpPageSource.connect(server.address(), "bench", token)) {
                final long[] rtt = new long[Integer.getInteger("rtts", 5000)];
                final MemorySegment one = arena.allocate(page);
                for (int i = -2000; i < rtt.length; i++) { // the first 2000: warm-up (JIT), not recorded
                    final CompletableFuture<Integer> f = new CompletableFuture<>();
                    final long a = System.nanoTime();
                    s.fetch(i % s.manifest().pageCount(), 1, one, PageSource.DEMAND, i, (tag, first, count, st) -> f.complete(st));
                    f.get();
                    if (i >= 0) {
                        rtt[i] = System.nanoTime() - a;
                    }
                }
                Arrays.sort(rtt);
                System.out.printf("demand fetch of one %d KiB page, idle source: p50 %d µs, p90 %d µs, p99 %d µs, max %d µs%n",
                    page >> 10, rtt[rtt.length / 2] / 1000, rtt[rtt.length * 9 / 10] / 1000, rtt[rtt.length * 99 / 100] / 1000,
                    rtt[rtt.length - 1] / 1000);
            }
        }
        for (int rep = 0; rep < 3; rep++) {
            System.out.printf("plain bulk TCP copy (sendfile -> 1 MiB reads): %.0f MiB/s%n", bulkCopy(img, mib));
        }
        Files.delete(img);
        Files.delete(dir);
    }

    private static double pullAll(final TcpPageSource s, final MemorySegment dst, final int pagesPerFetch, final int page,
                                  final int mib) throws Exception {
        final int pages = s.manifest().pageCount();
        final Semaphore window = new Semaphore(256);
        final PageSource.Listener l = (tag, first, count, st) -> {
            if (st != PageSource.OK) {
                throw new IllegalStateException("status " + st);
            }
            window.release();
        };
        final long t0 = System.nanoTime();
        for (int p = 0; p < pages; p += pagesPerFetch) {
            window.acquire();
            final int n = Math.min(pagesPerFetch, pages - p);
            while (!s.fetch(p, n, dst.asSlice((long) p * page, (long) n * page), PageSource.BACKGROUND, p, l)) {
                Thread.onSpinWait();
            }
        }
        window.acquire(256);
        return mib / ((System.nanoTime() - t0) / 1e9);
    }

    private static double bulkCopy(final Path img, final int mib) throws Exception {
        try (ServerSocketChannel ss = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            final Thread sender = Thread.ofPlatform().start(() -> {
                try (SocketChannel c = ss.accept(); FileChannel f = FileChannel.open(img)) {
                    long pos = 0;
                    while (pos < f.size()) {
                        pos += f.transferTo(pos, f.size() - pos, c);
                    }
                } catch (final Exception e) {
                    throw new RuntimeException(e);
                }
            });
            final long t0 = System.nanoTime();
            try (SocketChannel c = SocketChannel.open(ss.getLocalAddress())) {
                final ByteBuffer b = ByteBuffer.allocateDirect(1 << 20);
                long got = 0;
                while (got < (long) mib << 20) {
                    final int n = c.read(b.clear());
                    if (n < 0) {
                        break;
                    }
                    got += n;
                }
            }
            final double r = mib / ((System.nanoTime() - t0) / 1e9);
            sender.join();
            return r;
        }
    }
}
