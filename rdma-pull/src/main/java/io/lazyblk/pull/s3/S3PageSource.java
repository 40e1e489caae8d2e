package io.lazyblk.pull.s3;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.provider.ProviderProtocol;
import org.agrona.concurrent.ManyToManyConcurrentArrayQueue;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

/**
 * An image in S3 ({@code s3://BUCKET/KEY}) as a page source: its manifest is the object {@code KEY.lzbmanifest} beside
 * it (written by {@code lazyblk publish}), and pages are ranged GETs of the object, each only if its ETag is still
 * the one seen at open ({@code If-Match}: an object replaced under the engine fails its fetches rather than mixing two
 * images). S3's credentials decide who may read; no lazyblk token. The page map checks every page against the
 * manifest, as for any source ({@link #verifiesPages()} is false).
 *
 * <p>Requests: {@link #fetch} queues the fetch (preallocated slots, lock-free queues) and wakes a worker; each worker
 * thread runs one GET at a time, so the workers bound the connections. {@code demandWorkers} of them take only demand
 * fetches, so a guest's miss is issued at once even while every other worker is busy with the fill's large ranges;
 * the others take demand first, then background. A demand fetch is tried a few times quickly ({@link S3Client.Retry#DEMAND})
 * and then completes {@link #UNAVAILABLE} (the engine asks again, or the next source); a background one retries with
 * patient backoff ({@link S3Client.Retry#BACKGROUND}), as S3 asks of clients it answers 503 SlowDown. Refusals a retry
 * cannot mend (403, 404, 412) complete {@link #FAILED}, with one log line per kind every 10 s at most.
 *
 * <p>The fill should ask for large ranges: {@link #preferredRunBytes()} is {@value #RUN_BYTES} bytes (an S3 GET costs
 * a round trip of about a millisecond even on loopback, eight times a tcp:// miss; in MiB ranges the store's throughput
 * shows). Thread-safety: as {@link PageSource}.
 */
public final class S3PageSource implements PageSource {
    private static final Logger LOG = LoggerFactory.getLogger(S3PageSource.class);
    /** Bytes one fetch may ask for. */
    static final int MAX_FETCH_BYTES = 8 << 20;
    /** The fill's run: 4 MiB, so that four workers keep 16 MiB on the wire. */
    static final int RUN_BYTES = 4 << 20;
    /** Fetches queued or running at most (slots are preallocated). */
    private static final int SLOTS = 512;
    private static final long LOG_EVERY_NANOS = 10_000_000_000L;

    /**
     * @param demandWorkers threads that take demand fetches only
     * @param workers threads that take demand, then background fetches
     * @param requestTimeout bound on one GET
     */
    public record Options(int demandWorkers, int workers, Duration requestTimeout) {
        public static Options defaults() {
            return new Options(2, 4, Duration.ofSeconds(30));
        }

        public Options {
            if (demandWorkers < 1 || workers < 1) {
                throw new IllegalArgumentException("demandWorkers " + demandWorkers + ", workers " + workers);
            }
        }
    }

    private final S3Client client;
    private final S3Location location;
    private final Manifest manifest;
    private final String etag;
    private final int pageSize;
    private final long size;
    private final Slot[] slots = new Slot[SLOTS];
    private final ManyToManyConcurrentArrayQueue<Slot> free = new ManyToManyConcurrentArrayQueue<>(SLOTS);
    private final ManyToManyConcurrentArrayQueue<Slot> demand = new ManyToManyConcurrentArrayQueue<>(SLOTS);
    private final ManyToManyConcurrentArrayQueue<Slot> background = new ManyToManyConcurrentArrayQueue<>(SLOTS);
    private final Worker[] workers;
    private final AtomicInteger inFlight = new AtomicInteger();
    private final AtomicBoolean closed = new AtomicBoolean();
    private final AtomicLong lastLog = new AtomicLong(System.nanoTime() - LOG_EVERY_NANOS);
    /** Cleared by a failure to reach S3, set by any answer; read by {@link #connected()}. */
    private volatile boolean up = true;

