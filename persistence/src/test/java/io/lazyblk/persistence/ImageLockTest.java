package io.lazyblk.persistence;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The image lock over real files: exclusive against every other open of the file (this process's too, as OFD locks
 * are per open file, not per process), shared between read-only engines, let go on close, and waited for with a bound.
 */
class ImageLockTest {
    @TempDir
    Path dir;

    @Test
    void shouldKeepASecondWriterOutUntilTheFirstClosesAndLetReadersShare() throws Exception {
        final Path img = Files.write(dir.resolve("disk.img"), new byte[4096]);
        try (ImageLock w = ImageLock.tryAcquire(img, false)) {
            assertNotNull(w);
            assertNull(ImageLock.tryAcquire(img, false), "a second writer is refused, in the same process too");
            assertNull(ImageLock.tryAcquire(img, true), "and so is a reader");
        }
        try (ImageLock r1 = ImageLock.tryAcquire(img, true); ImageLock r2 = ImageLock.tryAcquire(img, true)) {
            assertNotNull(r1);
            assertNotNull(r2, "read-only engines share the image");
            assertNull(ImageLock.tryAcquire(img, false), "a writer waits for the readers");
        }
        try (ImageLock w = ImageLock.tryAcquire(img, false)) {
            assertNotNull(w, "free again once every holder closed");
        }
    }

    @Test
    void shouldWaitForTheLockWithABoundAndSaySoOnce() throws Exception {
        final Path img = Files.write(dir.resolve("disk.img"), new byte[4096]);
        final AtomicInteger said = new AtomicInteger();
        final ImageLock held = ImageLock.tryAcquire(img, false);
        assertNull(ImageLock.acquire(img, false, Duration.ofMillis(100), said::incrementAndGet), "still held after the bound");
        assertEquals(1, said.get(), "the wait is announced once");
        final java.util.concurrent.CountDownLatch waiting = new java.util.concurrent.CountDownLatch(1);
        final CompletableFuture<ImageLock> waiter = CompletableFuture.supplyAsync(() -> {
            try {
                return ImageLock.acquire(img, false, Duration.ofSeconds(10), waiting::countDown);
            } catch (final java.io.IOException e) {
                throw new RuntimeException(e);
            }
        });
        assertTrue(waiting.await(10, TimeUnit.SECONDS), "the second open found the lock held and waits");
        held.close();
        try (ImageLock got = waiter.get(10, TimeUnit.SECONDS)) {
            assertNotNull(got, "taken once the holder let go");
        }
    }
}
