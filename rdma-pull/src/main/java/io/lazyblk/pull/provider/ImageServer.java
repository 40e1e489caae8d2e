package io.lazyblk.pull.provider;

import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.token.AccessToken;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.BindException;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;
import java.util.concurrent.locks.LockSupport;

/**
 * The image provider: exports raw images by name over TCP ({@link ProviderProtocol}) to clients holding an access
 * token for the image, and, on a UNIX socket, hands same-host clients a read-only fd of the image to read through.
 * One thread per connection, within the {@link Limits} (in all and per peer); a watchdog closes connections stuck in
 * their hello, in a write to a client that stopped reading, or idle past the limits' idle timeout. Thread-safe;
 * {@link #close()} stops accepting, ends every connection and waits for their threads.
 */
public final class ImageServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ImageServer.class);
    /** A client that has not finished its hello after this long is cut off (it holds a thread and a socket). */
    static final long HELLO_TIMEOUT_NANOS = 10_000_000_000L;
    /** A response write blocked this long means the client stopped reading: its connection is closed. */
    static final long WRITE_STALL_NANOS = 60_000_000_000L;
    static final long WATCHDOG_PERIOD_NANOS = 1_000_000_000L;
    private static final int BACKLOG = 128;

    /** The TCP listener, or null when the server listens on its UNIX socket only. */
    private final ServerSocketChannel listener;
    /** The UNIX-socket listener for same-host clients, or null. */
    private final io.lazyblk.sys.UnixSocket unixListener;
    private final Path unixPath;
    private final Thread unixAcceptor;
    private final Map<String, ServedImage> images;
    final byte[] secret;
    final Limits limits;
    /** How boot profiles are learned (see {@link io.lazyblk.pull.profile.BootProfile}). */
    final io.lazyblk.pull.profile.ProfileSettings profiles;
    /** Saves changed boot profiles every few seconds; null with learning off. */
    private final Thread profileSaver;
    private final ConnectionSlots slots;
    final Stats.Counters stats = new Stats.Counters();
    /** Answers RDMA offer requests: the real exporter where RDMA works, else one that says why not. */
    final RdmaExporter rdma;
    private final Set<ProviderConnection> connections = ConcurrentHashMap.newKeySet();
    private final Set<Thread> threads = ConcurrentHashMap.newKeySet();
    private final Thread acceptor;
    private final Thread watchdog;
    private volatile boolean closing;

    /**
     * How many clients the server takes, and how long an authenticated TCP client may stay silent.
     *
     * @param maxConnections connections open at once, in all (each holds a platform thread)
     * @param maxConnectionsPerPeer connections open at once from one peer: a TCP client's IP address, or a UNIX-socket
     *     client's uid; at most {@code maxConnections}
     * @param idleTimeout a TCP client that has sent no request for this long, with none outstanding, is closed (it
     *     reconnects when it needs pages); not applied while it holds RDMA access, which the connection keeps alive
     */
    public record Limits(int maxConnections, int maxConnectionsPerPeer, java.time.Duration idleTimeout) {
        /**
         * 256: each connection costs a platform thread (about 1 MiB of stack reserved, little of it touched), and an
         * engine holds at most two per source; 256 serves 128 engines filling at once.
         */
        public static final int DEFAULT_MAX_CONNECTIONS = 256;
        /**
         * 64: an engine holds two TCP connections per tcp:// source (a demand lane and a background lane, see
         * TwoLaneTcpSource; an rdma:// source one, or two when it falls back to TCP), so one host may fill 32 VMs at
         * once from this provider, while a quarter of the slots is all one host (or one token holder) can take: at
         * least three other hosts always find room.
         */
        public static final int DEFAULT_MAX_CONNECTIONS_PER_PEER = 64;
        /**
         * 5 min: long enough that a guest pausing between bursts of reads keeps its connections, short enough that a
         * client whose host died without closing (no FIN ever comes: the server would wait forever) frees its slot
         * and thread soon. An engine that is only idle loses nothing: its transport reconnects at once.
         */
        public static final java.time.Duration DEFAULT_IDLE_TIMEOUT = java.time.Duration.ofMinutes(5);

        public Limits {
            if (maxConnections < 1 || maxConnectionsPerPeer < 1 || maxConnectionsPerPeer > maxConnections) {
                throw new IllegalArgumentException("connection limits of " + maxConnections + " in all and " + maxConnectionsPerPeer
                    + " per peer: both must be at least 1, and the one per peer at most the one in all");
            }
            if (idleTimeout.compareTo(java.time.Duration.ofSeconds(1)) < 0) {
                throw new IllegalArgumentException("idle timeout of " + idleTimeout + ": at least 1 s");
            }
        }

        public static Limits defaults() {
            return new Limits(DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_IDLE_TIMEOUT);
        }
    }

    /**
     * What the server has done since it started; a snapshot.
     *
     * @param handovers images handed to same-host clients by fd
     * @param limited connections refused at accept for want of a slot (see {@link Limits})
     * @param idleClosed authenticated clients closed for sending nothing for the idle timeout
     * @param open connections open now
     * @param demandRequests page requests marked demand (of {@code requests}): what boot profiles are learned from
     */
    public record Stats(long connections, long refused, long protocolErrors, long requests, long bytes, long handovers,
                        long limited, long idleClosed, int open, long demandRequests) {
        static final class Counters {
            final LongAdder connections = new LongAdder();
            final LongAdder refused = new LongAdder();
            final LongAdder protocolErrors = new LongAdder();
            final LongAdder requests = new LongAdder();
            final LongAdder bytes = new LongAdder();
            final LongAdder handovers = new LongAdder();
            final LongAdder idleClosed = new LongAdder();
            final LongAdder demandRequests = new LongAdder();
            /** Refused hellos by {@link ProviderProtocol.HelloStatus} (by ordinal). */
            final LongAdder[] refusedBy = new LongAdder[ProviderProtocol.HelloStatus.values().length];

            Counters() {
                for (int i = 0; i < refusedBy.length; i++) {
                    refusedBy[i] = new LongAdder();
                }
            }
        }
    }

    private ImageServer(final ServerSocketChannel listener, final io.lazyblk.sys.UnixSocket unixListener, final Path unixPath,
                        final Map<String, ServedImage> images, final byte[] secret, final RdmaExporter rdma, final Limits limits,
                        final io.lazyblk.pull.profile.ProfileSettings profiles) {
        this.listener = listener;
        this.limits = limits;
        this.profiles = profiles;
        this.profileSaver = profiles.learn()
            ? Thread.ofVirtual().name("lazyblk-provider-profiles").unstarted(() -> ServerChores.saveProfiles(this)) : null;
        this.slots = new ConnectionSlots(limits.maxConnections(), limits.maxConnectionsPerPeer());
        this.rdma = rdma;
        this.unixListener = unixListener;
        this.unixPath = unixPath;
        this.images = images;
        this.secret = secret.clone();
        this.acceptor = listener == null ? null : Thread.ofPlatform().daemon().name("lazyblk-provider-accept").unstarted(this::acceptLoop);
        this.unixAcceptor = unixListener == null ? null
            : Thread.ofPlatform().daemon().name("lazyblk-provider-accept-unix").unstarted(this::acceptUnixLoop);
        this.watchdog = Thread.ofVirtual().name("lazyblk-provider-watchdog").unstarted(() -> ServerChores.watch(this));
    }

    /**
     * Opens every export and starts listening on {@code listen} (port 0 picks a free port: see {@link #port()}).
     *
     * @param secret the shared secret tokens are signed with (see {@link io.lazyblk.pull.token.SecretFile})
     */
    public static ImageServer start(final InetSocketAddress listen, final Collection<ImageExport> exports, final byte[] secret)
        throws IOException {
        return start(listen, null, exports, secret);
    }

    /**
     * Opens every export and listens on TCP {@code listen} and/or the UNIX socket {@code unix} (either may be null,
     * not both). The UNIX socket file is replaced if stale and removed on close.
     */
    public static ImageServer start(final InetSocketAddress listen, final Path unix, final Collection<ImageExport> exports,
                                    final byte[] secret) throws IOException {
        return start(listen, unix, exports, secret, Limits.defaults());
    }

    /** As {@link #start(InetSocketAddress, Path, Collection, byte[])}, within {@code limits}. */
    public static ImageServer start(final InetSocketAddress listen, final Path unix, final Collection<ImageExport> exports,
                                    final byte[] secret, final Limits limits) throws IOException {
        return start(listen, unix, exports, secret, limits, io.lazyblk.pull.profile.ProfileSettings.defaults());
    }

    /**
     * As {@link #start(InetSocketAddress, Path, Collection, byte[])}, with RDMA offers answered by {@code rdma},
     * which the server owns from here on (closed with it).
     */
    public static ImageServer start(final InetSocketAddress listen, final Path unix, final Collection<ImageExport> exports,
                                    final byte[] secret, final RdmaExporter rdma) throws IOException {
        return start(listen, unix, exports, secret, rdma, Limits.defaults());
    }

    /** As {@link #start(InetSocketAddress, Path, Collection, byte[], RdmaExporter)}, within {@code limits}. */
    public static ImageServer start(final InetSocketAddress listen, final Path unix, final Collection<ImageExport> exports,
                                    final byte[] secret, final RdmaExporter rdma, final Limits limits) throws IOException {
        return start(listen, unix, exports, secret, rdma, limits, io.lazyblk.pull.profile.ProfileSettings.defaults());
    }

    /** As {@link #start(InetSocketAddress, Path, Collection, byte[], Limits)}, learning boot profiles as {@code profiles} says. */
    public static ImageServer start(final InetSocketAddress listen, final Path unix, final Collection<ImageExport> exports,
                                    final byte[] secret, final Limits limits, final io.lazyblk.pull.profile.ProfileSettings profiles)
        throws IOException {
        if (listen == null) {
            return start(null, unix, exports, secret, RdmaExporter.unavailable("the provider listens on a UNIX socket only"), limits,
                profiles);
        }
        // RDMA where this host can do it (probed once, no DiSNI class touched otherwise), else every offer says why not.
        final RdmaExporter rdma = io.lazyblk.pull.rdma.RdmaExporters.forThisHost();
        try {
            return start(listen, unix, exports, secret, rdma, limits, profiles);
        } catch (final IOException | RuntimeException e) {
            rdma.close();
            throw e;
        }
    }

    /**
     * The full form: TCP {@code listen} and/or UNIX {@code unix}, RDMA offers answered by {@code rdma} (owned by the
     * server from here on), within {@code limits}, boot profiles learned as {@code profiles} says.
     */
    public static ImageServer start(final InetSocketAddress listen, final Path unix, final Collection<ImageExport> exports,
                                    final byte[] secret, final RdmaExporter rdma, final Limits limits,
                                    final io.lazyblk.pull.profile.ProfileSettings profiles) throws IOException {
        if (listen == null && unix == null) {
            throw new IllegalArgumentException("nowhere to listen: give a TCP address, a UNIX socket path, or both");
        }
        if (exports.isEmpty()) {
            throw new IllegalArgumentException("nothing to export: name at least one image");
        }
        if (secret.length < AccessToken.MIN_SECRET_BYTES) {
            throw new IllegalArgumentException("secret of " + secret.length + " bytes; at least "
                + AccessToken.MIN_SECRET_BYTES + " are needed");
        }
        final Map<String, ServedImage> images = new HashMap<>();
        ServerSocketChannel listener = null;
        io.lazyblk.sys.UnixSocket unixListener = null;
        try {
            for (final ImageExport e : exports) {
                if (images.containsKey(e.name())) {
                    throw new IllegalArgumentException("image name '" + e.name() + "' exported twice");
                }
                images.put(e.name(), new ServedImage(e, profiles));
            }
            if (listen != null) {
                listener = ServerSocketChannel.open();
                // A restarted provider must get its port back at once, although the old one's connections linger in TIME_WAIT.
                listener.setOption(StandardSocketOptions.SO_REUSEADDR, true);
                listener.bind(listen, BACKLOG);
            }
            if (unix != null) {
                unixListener = io.lazyblk.sys.UnixSocket.listen(unix);
            }
        } catch (final IOException | RuntimeException e) {
            images.values().forEach(ImageServer::closeQuietly);
            if (listener != null) {
                closeQuietly(listener);
            }
            if (unixListener != null) {
                closeQuietly(unixListener);
            }
            if (e instanceof BindException) {
                throw new IOException("cannot listen on " + listen + ": " + e.getMessage() + " (is another image-server running there?)", e);
            }
            throw e;
        }
        final ImageServer server = new ImageServer(listener, unixListener, unix, Map.copyOf(images), secret, rdma, limits, profiles);
        LOG.info("{}", rdma.describe());
        if (server.acceptor != null) {
            server.acceptor.start();
        }
        if (server.unixAcceptor != null) {
            server.unixAcceptor.start();
        }
        server.watchdog.start();
        if (server.profileSaver != null) {
            server.profileSaver.start();
        }
        return server;
    }

    /** Convenience: exports each {@code name -> image} at {@code pageSize}, manifests from {@code manifests}. */
    public static ImageServer start(final InetSocketAddress listen, final Map<String, Path> images, final byte[] secret,
                                    final int pageSize, final ManifestBuilder manifests) throws IOException {
        final List<ImageExport> exports = new ArrayList<>();
        for (final Map.Entry<String, Path> e : images.entrySet()) {
            exports.add(ImageExport.of(e.getKey(), e.getValue(), pageSize, manifests, ManifestBuilder.Progress.NONE));
        }
        return start(listen, exports, secret);
    }

    /** The address the server listens on (with the real port when started on port 0). */
    /** Page bytes sent per exported image, for metrics. */
    public Map<String, Long> bytesSentByImage() {
        final Map<String, Long> m = new java.util.TreeMap<>();
        images.forEach((name, image) -> m.put(name, image.bytesSent.sum()));
        return m;
    }

    /**
     * Connections refused, by reason: each refused hello's status (unknown_image, bad_token, expired_token, malformed)
     * and connection_limit (too many connections, from all or from one peer).
     */
    public Map<String, Long> refusedByReason() {
        final Map<String, Long> m = new java.util.TreeMap<>();
        for (final ProviderProtocol.HelloStatus st : ProviderProtocol.HelloStatus.values()) {
            if (st != ProviderProtocol.HelloStatus.OK) {
                m.put(st.name().toLowerCase(java.util.Locale.ROOT), stats.refusedBy[st.ordinal()].sum());
            }
        }
        m.put("connection_limit", slots.refused());
        return m;
    }

    public InetSocketAddress address() {
        if (listener == null) {
            throw new IllegalStateException("this server listens on its UNIX socket only");
        }
        try {
            return (InetSocketAddress) listener.getLocalAddress();
        } catch (final IOException e) {
            throw new IllegalStateException("server closed", e);
        }
    }

    public int port() {
        return address().getPort();
    }

    public Stats stats() {
        return new Stats(stats.connections.sum(), stats.refused.sum(), stats.protocolErrors.sum(), stats.requests.sum(),
            stats.bytes.sum(), stats.handovers.sum(), slots.refused(), stats.idleClosed.sum(), slots.open(), stats.demandRequests.sum());
    }

    /**
     * TEST HOOK, for integrity tests only: from now on, every response carrying {@code page} of {@code image} has that
     * page's first byte inverted on the wire (the file is untouched), as a damaged network or provider would.
     */
    public void corruptServedPageForTesting(final String image, final int page) {
        final ServedImage i = images.get(image);
        if (i == null) {
            throw new IllegalArgumentException("no image '" + image + "' exported");
        }
        i.corruptForTesting(page);
    }

    ServedImage image(final String name) {
        return images.get(name);
    }

    boolean isClosing() {
        return closing;
    }

    /** The connections open now (for the watchdog). */
    Set<ProviderConnection> connections() {
        return connections;
    }

    /** Every export (for the profile saver). */
    Collection<ServedImage> images() {
        return images.values();
    }

    void remove(final ProviderConnection c) {
        connections.remove(c);
        threads.remove(Thread.currentThread());
        slots.release(c.slot);
    }

    /**
     * Starts {@code c}'s thread, its slot taken. If no thread can be made (the process is out of threads or memory),
     * the connection is closed and its slot given back: the acceptor lives on and serves the clients it has.
     */
    private void run(final ProviderConnection c, final String threadName, final Runnable closeSocket) {
        connections.add(c);
        Thread t = null;
        try {
            t = Thread.ofPlatform().daemon().name(threadName).unstarted(c);
            threads.add(t);
            t.start();
        } catch (final OutOfMemoryError | RuntimeException e) {
            LOG.warn("cannot start a thread for the connection from {}: {}; closing it", c.describe(), e.toString());
            if (t != null) {
                threads.remove(t);
            }
            connections.remove(c);
            closeSocket.run();
            slots.release(c.slot);
            return;
        }
        if (closing) { // close() may have swept the connections before this one was added
            c.abort();
        }
    }

    private void acceptLoop() {
        while (!closing) {
            final SocketChannel ch;
            try {
                ch = listener.accept();
            } catch (final ClosedChannelException e) {
                return;
            } catch (final IOException e) {
                if (!closing) {
                    // EMFILE and the like: say so, and keep serving the clients we have.
                    LOG.warn("accept failed: {}", e.toString());
                    LockSupport.parkNanos(100_000_000L);
                }
                continue;
            }
            stats.connections.increment();
            final String peer;
            final java.net.InetAddress from;
            try {
                final InetSocketAddress remote = (InetSocketAddress) ch.getRemoteAddress();
                peer = String.valueOf(remote);
                // The IP address, not the port: one host is one peer however many connections it opens. (An IPv6 host
                // may hold many addresses; keying by /64 would lump a whole LAN together, so it is the address too.)
                from = remote.getAddress();
                // Responses are one 16-byte header then the data: without NODELAY, Nagle holds a response's tail back
                // until the client's delayed ACK (40 ms).
                ch.setOption(StandardSocketOptions.TCP_NODELAY, true);
            } catch (final IOException | RuntimeException e) {
                closeQuietly(ch);
                continue;
            }
            if (!slots.take(from)) {
                closeQuietly(ch); // no answer: the hello is not read, so an unknown client learns nothing
                continue;
            }
            // A platform thread per connection: one engine holds two per source, so there are few, and a platform
            // thread answers a demand fetch 20-45 µs sooner than a virtual one (measured on loopback: p50 70-110 µs
            // against 110-135 µs), which wakes through the JDK's poller thread and a carrier.
            run(new ProviderConnection(this, ch, peer, from), "lazyblk-provider-" + peer, () -> closeQuietly(ch));
        }
    }

    private void acceptUnixLoop() {
        while (!closing) {
            final io.lazyblk.sys.UnixSocket s;
            try {
                s = unixListener.accept();
            } catch (final IOException e) {
                if (!closing) {
                    LOG.warn("accept on {} failed: {}", unixPath, e.toString());
                    LockSupport.parkNanos(100_000_000L);
                }
                continue;
            }
            stats.connections.increment();
            final ConnectionSlots.UnixPeer from = unixPeer(s);
            if (!slots.take(from)) {
                s.close();
                continue;
            }
            run(new ProviderConnection(this, s, "unix:" + unixPath + " (" + from + ")", from), "lazyblk-provider-unix", s::close);
        }
    }

    /**
     * A UNIX-socket client's bucket: its uid from {@code SO_PEERCRED}. Should the kernel not say (it always does for a
     * connected AF_UNIX socket on Linux), every such client shares one bucket, and the limit per peer holds for all.
     */
    private ConnectionSlots.UnixPeer unixPeer(final io.lazyblk.sys.UnixSocket s) {
        try {
            return new ConnectionSlots.UnixPeer(s.peerUid());
        } catch (final IOException e) {
            LOG.debug("no peer credentials on {}: {}", unixPath, e.toString());
            return new ConnectionSlots.UnixPeer(-1);
        }
    }

    /**
     * TEST HOOK: the boot profile {@code image} would hand out now (empty with learning off), and saves it at once if
     * it changed (as the saver does every few seconds).
     */
    public int[] profileForTesting(final String image, final boolean save) {
        final ServedImage i = images.get(image);
        if (i == null) {
            throw new IllegalArgumentException("no image '" + image + "' exported");
        }
        if (save && i.profile != null) {
            i.profile.save();
        }
        return i.profilePages().clone();
    }

    @Override
    public void close() {
        if (closing) {
            return;
        }
        closing = true;
        if (listener != null) {
            closeQuietly(listener);
        }
        if (unixListener != null) {
            unixListener.shutdown(); // wakes the accept(); closed once that thread is gone
        }
        LockSupport.unpark(watchdog);
        for (final ProviderConnection c : connections) {
            c.abort();
        }
        try {
            if (acceptor != null) {
                acceptor.join();
            }
            if (unixAcceptor != null) {
                unixAcceptor.join();
                unixListener.close();
                java.nio.file.Files.deleteIfExists(unixPath);
            }
            watchdog.join();
            for (final Thread t : threads) {
                t.join();
            }
            if (profileSaver != null) {
                LockSupport.unpark(profileSaver);
                profileSaver.join();
            }
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (final IOException e) {
            LOG.debug("removing {}: {}", unixPath, e.toString());
        }
        rdma.close(); // after every connection thread ended: their grants are closed already
        for (final ServedImage i : images.values()) {
            if (i.profile != null) {
                i.profile.save(); // after every connection merged its boot, on its thread, as it ended
            }
            closeQuietly(i);
        }
    }

    private static void closeQuietly(final AutoCloseable c) {
        try {
            c.close();
        } catch (final Exception e) {
            // closing: nothing more to do
        }
    }
}
