package io.lazyblk.pull;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.shm.ShmPageSource;
import io.lazyblk.pull.tcp.TcpPageSource;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.tools.BareTcp;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OperationsPerInvocation;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.InetSocketAddress;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Page sources against the raw cost of what they do, in one run: a demand fetch of one 64 KiB page over shm:// and
 * tcp:// (SampleTime: p50/p99) against memcpy of a page out of a mapping and a bare TCP round trip; and a fill of
 * 64 MiB (1024 pages, a window of 64 buffers) over both against memcpy and a bare bulk TCP copy (ops = pages).
 * Real servers on loopback and a real mapping; the image is 256 MiB of random bytes in the page cache.
 *
 * <pre>java -jar jmh/target/benchmarks.jar PageSourceBenchmark</pre>
 */
@State(Scope.Benchmark)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 5, time = 2)
public class PageSourceBenchmark {
    private static final int PAGE = 64 << 10;
    private static final int IMAGE = 256 << 20;
    private static final int PAGES = IMAGE / PAGE;
    private static final int FILL_PAGES = 1024;
    private static final int WINDOW = 64;
    private static final byte[] SECRET = "jmh-secret-0123456789abcdef01234".getBytes();

    private Path dir;
    private ImageServer server;
    private PageSource shm;
    private PageSource tcp;
    private BareTcp bare;
    private BareTcp bareFile;
    private Arena arena;
    private MemorySegment map;
    private FileChannel file;
    private MemorySegment one;
    private java.nio.ByteBuffer oneView;
    private java.nio.ByteBuffer[] ringViews;
    private MemorySegment[] ring;
    private final SplittableRandom random = new SplittableRandom(1);
    private final AtomicInteger done = new AtomicInteger();
    private final PageSource.Listener count = (tag, first, n, status) -> done.incrementAndGet();
    private int fillStart;

