package io.lazyblk.pull.tcp;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.provider.ProviderProtocol;
import io.lazyblk.pull.sched.Fetch;
import io.lazyblk.pull.sched.FetchScheduler;
import io.lazyblk.pull.token.TokenSource;
import org.agrona.concurrent.Agent;
import org.agrona.concurrent.AgentTerminationException;
import org.agrona.concurrent.IdleStrategy;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.EOFException;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.VarHandle;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.SocketChannel;

import static io.lazyblk.pull.provider.ProviderProtocol.*;

/**
 * The TCP transport's one thread: writes requests the {@link FetchScheduler} releases, reads responses straight into
 * their destinations (a response's data and the next response's header in one scattering read), and reconnects
 * with exponential backoff when the link drops. Sleeps in a {@link Selector} when there is nothing to do; submitters
 * wake it through {@link #wake()}; a demand fetch is written by its submitter when the connection is free
 * ({@link #afterSubmit}), and responses may be read by a thread that polls the source ({@link #pollFromCaller}).
 * The connection's state belongs to whichever thread holds {@link #owner}.
 */
final class TcpTransportAgent implements Agent {
    private static final Logger LOG = LoggerFactory.getLogger(TcpTransportAgent.class);
    /** Longest sleep while connected: only bounds the cost of a wake-up that was somehow missed. */
    private static final long IDLE_SELECT_MILLIS = 1000;