    private S3PageSource(final S3Client client, final S3Location location, final Manifest manifest, final String etag,
                         final Options options) {
        this.client = client;
        this.location = location;
        this.manifest = manifest;
        this.etag = etag;
        this.pageSize = manifest.pageSize();
        this.size = manifest.size();
        for (int i = 0; i < SLOTS; i++) {
            slots[i] = new Slot();
            free.offer(slots[i]);
        }
        this.workers = new Worker[options.demandWorkers() + options.workers()];
        for (int i = 0; i < workers.length; i++) {
            final boolean demandOnly = i < options.demandWorkers();
            workers[i] = new Worker(demandOnly);
            workers[i].thread = Thread.ofPlatform().daemon().name("s3-" + (demandOnly ? "demand-" : "fill-") + i)
                .unstarted(workers[i]);
        }
        for (final Worker w : workers) {
            w.thread.start();
        }
    }

    /**
     * Opens the image at {@code location}: checks that the object is there and readable with these credentials, reads
     * its manifest and checks that it describes the object. Every failure is one message naming the cause and what to do.
     */
    public static S3PageSource open(final S3Config config, final S3Location location, final Options options) throws IOException {
        final S3Client client = new S3Client(config, options.demandWorkers() + options.workers(), options.requestTimeout());
        try {
            final S3Client.ObjectInfo info = S3Client.retrying(S3Client.Retry.START, () -> client.probe(location));
            final byte[] bytes;
            try {
                bytes = S3Client.retrying(S3Client.Retry.START, () -> client.getSmall(location.manifest(),
                    (int) Math.min(Integer.MAX_VALUE, ProviderProtocol.MAX_MANIFEST_BYTES)));
            } catch (final S3Client.S3Exception e) {
                if (e.status() == 404) {
                    throw new IOException("no manifest " + location.manifest() + " beside " + location + ": publish the image with"
                        + " 'lazyblk publish --image FILE --to " + location + "', or build the manifest of the object already there"
                        + " with 'lazyblk publish --manifest-only --to " + location + "'", e);
                }
                throw e;
            }
            final Manifest m;
            try {
                m = Manifest.decode(ByteBuffer.wrap(bytes));
            } catch (final RuntimeException e) {
                throw new IOException("the manifest " + location.manifest() + " is malformed (" + e.getMessage() + "): publish the"
                    + " image again", e);
            }
            if (m.isLive()) {
                throw new IOException("the manifest " + location.manifest() + " is a live migration's, not an image's: publish the"
                    + " image again");
            }
            if (m.size() != info.size()) {
                throw new IOException("the manifest " + location.manifest() + " describes " + m.size() + " bytes but " + location
                    + " holds " + info.size() + ": the object was replaced without its manifest; publish the image again");
            }
            return new S3PageSource(client, location, m, info.etag(), options);
        } catch (final IOException | RuntimeException e) {
            client.close();
            throw e;
        }
    }

    public S3Location location() {
        return location;
    }

    @Override
    public Manifest manifest() {
        return manifest;
    }

    @Override
    public boolean fetch(final int firstPage, final int count, final MemorySegment dst, final int priority, final long tag,
                         final Listener listener) {
        if (closed.get()) {
            return false;
        }
        final Slot s = free.poll();
        if (s == null) {
            return false;
        }
        s.firstPage = firstPage;
        s.count = count;
        s.dst = dst;
        s.priority = priority;
        s.tag = tag;
        s.listener = listener;
        inFlight.incrementAndGet();
        // The queues' offer is a release (an ordered store of the slot into the array) paired with the worker's poll
        // (a volatile read of it): the worker sees the fields written above.
        (priority == DEMAND ? demand : background).offer(s);
        wakeOne(priority == DEMAND);
        return true;
    }

    /** Unparks one idle worker that may take this fetch; none idle means they are all busy and will see it. */
    private void wakeOne(final boolean isDemand) {
        for (final Worker w : workers) {
            if ((isDemand || !w.demandOnly) && w.idle.compareAndSet(true, false)) {
                LockSupport.unpark(w.thread);
                return;
            }
        }
    }

