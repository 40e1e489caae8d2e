package io.lazyblk.blk;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;

import java.lang.foreign.MemorySegment;
import java.util.Random;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicIntegerArray;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;

/**
 * A hand-written {@link PageSource} for the lazy store's tests: serves a golden image from memory, completing each
 * fetch on its own thread (out of order when {@code jitter} is on), and counts the fetches of every page. It can be
 * taken down ({@link #down}: fetches refused, as a provider that is unreachable), made to fail a share of fetches
 * (transient errors the store retries) and held ({@link #hold}: fetches accepted but not answered until released).
 * It records every fetch it accepts, in order, with its priority ({@link #asked}), and can offer a boot profile.
 */
final class MemorySource implements PageSource {
    private final byte[] golden;
    private final Manifest manifest;
    private final Random random;
    private final LinkedBlockingQueue<Fetch> queue = new LinkedBlockingQueue<>();
    private final Thread completer;
    final AtomicIntegerArray fetches;
    private volatile boolean down;
    private volatile boolean held;
    private volatile double failShare;
    /** Provider pages served with their first byte flipped, as a damaged network or a forger would. */
    private final java.util.Set<Integer> corrupt = java.util.concurrent.ConcurrentHashMap.newKeySet();
    private volatile boolean closed;
    private volatile int inFlight;
    /** Every fetch accepted, in the order it was asked: first provider page, priority and page count. */
    final java.util.concurrent.ConcurrentLinkedQueue<int[]> asked = new java.util.concurrent.ConcurrentLinkedQueue<>();
    private volatile int[] profile = new int[0];

    /** Background fetches accepted and not yet completed, and the most of them at once since {@link #resetBackgroundMax}. */
    private final java.util.concurrent.atomic.AtomicInteger backgroundNow = new java.util.concurrent.atomic.AtomicInteger();
    private final java.util.concurrent.atomic.AtomicInteger backgroundMax = new java.util.concurrent.atomic.AtomicInteger();
    final java.util.concurrent.atomic.AtomicLong backgroundFetches = new java.util.concurrent.atomic.AtomicLong();

    private record Fetch(int first, int count, MemorySegment dst, long tag, Listener listener, int priority) {
    }

    int backgroundInFlight() {
        return backgroundNow.get();
    }

    int backgroundMax() {
        return backgroundMax.get();
    }

    void resetBackgroundMax() {
        backgroundMax.set(backgroundNow.get());
    }

    MemorySource(final byte[] golden, final int pageSize, final long seed) {
        this.golden = golden;
        this.manifest = manifestOf(golden, pageSize);
        this.random = new Random(seed);
        this.fetches = new AtomicIntegerArray(manifest.pageCount());
        this.completer = Thread.ofPlatform().daemon().name("memory-source").start(this::run);
    }

    static Manifest manifestOf(final byte[] image, final int pageSize) {
        return Manifest.of(image, pageSize);
    }

    void down(final boolean d) {
        down = d;
    }

    void failShare(final double share) {
        failShare = share;
    }

    void hold(final boolean h) {
        held = h;
        if (!h) {
            synchronized (this) {
                notifyAll();
            }
        }
    }

    /** From now on provider page {@code page} arrives with its first byte flipped. */
    void corrupt(final int page) {
        corrupt.add(page);
    }

    /** The boot profile {@link #bootProfile()} offers: provider pages in fetch order. */
    void profile(final int... providerPages) {
        profile = providerPages.clone();
    }

    @Override
    public int[] bootProfile() {
        return profile.clone();
    }

    /** The first provider page of each fetch accepted so far, in order. */
    java.util.List<Integer> askedPages() {
        return asked.stream().map(a -> a[0]).toList();
    }

    int fetchesOf(final int page) {
        return fetches.get(page);
    }

    @Override
    public Manifest manifest() {
        return manifest;
    }

    @Override
    public boolean fetch(final int firstPage, final int count, final MemorySegment dst, final int priority, final long tag,
                         final Listener listener) {
        if (down || closed) {
            return false;
        }
        synchronized (this) {
            inFlight++;
        }
        asked.add(new int[] {firstPage, priority, count});
        if (priority == BACKGROUND) {
            backgroundFetches.incrementAndGet();
            backgroundMax.accumulateAndGet(backgroundNow.incrementAndGet(), Math::max);
        }
        queue.add(new Fetch(firstPage, count, dst, tag, listener, priority));
        return true;
    }

    private void run() {
        while (!closed || !queue.isEmpty()) {
            final Fetch f;
            try {
                f = queue.poll(1, TimeUnit.MILLISECONDS);
            } catch (final InterruptedException e) {
                return;
            }
            if (f == null) {
                continue;
            }
            synchronized (this) {
                while (held && !closed) {
                    try {
                        wait(10);
                    } catch (final InterruptedException e) {
                        return;
                    }
                }
            }
            int status = OK;
            if (closed) {
                status = UNAVAILABLE;
            } else if (failShare > 0 && random.nextDouble() < failShare) {
                status = FAILED;
            } else {
                final int ps = manifest.pageSize();
                final long from = (long) f.first * ps;
                final int len = (int) Math.min((long) f.count * ps, golden.length - from);
                MemorySegment.copy(golden, (int) from, f.dst, JAVA_BYTE, 0, len);
                for (int p = f.first; p < f.first + f.count; p++) {
                    fetches.incrementAndGet(p);
                    if (corrupt.contains(p)) {
                        final long at = (long) (p - f.first) * ps;
                        f.dst.set(JAVA_BYTE, at, (byte) ~f.dst.get(JAVA_BYTE, at));
                    }
                }
            }
            synchronized (this) {
                inFlight--;
            }
            if (f.priority == BACKGROUND) {
                backgroundNow.decrementAndGet();
            }
            f.listener.onFetched(f.tag, f.first, f.count, status);
        }
    }

    @Override
    public int maxPagesPerFetch() {
        return 64;
    }

    @Override
    public synchronized int inFlight() {
        return inFlight;
    }

    @Override
    public boolean connected() {
        return !down && !closed;
    }

    @Override
    public void close() {
        closed = true;
        synchronized (this) {
            notifyAll();
        }
        try {
            completer.join(10_000);
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
