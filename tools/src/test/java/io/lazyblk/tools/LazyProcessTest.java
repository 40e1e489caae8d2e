package io.lazyblk.tools;

import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.BlkResponse;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import static io.lazyblk.tools.LazyProcesses.DEADLINE;
import static io.lazyblk.tools.LazyProcesses.IMAGE;
import static io.lazyblk.tools.LazyProcesses.IOERR;
import static io.lazyblk.tools.LazyProcesses.NO_BACKGROUND_FILL;
import static io.lazyblk.tools.LazyProcesses.OK;
import static io.lazyblk.tools.LazyProcesses.PAGE;
import static io.lazyblk.tools.LazyProcesses.PAGES;
import static io.lazyblk.tools.LazyProcesses.SECTOR;
import static io.lazyblk.tools.LazyProcesses.SIZE;
import static io.lazyblk.tools.LazyProcesses.assertReads;
import static io.lazyblk.tools.LazyProcesses.client;
import static io.lazyblk.tools.LazyProcesses.portOf;
import static io.lazyblk.tools.LazyProcesses.slice;
import static io.lazyblk.tools.LazyProcesses.spin;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Lazy mode's data path as it runs in production: {@code lazyblk image-server} and {@code lazyblk serve --source} in
 * their own JVMs ({@link LazyblkProcess}) talking TCP on loopback, the test front end on the engine's real vhost-user
 * socket: demand reads, one absent page under many readers, writes racing a fetch, a corrupt page, and the switch to
 * disk-only under load. Where a test must count what the provider served or corrupt a page, the provider runs in this
 * JVM ({@link io.lazyblk.pull.provider.ImageServer#stats()}) and only the engine is a child; such a test says so.
 * {@link LazyProcesses#NO_BACKGROUND_FILL} keeps pages absent until a read demands them.
 */
class LazyProcessTest {
    @TempDir
    Path dir;
    private LazyProcesses lazy;

    @BeforeEach
    void files(final TestInfo test) throws IOException {
        lazy = new LazyProcesses(dir, test);
    }

    @AfterEach
    void closeEverything() {
        lazy.close();
    }

    // ---------------------------------------------------------------- demand reads

    @Test
    void shouldReturnTheImagesBytesForDemandReadsOfAbsentPages() throws Exception {
        final LazyblkProcess provider = lazy.startProvider("provider", 0);
        final Path local = dir.resolve("local.img");
        final Path sock = dir.resolve("engine.sock");
        lazy.startEngine("engine", local, sock, portOf(provider), NO_BACKGROUND_FILL, 30, 1);
        // Inside one page, across a page boundary, the whole last page, and 16 pages in one request.
        final long[] offsets = {200L * PAGE + 4096, 101L * PAGE - 4096, (PAGES - 1L) * PAGE, 16L * PAGE};
        final int[] lengths = {8192, 8192, PAGE, 16 * PAGE};
        for (int i = 0; i < offsets.length; i++) {
            assertFalse(Arrays.equals(slice(lazy.golden, offsets[i], lengths[i]), TestImage.read(local, offsets[i], lengths[i])),
                "before the read, the local file does not hold the image at " + offsets[i] + ": the pages are absent");
        }
        final BlkClient blk = client(lazy.connect(sock, 1), 0, DEADLINE);
        for (int i = 0; i < offsets.length; i++) {
            assertReads(blk, lazy.golden, offsets[i], lengths[i], "demand read of " + lengths[i] + " bytes at " + offsets[i]);
            // A read inside one page is answered from the fetched bytes; the page reaches the local file right after.
            final long at = offsets[i];
            final int n = lengths[i];
            io.lazyblk.pagemap.Await.until("the fetched pages at " + at + " merged into the local file", Duration.ofSeconds(5),
                () -> Arrays.equals(slice(lazy.golden, at, n), TestImage.read(local, at, n)));
        }
    }

    @Test
    void shouldServeDemandReadsAndFillFromTheHostCacheOverSharedMemory() throws Exception {
        final Path cache = dir.resolve("cache.sock");
        final LazyblkProcess server = lazy.startHostCache("host-cache", cache);
        final Path local = dir.resolve("shm.img");
        final Path sock = dir.resolve("shm-engine.sock");
        final LazyblkProcess engine = lazy.startEngine("engine", local, sock, "8M", "shm://" + cache + "/" + IMAGE);
        final BlkClient blk = client(lazy.connect(sock, 1), 0, DEADLINE);
        assertReads(blk, lazy.golden, 230L * PAGE + 512, 8192, "a demand read of an absent page from the host cache");
        assertReads(blk, lazy.golden, 17L * PAGE - 4096, 3 * PAGE, "a read across absent pages");
        server.close(); // the mapping outlives the server: the engine keeps reading the host's page cache without it
        io.lazyblk.pagemap.Await.until("the fill finishing from the mapping", Duration.ofSeconds(30),
            () -> "disk-only".equals(StatusCommand.read(StatusServer.controlSocket(sock)).get("mode")));
        final Map<String, String> status = StatusCommand.read(StatusServer.controlSocket(sock));
        assertEquals("disk-only", status.get("mode"), "the fill finished from the mapping: " + status);
        engine.awaitLine("switched to disk-only", DEADLINE);
        assertArrayEquals(lazy.golden, Files.readAllBytes(local));
    }

    @Test
    void shouldFallBackFromRdmaToTcpWithOneLineSayingWhyAndServe() throws Exception {
        org.junit.jupiter.api.Assumptions.assumeFalse(io.lazyblk.pull.rdma.RdmaProbe.probe().usable(),
            "RDMA is usable on this host: the fallback is not taken");
        final LazyblkProcess provider = lazy.startProvider("provider", 0);
        final Path sock = dir.resolve("rdma-engine.sock");
        final LazyblkProcess engine = lazy.startEngine("engine", dir.resolve("rdma.img"), sock, NO_BACKGROUND_FILL,
            "rdma://127.0.0.1:" + portOf(provider) + "/" + IMAGE);
        final String line = engine.awaitLine("using tcp:// because", DEADLINE);
        assertTrue(line.contains(io.lazyblk.pull.rdma.RdmaProbe.probe().reason()), line);
        assertReads(client(lazy.connect(sock, 1), 0, DEADLINE), lazy.golden, 99L * PAGE + 1024, 4096, "a demand read after the fallback");
    }

    // ---------------------------------------------------------------- one absent page, many readers

    @Test
    void shouldCompleteManyConcurrentReadsOfOneAbsentPageWithItsBytesFromASingleProviderResponse() throws Exception {
        // In-process provider: its request counter proves the page was served once. The engine is a child.
        final ImageServer provider = lazy.startInProcessProvider();
        final Path sock = dir.resolve("engine.sock");
        final int queues = 4;
        lazy.startEngine("engine", dir.resolve("local.img"), sock, provider.port(), NO_BACKGROUND_FILL, 30, queues);
        final VhostUserFrontend fe = lazy.connect(sock, queues);
        final int page = 123;
        final List<ReadBurst> bursts = new ArrayList<>();
        for (int q = 0; q < queues; q++) {
            // 16 reads per queue: 4 KiB slices all over the page, every fourth one the whole page.
            final long[] offsets = new long[16];
            final int[] lengths = new int[16];
            for (int i = 0; i < 16; i++) {
                final boolean whole = i % 4 == 3;
                offsets[i] = (long) page * PAGE + (whole ? 0 : ((q * 5L + i * 3L) % 16) * 4096);
                lengths[i] = whole ? PAGE : 4096;
            }
            bursts.add(new ReadBurst(fe, q, offsets, lengths));
        }
        final ImageServer.Stats before = provider.stats();
        final CountDownLatch go = new CountDownLatch(1);
        final ExecutorService pool = lazy.threads(queues);
        final List<Future<?>> done = new ArrayList<>();
        for (final ReadBurst b : bursts) {
            done.add(pool.submit(() -> {
                go.await();
                b.submitAll();
                b.awaitAll(DEADLINE);
                return null;
            }));
        }
        go.countDown();
        for (final Future<?> f : done) {
            f.get(DEADLINE.toSeconds(), TimeUnit.SECONDS);
        }
        for (int q = 0; q < queues; q++) {
            final ReadBurst b = bursts.get(q);
            for (int i = 0; i < b.count(); i++) {
                assertEquals(OK, b.status(i), "status of read " + i + " on queue " + q);
                final byte[] data = b.data(i);
                assertArrayEquals(slice(lazy.golden, b.offset(i), data.length), data, "bytes of read " + i + " on queue " + q);
            }
        }
        final ImageServer.Stats after = provider.stats();
        assertEquals(1, after.requests() - before.requests(), "64 reads of one absent page cost one provider request");
        assertEquals(PAGE, after.bytes() - before.bytes(), "and one page of data");
    }

    // ---------------------------------------------------------------- writes racing the fetch

    @Test
    void shouldKeepTheGuestsBytesInsideWrittenRangesAndTheImageOutsideWhenWritesRaceTheFetchOfTheirPage() throws Exception {
        final LazyblkProcess provider = lazy.startProvider("provider", 0);
        final Path local = dir.resolve("local.img");
        final Path sock = dir.resolve("engine.sock");
        lazy.startEngine("engine", local, sock, portOf(provider), NO_BACKGROUND_FILL, 30, 2);
        final VhostUserFrontend fe = lazy.connect(sock, 2);
        final BlkClient reader = client(fe, 0, DEADLINE);
        final BlkClient writer = client(fe, 1, DEADLINE);
        final ExecutorService pool = lazy.threads(2);
        final byte[] model = lazy.golden.clone();
        final Random rnd = new Random(3);
        for (int round = 0; round < 48; round++) {
            final int page = 8 + 4 * round; // pages page and page + 1 are absent: no earlier round touched them
            final long start = (long) page * PAGE;
            final List<long[]> writes = new ArrayList<>(); // {offset, length}
            switch (round % 3) {
                case 0 -> { // two partial writes inside the page, one in each half (disjoint, so a racing read sees no third state)
                    for (int w = 0; w < 2; w++) {
                        final int sectors = 1 + rnd.nextInt(32);
                        final int half = PAGE / SECTOR / 2;
                        writes.add(new long[] {start + (long) (w * half + rnd.nextInt(half - sectors)) * SECTOR, (long) sectors * SECTOR});
                    }
                }
                case 1 -> writes.add(new long[] {start, PAGE}); // the whole page
                default -> writes.add(new long[] {start + PAGE - 8192, 16384}); // the page's tail and the next one's head
            }
            final byte[] before = slice(model, start, 2 * PAGE);
            final List<byte[]> data = new ArrayList<>();
            for (final long[] w : writes) {
                final byte[] d = TestImage.pattern((int) w[1], 1000 + round * 10L + data.size());
                data.add(d);
                System.arraycopy(d, 0, model, (int) w[0], d.length);
            }
            final byte[] after = slice(model, start, 2 * PAGE);
            // Stagger the writes 0-2.8 ms after the read (even rounds) or the read after the writes (odd rounds): a
            // demand read takes from a few hundred µs to a few ms here, so across rounds the writes land before the
            // fetch, while it is in flight or merging, and after the page is readable. A busy wait: sleeps are too coarse.
            final long staggerNanos = (round / 2 % 8) * 400_000L;
            final boolean readFirst = round % 2 == 0;
            final CountDownLatch go = new CountDownLatch(1);
            final Future<BlkResponse> read = pool.submit(() -> {
                go.await();
                spin(readFirst ? 0 : staggerNanos);
                return reader.read(start / SECTOR, PAGE);
            });
            final Future<Integer> write = pool.submit(() -> {
                go.await();
                spin(readFirst ? staggerNanos : 0);
                for (int w = 0; w < writes.size(); w++) {
                    final int status = writer.write(writes.get(w)[0] / SECTOR, data.get(w));
                    if (status != OK) {
                        return status;
                    }
                }
                return OK;
            });
            go.countDown();
            assertEquals(OK, write.get(DEADLINE.toSeconds(), TimeUnit.SECONDS), "round " + round + ": writes");
            final BlkResponse raced = read.get(DEADLINE.toSeconds(), TimeUnit.SECONDS);
            assertEquals(OK, raced.status(), "round " + round + ": the read that raced the writes");
            for (int k = 0; k < PAGE; k++) {
                final byte b = raced.data()[k];
                if (b != before[k] && b != after[k]) {
                    fail("round " + round + ": the racing read returned byte " + b + " at page offset " + k
                        + ", neither the image's (" + before[k] + ") nor the guest's (" + after[k] + ")");
                }
            }
            assertReads(reader, model, start, 2 * PAGE, "round " + round + ", after the race");
            assertArrayEquals(after, TestImage.read(local, start, 2 * PAGE), "round " + round + ": the local file");
        }
    }

    // ---------------------------------------------------------------- a corrupt page

    @Test
    void shouldFailReadsOfAPageThatArrivesCorruptTwiceWithIoerrAndKeepServingOtherPages() throws Exception {
        // In-process provider: only it has the corruption hook, and its counter shows the one refetch.
        final ImageServer provider = lazy.startInProcessProvider();
        final int bad = 77;
        provider.corruptServedPageForTesting(IMAGE, bad);
        final Path local = dir.resolve("local.img");
        final Path sock = dir.resolve("engine.sock");
        final LazyblkProcess engine = lazy.startEngine("engine", local, sock, provider.port(), NO_BACKGROUND_FILL, 30, 1);
        final BlkClient blk = client(lazy.connect(sock, 1), 0, DEADLINE);
        final long before = provider.stats().requests();
        final BlkResponse r = blk.read(((long) bad * PAGE + 4096) / SECTOR, 4096);
        assertEquals(VirtioBlk.statusName(IOERR), VirtioBlk.statusName(r.status()), "a read of the corrupt page");
        assertEquals(2, provider.stats().requests() - before, "the page was fetched, refetched once, then given up");
        engine.awaitLine("page " + bad + " failed its checksum twice", DEADLINE);

        assertReads(blk, lazy.golden, (bad - 1L) * PAGE, PAGE, "the page before");
        assertReads(blk, lazy.golden, (bad + 1L) * PAGE, 2 * PAGE, "the two pages after");
        assertReads(blk, lazy.golden, 200L * PAGE, 4096, "a far page");
        assertEquals(IOERR, blk.read((long) bad * PAGE / SECTOR, PAGE).status(), "a second read of the corrupt page: IOERR again");
        assertArrayEquals(new byte[PAGE], TestImage.read(local, (long) bad * PAGE, PAGE),
            "the corrupt bytes never reached the local file");
        assertTrue(engine.isAlive(), "the engine keeps running");
    }

    // ---------------------------------------------------------------- the switch to disk-only

    @Test
    void shouldSwitchToDiskOnlyUnderGuestLoadWithoutFailingARequestAndRestartDiskOnlyWithoutTheProvider() throws Exception {
        final LazyblkProcess provider = lazy.startProvider("provider", 0);
        final int port = portOf(provider);
        final Path local = dir.resolve("local.img");
        final Path sock = dir.resolve("engine.sock");
        final LazyblkProcess engine = lazy.startEngine("engine", local, sock, port, "4M", 30, 2);
        final byte[] model = lazy.golden.clone();
        final AtomicBoolean switched = new AtomicBoolean();
        final AtomicReference<String> failure = new AtomicReference<>();
        final VhostUserFrontend fe = lazy.connect(sock, 2);
        final ExecutorService pool = lazy.threads(2);
        final List<Future<Integer>> load = new ArrayList<>();
        for (int q = 0; q < 2; q++) {
            load.add(pool.submit(guestLoad(client(fe, q, DEADLINE), q, model, switched, failure)));
        }
        engine.awaitLine("switched to disk-only", Duration.ofSeconds(30));
        switched.set(true);
        int requests = 0;
        for (final Future<Integer> f : load) {
            requests += f.get(DEADLINE.toSeconds(), TimeUnit.SECONDS);
        }
        assertNull(failure.get());
        assertTrue(requests > 1000, "the guest kept the engine busy through the fill: " + requests + " requests");
        assertArrayEquals(model, Files.readAllBytes(local), "the local file is the image plus the guest's writes");

        lazy.untrack(fe);
        fe.close();
        engine.stop();
        provider.kill();
        final LazyblkProcess restarted = lazy.startEngine("engine-restarted", local, sock, port, "0", 30, 1);
        restarted.awaitLine("is complete", Duration.ZERO);
        final String serving = restarted.awaitLine("lazyblk: serving", Duration.ZERO);
        assertTrue(serving.contains("complete: from disk alone") && !serving.contains("filling lazily"), serving);
        final BlkClient blk = client(lazy.connect(sock, 1), 0, DEADLINE);
        for (long off = 0; off < SIZE; off += 1 << 20) {
            assertReads(blk, model, off, 1 << 20, "after the restart without a provider, MiB " + (off >> 20));
        }
        assertArrayEquals(model, Files.readAllBytes(local), "the local file after the restart");
    }

    /**
     * A guest thread on one queue: random reads and writes inside the pages of parity {@code parity} (the other
     * thread has the others), each read checked against {@code model}, which each write updates. Stops 300 requests
     * after {@code switched} turns true, or at the first failure (recorded in {@code failure}); returns its request count.
     */
    private static Callable<Integer> guestLoad(final BlkClient blk, final int parity, final byte[] model, final AtomicBoolean switched,
                                               final AtomicReference<String> failure) {
        return () -> {
            final Random rnd = new Random(parity + 11);
            int n = 0;
            int afterSwitch = 0;
            while (failure.get() == null && afterSwitch < 300) {
                if (switched.get()) {
                    afterSwitch++;
                }
                n++;
                final long page = 2L * rnd.nextInt(PAGES / 2) + parity;
                final int sectors = 1 + rnd.nextInt(PAGE / SECTOR);
                final long offset = page * PAGE + (long) rnd.nextInt(PAGE / SECTOR - sectors + 1) * SECTOR;
                final int length = sectors * SECTOR;
                if (rnd.nextInt(3) == 0) {
                    final byte[] d = new byte[length];
                    rnd.nextBytes(d);
                    final int status = blk.write(offset / SECTOR, d);
                    if (status != OK) {
                        failure.compareAndSet(null, "write of " + length + " bytes at " + offset + ": status " + status);
                    }
                    System.arraycopy(d, 0, model, (int) offset, length);
                } else {
                    final BlkResponse r = blk.read(offset / SECTOR, length);
                    if (r.status() != OK) {
                        failure.compareAndSet(null, "read of " + length + " bytes at " + offset + ": status " + r.status());
                    } else if (!Arrays.equals(slice(model, offset, length), r.data())) {
                        failure.compareAndSet(null, "read of " + length + " bytes at " + offset + " returned other bytes than the model");
                    }
                }
            }
            return n;
        };
    }
}