    @Override
    public int maxPagesPerFetch() {
        return Math.max(1, MAX_FETCH_BYTES / pageSize);
    }

    @Override
    public int preferredRunBytes() {
        return RUN_BYTES;
    }

    @Override
    public int inFlight() {
        return inFlight.get();
    }

    @Override
    public boolean connected() {
        return up && !closed.get();
    }

    @Override
    public void close() {
        if (!closed.compareAndSet(false, true)) {
            return;
        }
        for (final Worker w : workers) {
            w.thread.interrupt(); // a GET in progress ends (InterruptedIOException) and completes UNAVAILABLE
        }
        for (final Worker w : workers) {
            try {
                w.thread.join(10_000);
            } catch (final InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        // Fetches no worker took: each completes exactly once, as the contract says.
        for (Slot s; (s = demand.poll()) != null || (s = background.poll()) != null; ) {
            complete(s, UNAVAILABLE);
        }
        client.close();
    }

    private void run(final Slot s) {
        final long offset = (long) s.firstPage * pageSize;
        final long end = Math.min(size, offset + (long) s.count * pageSize);
        int status;
        if (s.count < 1 || s.count > maxPagesPerFetch() || s.firstPage < 0 || (long) s.firstPage + s.count > manifest.pageCount()) {
            status = FAILED; // the caller's bug; the contract says such a fetch fails
        } else {
            try {
                final MemorySegment dst = s.dst;
                final int length = (int) (end - offset);
                S3Client.retrying(s.priority == DEMAND ? S3Client.Retry.DEMAND : S3Client.Retry.BACKGROUND, () -> {
                    client.getRange(location, offset, length, dst, 0, etag);
                    return null;
                });
                up = true;
                status = OK;
            } catch (final S3Client.S3Exception e) {
                up = true; // S3 answered
                status = e.retryable() ? UNAVAILABLE : FAILED;
                logFailure(e.getMessage());
            } catch (final IOException e) {
                if (!closed.get()) {
                    up = false;
                    logFailure(e.getMessage());
                }
                status = UNAVAILABLE;
            }
        }
        complete(s, status);
    }

    private void complete(final Slot s, final int status) {
        final Listener l = s.listener;
        final long tag = s.tag;
        final int first = s.firstPage;
        final int count = s.count;
        s.listener = null;
        s.dst = null;
        inFlight.decrementAndGet();
        free.offer(s); // before the listener: it may fetch again at once
        l.onFetched(tag, first, count, status);
    }

    private void logFailure(final String why) {
        final long now = System.nanoTime();
        final long last = lastLog.get();
        if (now - last >= LOG_EVERY_NANOS && lastLog.compareAndSet(last, now)) {
            LOG.warn("{}: {} (at most one such line every 10 s)", location, why);
        }
    }

    /** One fetch's fields; owned by the fetching thread, then by the worker that polled it, then free again. */
    private static final class Slot {
        int firstPage;
        int count;
        MemorySegment dst;
        int priority;
        long tag;
        Listener listener;
    }

    private final class Worker implements Runnable {
        final boolean demandOnly;
        /** Set by the worker before it parks; cleared by whoever unparks it (or by itself when it finds work). */
        final AtomicBoolean idle = new AtomicBoolean();
        Thread thread;

        Worker(final boolean demandOnly) {
            this.demandOnly = demandOnly;
        }

        @Override
        public void run() {
            while (!closed.get()) {
                Slot s = demand.poll();
                if (s == null && !demandOnly) {
                    s = background.poll();
                }
                if (s != null) {
                    S3PageSource.this.run(s);
                    continue;
                }
                // Announce idleness, then look again before parking: a fetch offered before the announcement is found
                // by this second look, one offered after it finds the flag (both are sequentially consistent atomics).
                idle.set(true);
                if (!demand.isEmpty() || (!demandOnly && !background.isEmpty()) || closed.get()) {
                    idle.set(false);
                    continue;
                }
                LockSupport.park(this);
                idle.set(false);
                Thread.interrupted(); // an interrupt is a close; the loop's condition says so
            }
        }
    }
}
