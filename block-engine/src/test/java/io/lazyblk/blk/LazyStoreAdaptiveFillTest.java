package io.lazyblk.blk;

import io.lazyblk.pagemap.Await;
import io.lazyblk.pagemap.Manifest;
import io.lazyblk.persistence.LocalImage;
import io.lazyblk.persistence.PageStateFile;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The adaptive fill, proved with counters: a guest that keeps missing holds the background to one run in flight (as
 * the source sees it) while the fill still progresses at its floor; once the guest goes idle the window opens to every
 * run buffer and the rest of the image streams in. The local file is a real file; the source serves from memory.
 */
class LazyStoreAdaptiveFillTest {
    private static final int PAGE = 16 << 10;
    private static final int PAGES = 4096; // 64 MiB: at the floor (16 MiB/s) the demand phase cannot finish the fill
    private static final int SIZE = PAGE * PAGES;

    @TempDir
    Path dir;
    private final List<AutoCloseable> open = new ArrayList<>();

    @AfterEach
    void closeAll() throws Exception {
        for (int i = open.size() - 1; i >= 0; i--) {
            open.get(i).close();
        }
    }

    @Test
    void shouldBackOffToOneRunUnderADemandHeavyGuestAndOpenTheWindowWhenItGoesIdle() throws Exception {
        final byte[] golden = new byte[SIZE];
        new Random(12).nextBytes(golden);
        final MemorySource src = new MemorySource(golden, PAGE, 13);
        open.add(src);
        final Manifest m = src.manifest();
        final Path image = dir.resolve("disk.img");
        LocalImage.createReserved(image, SIZE);
        final PageStateFile state = PageStateFile.openOrCreate(PageStateFile.beside(image), m.size(), m.pageSize(), m.digest());
        final LazyStore store = new LazyStore(m, LocalImage.open(image, false), state, src,
            new LazyStore.Options("golden", 8L << 20, 0, 10_000_000_000L));
        open.add(store);
        final int maxWindow = store.fillStats().fillWindow();
        assertTrue(maxWindow > 1, "more than one run buffer: " + maxWindow);

        // A booting guest: 4 KiB reads of pages not here yet, from the end of the image back, one every 1 ms (its
        // think time between misses, not a wait for anything).
        final AtomicBoolean stop = new AtomicBoolean();
        final AtomicReference<Throwable> failed = new AtomicReference<>();
        final Thread guest = Thread.ofPlatform().name("demand-heavy-guest").start(() -> {
            try (TestRequest r = new TestRequest(4096)) {
                for (int p = PAGES - 1; p >= 0 && !stop.get(); p--) {
                    if (store.table.readable(p)) {
                        continue;
                    }
                    final long at = (long) p * PAGE + 4096;
                    assertEquals(0, r.run(store, IoRequest.READ, at, 4096));
                    assertArrayEquals(Arrays.copyOfRange(golden, (int) at, (int) at + 4096), r.bytes(4096));
                    LockSupport.parkNanos(1_000_000);
                }
            } catch (final Throwable t) {
                failed.set(t);
            }
        });
        try {
            Await.until("the fill backs off for the guest's misses", Duration.ofSeconds(10),
                () -> store.fillStats().fillMode().equals("backoff") && store.fillStats().fillBackoffs() >= 1);
            // What went out while the guest was idle (before its first miss) drains; from then on, one run at a time.
            Await.until("runs issued before the back-off land", Duration.ofSeconds(10), () -> src.backgroundInFlight() <= 1);
            src.resetBackgroundMax();
            final long runsAtBackoff = store.fillStats().backgroundRuns();
            final long missesAtBackoff = store.fillStats().demandFetches();
            Await.until("the fill keeps going at its floor while the guest misses", Duration.ofSeconds(10),
                () -> store.fillStats().backgroundRuns() >= runsAtBackoff + 3 && store.fillStats().demandFetches() >= missesAtBackoff + 30);
            assertEquals("backoff", store.fillStats().fillMode(), "still backed off while the misses go on");
            assertEquals(1, store.fillStats().fillWindow());
            assertTrue(src.backgroundMax() <= 1, "background fetches in flight at the source while backed off: "
                + src.backgroundMax());
            assertTrue(store.localPages() < PAGES, "the fill did not finish while backed off");
        } finally {
            stop.set(true);
            guest.join();
        }
        assertNull(failed.get(), () -> "the guest's reads failed: " + failed.get());
        assertTrue(store.fillStats().fillBackedOffNanos() > 0);

        // The guest goes idle: the window opens to every run buffer, and the rest of the image streams in.
        Await.until("the fill sees the guest idle", Duration.ofSeconds(10), () -> store.fillStats().fillMode().equals("idle"));
        assertEquals(maxWindow, store.fillStats().fillWindow());
        final long bytesAtIdle = store.bytesFetchedInBackground();
        src.resetBackgroundMax();
        assertTrue(store.awaitDiskOnly(Duration.ofSeconds(60).toNanos()), "the fill completes once the guest is idle");
        assertTrue(src.backgroundMax() > 1, "more than one run in flight once idle: " + src.backgroundMax());
        assertTrue(store.bytesFetchedInBackground() > bytesAtIdle);
        for (int p = 0; p < PAGES; p++) {
            assertEquals(1, src.fetchesOf(p), "page " + p + " fetched once");
        }
        assertArrayEquals(golden, Files.readAllBytes(image));
    }
}