    @Setup(Level.Trial)
    public void setUp() throws Exception {
        dir = Files.createTempDirectory("lazyblk-jmh");
        final Path image = dir.resolve("image.raw");
        final byte[] chunk = new byte[1 << 20];
        final SplittableRandom r = new SplittableRandom(7);
        try (var out = Files.newOutputStream(image)) {
            for (int i = 0; i < IMAGE / chunk.length; i++) {
                for (int j = 0; j < chunk.length; j++) {
                    chunk[j] = (byte) r.nextInt();
                }
                out.write(chunk);
            }
        }
        final Path sock = dir.resolve("cache.sock");
        server = ImageServer.start(new InetSocketAddress("127.0.0.1", 0), sock,
            List.of(new ImageExport("img", image, ManifestBuilder.build(image, PAGE, ManifestBuilder.Progress.NONE))), SECRET);
        final String token = AccessToken.mint(SECRET, "img", Instant.now().plusSeconds(3600));
        shm = ShmPageSource.connect(sock, "img", token, Duration.ofSeconds(10));
        tcp = TcpPageSource.connect(server.address(), "img", token);
        bare = new BareTcp(PAGE);
        bareFile = new BareTcp(PAGE, image);
        arena = Arena.ofShared();
        try (FileChannel ch = FileChannel.open(image)) {
            map = ch.map(FileChannel.MapMode.READ_ONLY, 0, IMAGE, arena);
        }
        file = FileChannel.open(image);
        one = arena.allocate(PAGE, 4096);
        oneView = one.asByteBuffer();
        ring = new MemorySegment[WINDOW];
        ringViews = new java.nio.ByteBuffer[WINDOW];
        for (int i = 0; i < WINDOW; i++) {
            ring[i] = arena.allocate(PAGE, 4096);
            ringViews[i] = ring[i].asByteBuffer();
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() throws Exception {
        shm.close();
        tcp.close();
        bare.close();
        bareFile.close();
        file.close();
        server.close();
        arena.close();
        try (var files = Files.list(dir)) {
            for (final Path p : files.toList()) {
                Files.deleteIfExists(p);
            }
        }
        Files.deleteIfExists(dir);
    }

    private void demand(final PageSource s) {
        demand(s, false);
    }

    /**
     * One demand fetch, waited for by spinning, or ({@code poll}) by polling the source and yielding between polls,
     * as a virtqueue's thread does.
     */
    private void demand(final PageSource s, final boolean poll) {
        final int before = done.get();
        while (!s.fetch(random.nextInt(PAGES), 1, one, PageSource.DEMAND, 0, count)) {
            Thread.onSpinWait();
        }
        while (done.get() == before) {
            if (!poll) {
                Thread.onSpinWait();
            } else if (s.poll() == 0) {
                Thread.yield(); // as a queue's thread idles between passes (QueueAgent)
            }
        }
    }

    @Benchmark
    @BenchmarkMode(Mode.SampleTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    public void missShm() {
        demand(shm);
    }

    @Benchmark
    @BenchmarkMode(Mode.SampleTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    public void rawMemcpyPage() {
        MemorySegment.copy(map, (long) random.nextInt(PAGES) * PAGE, one, 0, PAGE);
    }

    /** pread(2) of one page of the image file: what an shm:// fetch does (ShmReads), so missShm's raw cost. */
    @Benchmark
    @BenchmarkMode(Mode.SampleTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    public void rawPreadPage() throws Exception {
        readPage(oneView, (long) random.nextInt(PAGES) * PAGE);
    }

    private void readPage(final java.nio.ByteBuffer dst, final long at) throws java.io.IOException {
        dst.clear();
        while (dst.hasRemaining()) {
            file.read(dst, at + dst.position());
        }
    }

    @Benchmark
    @BenchmarkMode(Mode.SampleTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    public void missTcp() {
        demand(tcp);
    }

    /** The same, the waiting thread reading the answer itself ({@code PageSource.poll()}), as the engine's queues do. */
    @Benchmark
    @BenchmarkMode(Mode.SampleTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    public void missTcpPolled() {
        demand(tcp, true);
    }

    @Benchmark
    @BenchmarkMode(Mode.SampleTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    public void rawTcpRoundTrip() throws Exception {
        bare.roundTrip();
    }

    /** The bare round trip of a random page of the image, sent from the page cache as a miss's page is (sendfile). */
    @Benchmark
    @BenchmarkMode(Mode.SampleTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    public void rawTcpFileRoundTrip() throws Exception {
        bareFile.roundTrip((long) random.nextInt(PAGES) * PAGE);
    }

    /** 1024 background fetches kept 64 deep, as the filler keeps its window full. */
    private void fill(final PageSource s) {
        final int start = done.get();
        final int first = fillStart;
        fillStart = (fillStart + FILL_PAGES) % PAGES;
        for (int i = 0; i < FILL_PAGES; i++) {
            while (i - (done.get() - start) >= WINDOW) {
                Thread.onSpinWait();
            }
            while (!s.fetch(first + i, 1, ring[i % WINDOW], PageSource.BACKGROUND, i, count)) {
                Thread.onSpinWait();
            }
        }
        while (done.get() - start < FILL_PAGES) {
            Thread.onSpinWait();
        }
    }

    @Benchmark
    @BenchmarkMode(Mode.Throughput)
    @OutputTimeUnit(TimeUnit.SECONDS)
    @OperationsPerInvocation(FILL_PAGES)
    public void fillShm() {
        fill(shm);
    }

    @Benchmark
    @BenchmarkMode(Mode.Throughput)
    @OutputTimeUnit(TimeUnit.SECONDS)
    @OperationsPerInvocation(FILL_PAGES)
    public void rawMemcpyFill() {
        final long first = (long) fillStart * PAGE;
        fillStart = (fillStart + FILL_PAGES) % PAGES;
        for (int i = 0; i < FILL_PAGES; i++) {
            MemorySegment.copy(map, first + (long) i * PAGE, ring[i % WINDOW], 0, PAGE);
        }
    }

    @Benchmark
    @BenchmarkMode(Mode.Throughput)
    @OutputTimeUnit(TimeUnit.SECONDS)
    @OperationsPerInvocation(FILL_PAGES)
    public void rawPreadFill() throws Exception {
        final long first = (long) fillStart * PAGE;
        fillStart = (fillStart + FILL_PAGES) % PAGES;
        for (int i = 0; i < FILL_PAGES; i++) {
            readPage(ringViews[i % WINDOW], first + (long) i * PAGE);
        }
    }

    @Benchmark
    @BenchmarkMode(Mode.Throughput)
    @OutputTimeUnit(TimeUnit.SECONDS)
    @OperationsPerInvocation(FILL_PAGES)
    public void fillTcp() {
        fill(tcp);
    }

    @Benchmark
    @BenchmarkMode(Mode.Throughput)
    @OutputTimeUnit(TimeUnit.SECONDS)
    @OperationsPerInvocation(FILL_PAGES)
    public void rawTcpBulk() throws Exception {
        bare.exchange((long) FILL_PAGES * PAGE);
    }
}