    private final InetSocketAddress provider;
    private final String image;
    /** Read at each reconnect: the token its source holds then (a rotated file's new one), never a stored string. */
    private final TokenSource token;
    private final Manifest manifest;
    private final TcpPageSource.Options options;
    private final FetchScheduler scheduler;
    private final Selector selector;
    private final ByteBuffer requests;
    private final ByteBuffer header = ByteBuffer.allocateDirect(RESPONSE_HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
    private final ByteBuffer[] scatter = new ByteBuffer[2];
    /** Orders {@link #requestClose()}'s wakeup against {@link #onClose()}'s close of the selector (rare paths only). */
    private final Object selectorLock = new Object();

    private SocketChannel channel;
    private SelectionKey key;
    private boolean wantWrite;
    private Fetch receiving;
    /** See {@link #viewOf}: by segment identity, since segments compare by address and size, not by object. */
    private final java.util.IdentityHashMap<MemorySegment, ByteBuffer> views = new java.util.IdentityHashMap<>();
    private static final int MAX_VIEWS = 4096;
    /** The body being read: a fetch's destination, or a control answer's payload ({@link #receiving} null then). */
    private ByteBuffer receivingData;
    /** The boot profile request, asked by any thread ({@link #askProfile}), sent and answered by the owner. */
    private final ProfileRequest profile = new ProfileRequest();
    private long backoffNanos;
    private long nextAttemptNanos;
    private String loggedFailure;
    private long disconnects;

    /**
     * 1 while a thread drives the connection: the transport thread for each step of its loop, a submitter putting
     * a demand request on the wire ({@link #afterSubmit}), or a poller reading responses ({@link #pollFromCaller}).
     * Everything below that is not volatile (the channel, the request buffer, the scheduler's issue side) is touched
     * only by the owner; the CAS that takes ownership and the volatile store that gives it back order each owner's
     * writes before the next owner's reads. Nobody waits for it
     * but the transport thread: a submitter that finds it taken wakes the transport instead, a poller returns. A
     * submitter holds it for a non-blocking write, a poller for non-blocking reads and the completions they bring
     * (listeners are quick); the transport for one step of its loop (a reconnect attempt included), never while it
     * sleeps in the selector.
     */
    private final java.util.concurrent.atomic.AtomicInteger owner = new java.util.concurrent.atomic.AtomicInteger();
    /** Written by this thread around its sleep, read by submitters in {@link #wake()}: the sleep/wake handshake. */
    private volatile boolean sleeping;
    private volatile boolean closeRequested;
    /** A connection attempt in progress, so {@link #requestClose()} can abort it. */
    private volatile SocketChannel pending;
    private volatile String lastFailure;

    TcpTransportAgent(final InetSocketAddress provider, final String image, final TokenSource token, final Manifest manifest,
                      final TcpPageSource.Options options, final FetchScheduler scheduler) throws IOException {
        this.provider = provider;
        this.image = image;
        this.token = token;
        this.manifest = manifest;
        this.options = options;
        this.scheduler = scheduler;
        this.selector = Selector.open();
        // Room for a full window of requests and one control request (a profile request) ahead of them.
        this.requests = ByteBuffer.allocateDirect(options.maxIssuedRequests() * REQUEST_BYTES + ProfileRequest.BYTES)
            .order(ByteOrder.LITTLE_ENDIAN);
        this.requests.limit(0);
        this.backoffNanos = options.initialBackoff().toNanos();
    }

    @Override
    public String roleName() {
        return "tcp-source-" + image;
    }

    /**
     * Any thread, after {@link FetchScheduler#submit} published a fetch of {@code priority}. A demand fetch goes on
     * the wire from the submitting thread when the connection is free: a guest waits for it, and waking the transport
     * thread to send it costs a wake-up (~20 us on a busy 2-core host, measured) before the provider even sees it.
     * Background fetches wake the transport, which batches them into few writes. If the transport thread is busy (it
     * owns the connection), it sends the fetch itself after its current step.
     */
    void afterSubmit(final int priority) {
        if (priority == PageSource.DEMAND && owner.compareAndSet(0, 1)) { // CAS: acquires what the last owner wrote
            final boolean transportNeeded;
            try {
                transportNeeded = channel == null || sendFromSubmitter();
            } finally {
                owner.set(0); // volatile: publishes our writes (the fetch issued, the request buffer) to the next owner
            }
            if (!transportNeeded) {
                return;
            }
        }
        wake();
    }

    /**
     * A submitter owns the connection: writes what the scheduler releases. True if the transport thread must act (a
     * partial or failed write to finish, or fetches the window holds back); a failed write is left for the
     * transport, whose next write fails the same way and goes through {@link #disconnect}.
     */
    private boolean sendFromSubmitter() {
        try {
            send(false);
        } catch (final IOException e) {
            return true;
        }
        return requests.hasRemaining() || scheduler.hasQueued();
    }

    /**
     * Any thread ({@link TcpPageSource#poll()}): reads the responses that have arrived, completing their fetches on
     * this thread, if the connection is free and has requests on the wire. Never waits: the transport thread holds
     * the connection only for a step. The transport thread, woken by the same data, then finds nothing to read.
     */
    int pollFromCaller() {
        if (!owner.compareAndSet(0, 1)) { // CAS: acquires what the last owner wrote (the issued requests, the buffers)
            return 0;
        }
        boolean lost = false;
        int n = 0;
        try {
            if (channel != null && scheduler.issuedCount() > 0) {
                n = receive();
            }
        } catch (final IOException e) {
            disconnect(reason(e));
            lost = true;
        } finally {
            owner.set(0); // volatile: publishes what this step changed to the next owner
        }
        if (lost) {
            wake(); // the transport thread reconnects
        }
        return n;
    }

    private static String reason(final IOException e) {
        return e instanceof EOFException ? "provider closed the connection" : e.getMessage() == null ? e.toString() : e.getMessage();
    }

    /** Any thread, after publishing work: wakes the agent if it sleeps. */
    void wake() {
        // The fence orders the submitter's publishing store (a release store in the queue) before this read of
        // sleeping; it pairs with the fence in sleep() between sleeping=true and the agent's look at the queues.
        VarHandle.fullFence();
        if (sleeping) {
            selector.wakeup();
        }
    }

    /** Any thread: makes the agent stop at its next step; a connection attempt in progress is aborted. */
    void requestClose() {
        closeRequested = true;
        final SocketChannel p = pending;
        if (p != null) {
            closeQuietly(p);
        }
        synchronized (selectorLock) { // a closed selector's wakeup() throws InternalError: not after onClose
            if (selector.isOpen()) {
                selector.wakeup();
            }
        }
    }

    /** A boot profile request, sent once connected: see {@link ProfileRequest#ask()}. */
    java.util.concurrent.CompletableFuture<ByteBuffer> askProfile() {
        final java.util.concurrent.CompletableFuture<ByteBuffer> answer = profile.ask();
        wake();
        return answer;
    }

    String lastFailure() {
        return lastFailure;
    }

    long disconnects() {
        return disconnects;
    }

    /** Takes over a greeted channel and opens the scheduler. Before the thread starts, or on it. */
    void attach(final SocketChannel ch) throws IOException {
        ch.configureBlocking(false);
        key = ch.register(selector, SelectionKey.OP_READ);
        channel = ch;
        wantWrite = false;
        header.clear();
        requests.limit(0);
        receiving = null;
        receivingData = null;
        profile.reset();
        backoffNanos = options.initialBackoff().toNanos();
        lastFailure = null;
        loggedFailure = null;
        scheduler.up();
    }

    @Override
    public int doWork() {
        if (closeRequested) {
            throw new AgentTerminationException("closed");
        }
        final int nice = wantedNice; // volatile: pairs with niceTransport's write; applied on this thread, which it is about
        if (nice != appliedNice) {
            appliedNice = nice;
            if (io.lazyblk.sys.Threads.niceCurrentThread(nice) != 0) {
                LOG.debug("could not set the transport thread's nice value to {}", nice);
            }
        }
        own();
        try {
            if (channel == null) {
                return reconnect();
            }
            try {
                return send(true) + receive();
            } catch (final IOException e) {
                disconnect(reason(e));
                return 1;
            }
        } finally {
            owner.set(0); // volatile: a submitter's CAS sees everything this step changed
        }
    }

    /**
     * Takes the connection from a submitter that may be writing a demand request (a non-blocking write: held for a
     * few µs, so spin; yield in case it was preempted).
     */
    private void own() {
        while (!owner.compareAndSet(0, 1)) {
            Thread.yield();
        }
    }

    /**
     * Asks the transport thread to run at {@code nice} (Linux's per-thread nice value): a lane that carries only the
     * background fill gives way to the guest's vCPU and the request threads when cores are short. Any thread.
     */
    void niceTransport(final int nice) {
        wantedNice = nice;
    }

    private volatile int wantedNice;
    /** The nice value this thread runs at: the agent's own. */
    private int appliedNice;

    @Override
    public void onClose() {
        scheduler.close(); // no submitter gets past submit() from here on; one may still hold the connection
        own();
        try {
            closeChannel();
            scheduler.failAll(PageSource.UNAVAILABLE);
            profile.failAll("the source closed");
        } finally {
            owner.set(0);
        }
        synchronized (selectorLock) {
            closeQuietly(selector);
        }
    }

    /** Writes the rest of a partial write, then what the scheduler releases; {@code onTransport}: see {@link FetchScheduler#nextFromSubmitter}. */
    private int send(final boolean onTransport) throws IOException {
        if (requests.hasRemaining()) { // the rest of a partial write
            channel.write(requests);
            if (requests.hasRemaining()) {
                interestInWrite(true);
                return 0;
            }
        }
        requests.clear();
        int n = 0;
        if (onTransport && profile.put(requests)) {
            n++; // rare (once per engine start): one control request ahead of the fetches, answered in order with them
        }
        Fetch f;
        while (requests.remaining() >= REQUEST_BYTES && (f = onTransport ? scheduler.next() : scheduler.nextFromSubmitter()) != null) {
            final int at = requests.position();
            // The demand flag: the provider learns boot profiles from demand fetches, and from nothing else.
            requests.putLong(at + REQUEST_ID_OFFSET, f.id()).putInt(at + REQUEST_FIRST_PAGE_OFFSET, f.firstPage())
                .putInt(at + REQUEST_COUNT_OFFSET, ProviderProtocol.countWord(f.count(), f.priority() == PageSource.DEMAND))
                .position(at + REQUEST_BYTES);
            n++;
        }
        requests.flip();
        if (n > 0) {
            channel.write(requests);
        }
        interestInWrite(requests.hasRemaining());
        return n;
    }

    /**
     * The ByteBuffer view of a fetch's destination, made once per segment: the engine fetches into the same page
     * buffers again and again, so receiving allocates nothing after the first fetch into each. Bounded, as a caller
     * that passes new segments each time would otherwise grow it: then it costs what making a view always cost.
     * The connection's owner only (see {@link #owner}), as receiving is.
     */
    private ByteBuffer viewOf(final MemorySegment dst) {
        ByteBuffer v = views.get(dst);
        if (v == null) {
            if (views.size() >= MAX_VIEWS) {
                views.clear();
            }
            v = dst.asByteBuffer();
            views.put(dst, v);
        }
        return v;
    }

    private int receive() throws IOException {
        int work = 0;
        while (true) {
            if (receivingData == null) {
                if (header.hasRemaining()) {
                    if (channel.read(header) < 0) {
                        throw new EOFException();
                    }
                    if (header.hasRemaining()) {
                        return work;
                    }
                }
                final long id = header.getLong(RESPONSE_ID_OFFSET);
                final int status = header.getInt(RESPONSE_STATUS_OFFSET);
                final int length = header.getInt(RESPONSE_LENGTH_OFFSET);
                header.clear();
                if (profile.answers(id)) {
                    receivingData = profile.body(status, length);
                    continue;
                }
                final Fetch f = scheduler.issued(id);
                if (f == null) {
                    throw new IOException("provider answered request id " + id + ", which is not in flight (protocol error)");
                }
                if (status != ProviderProtocol.RESPONSE_OK) {
                    if (length != 0) {
                        throw new IOException("provider answered request " + id + " with status " + status + " and " + length
                            + " bytes (protocol error)");
                    }
                    scheduler.complete(f, PageSource.FAILED);
                    work++;
                    continue;
                }
                if (length != f.bytes()) {
                    throw new IOException("provider sent " + Integer.toUnsignedString(length) + " bytes for pages [" + f.firstPage()
                        + ", " + (f.firstPage() + f.count()) + "), which hold " + f.bytes() + " (protocol error)");
                }
                receiving = f;
                // A ByteBuffer view of the destination, so the kernel copies the data straight into page memory.
                receivingData = viewOf(f.dst()).clear().limit(f.bytes());
            }
            scatter[0] = receivingData;
            scatter[1] = header;
            final long n = channel.read(scatter);
            if (n < 0) {
                throw new EOFException();
            }
            if (receivingData.hasRemaining()) {
                if (n == 0) {
                    return work;
                }
                continue;
            }
            final Fetch done = receiving;
            receiving = null;
            receivingData = null;
            scatter[0] = null;
            if (done == null) {
                profile.finish();
            } else {
                scheduler.complete(done, PageSource.OK);
            }
            work++;
        }
    }

    private void interestInWrite(final boolean want) {
        if (want != wantWrite) {
            wantWrite = want;
            key.interestOps(want ? SelectionKey.OP_READ | SelectionKey.OP_WRITE : SelectionKey.OP_READ);
        }
    }

    private void disconnect(final String reason) {
        scheduler.down(); // first: no new fetch can slip into the queues after failAll empties them
        // Read before failAll: with nothing in flight, a close by the provider is routine (its idle timeout closes a
        // connection that asked for nothing, or it restarts), and the reconnect that follows says if anything is wrong.
        final boolean idle = scheduler.inFlight() == 0;
        closeChannel();
        scheduler.failAll(PageSource.UNAVAILABLE);
        profile.fail(reason);
        disconnects++;
        lastFailure = reason;
        loggedFailure = null;
        if (idle) {
            LOG.info("lost the provider {} of '{}': {}, with nothing in flight (its idle timeout, or a restart); reconnecting",
                provider, image, reason);
        } else {
            LOG.warn("lost the provider {} of '{}': {}; fetches in flight failed (UNAVAILABLE), reconnecting", provider, image, reason);
        }
        backoffNanos = options.initialBackoff().toNanos();
        nextAttemptNanos = System.nanoTime() + backoffNanos;
    }

    private int reconnect() {
        if (System.nanoTime() - nextAttemptNanos < 0) {
            return 0;
        }
        try {
            final ProviderHandshake.Connected c = ProviderHandshake.connect(provider, image, token, options.connectTimeout(),
                ch -> pending = ch);
            if (closeRequested) {
                closeQuietly(c.channel());
                return 1;
            }
            if (!c.manifest().sameImage(manifest)) {
                closeQuietly(c.channel());
                retryLater("the provider now serves a different image as '" + image + "' (" + describe(c.manifest())
                    + "; this source serves " + describe(manifest) + "): refusing it, staying disconnected");
                return 1;
            }
            attach(c.channel());
            LOG.info("reconnected to the provider {} of '{}'", provider, image);
        } catch (final io.lazyblk.pull.provider.ProviderRefusedException e) {
            // A token that expired while the connection was up, or no longer valid: say once what to do about it. The
            // token is read again at each attempt, so a rotated file is picked up by the next one.
            final boolean tokenRefused = e.status() == ProviderProtocol.HelloStatus.EXPIRED_TOKEN
                || e.status() == ProviderProtocol.HelloStatus.BAD_TOKEN;
            retryLater(tokenRefused ? e.getMessage() + "; " + token.howToRenew() : e.getMessage());
        } catch (final IOException e) {
            retryLater(e.getMessage() == null ? e.toString() : e.getMessage());
        } finally {
            pending = null;
        }
        return 1;
    }

    private void retryLater(final String reason) {
        lastFailure = reason;
        if (!reason.equals(loggedFailure)) { // one line per distinct reason, not one per attempt
            loggedFailure = reason;
            LOG.warn("provider {} of '{}' unavailable: {}; retrying (backoff up to {} ms)", provider, image, reason,
                options.maxBackoff().toMillis());
        }
        backoffNanos = Math.min(backoffNanos * 2, options.maxBackoff().toNanos());
        nextAttemptNanos = System.nanoTime() + backoffNanos;
    }

    private static String describe(final Manifest m) {
        return m.size() + " bytes, " + m.pageSize() + "-byte pages, sha256 " + m.digestHex().substring(0, 16) + "...";
    }

    private void closeChannel() {
        if (channel != null) {
            key.cancel();
            closeQuietly(channel);
            channel = null;
            key = null;
        }
        receiving = null;
        receivingData = null;
        scatter[0] = null;
    }

    /** Sleeps in the selector until the socket has something, a submitter wakes us, or a reconnect is due. */
    private void sleep() {
        final long timeoutMillis;
        if (channel == null) {
            final long wait = nextAttemptNanos - System.nanoTime();
            if (wait <= 0) {
                return;
            }
            timeoutMillis = Math.max(1, (wait + 999_999) / 1_000_000);
        } else {
            timeoutMillis = IDLE_SELECT_MILLIS;
        }
        sleeping = true;
        // Pairs with the fence in wake(): either the submitter sees sleeping=true and wakes the selector, or we see
        // its fetch here and do not sleep.
        VarHandle.fullFence();
        try {
            // A profile request waiting to go out is work only while connected (it waits for the reconnect otherwise).
            if (!closeRequested && !scheduler.hasWork() && (channel == null || !profile.waiting())) {
                selector.select(timeoutMillis);
                selector.selectedKeys().clear();
            }
        } catch (final IOException e) {
            LOG.warn("selector failed: {}", e.toString());
        } finally {
            sleeping = false;
        }
    }

    IdleStrategy idleStrategy() {
        return new IdleStrategy() {
            @Override
            public void idle(final int workCount) {
                if (workCount == 0) {
                    sleep();
                }
            }

            @Override
            public void idle() {
                sleep();
            }

            @Override
            public void reset() {
            }
        };
    }

    private static void closeQuietly(final AutoCloseable c) {
        try {
            c.close();
        } catch (final Exception e) {
            // closing: nothing more to do
        }
    }
}
