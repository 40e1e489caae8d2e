package io.lazyblk.tools;

import io.lazyblk.blk.BlockBackend;
import io.lazyblk.blk.FileBackend;
import io.lazyblk.blk.NullBackend;
import io.lazyblk.blk.VirtioBlkDevice;
import io.lazyblk.persistence.LocalImage;
import io.lazyblk.vhost.VhostUserServer;

import io.lazyblk.blk.LazyStore;
import io.lazyblk.pagemap.Manifest;
import io.lazyblk.persistence.PageStateFile;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.token.TokenSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.time.Duration;
import java.nio.file.Path;

/**
 * One engine: a backend, the virtio-blk device over it, and the vhost-user server on a socket, served on its
 * own thread. The wiring shared by {@code serve}, {@code demo} and the tests. {@link #close()} stops it all.
 */
public final class Engine implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Engine.class);
    private final VhostUserServer server;
    private final io.lazyblk.blk.Storage storage;
    /** The --source URIs of a lazy engine, nearest first (for status); empty otherwise. */
    private volatile java.util.List<String> sourceNames = java.util.List.of();
    private final Thread thread;
    private StatusServer status;
    private Migrations migrations;

    private Engine(final VhostUserServer server, final io.lazyblk.blk.Storage storage) {
        this.server = server;
        this.storage = storage;
        this.thread = new Thread(server::run, "vhost-user-control");
        this.thread.setDaemon(true);
    }

    /** How long an engine whose image another engine holds waits for it when its VM starts, unless told otherwise. */
    public static final Duration DEFAULT_LOCK_WAIT = Duration.ofSeconds(60);

    /**
     * Settings of one engine; {@code localImage == null} with {@code nullSize > 0} selects the null backend.
     *
     * @param lockWait how long to wait for the image's lock when the VM starts, if another engine holds it (a live
     *     migration's destination waits so for the source to let go)
     */
    public record Options(Path socket, Path localImage, long nullSize, int queues, boolean readOnly,
                          int ioThreadsPerQueue, long pollNanos, Duration lockWait) {
        public Options(final Path socket, final Path localImage, final long nullSize, final int queues, final boolean readOnly,
                       final int ioThreadsPerQueue, final long pollNanos) {
            this(socket, localImage, nullSize, queues, readOnly, ioThreadsPerQueue, pollNanos, DEFAULT_LOCK_WAIT);
        }

        public static Options file(final Path socket, final Path image) {
            return new Options(socket, image, 0, 1, false, 0, VhostUserServer.DEFAULT_SPIN_NANOS);
        }

        public Options withQueues(final int n) {
            return new Options(socket, localImage, nullSize, n, readOnly, ioThreadsPerQueue, pollNanos, lockWait);
        }

        public Options withReadOnly(final boolean ro) {
            return new Options(socket, localImage, nullSize, queues, ro, ioThreadsPerQueue, pollNanos, lockWait);
        }

        public Options withLockWait(final Duration d) {
            return new Options(socket, localImage, nullSize, queues, readOnly, ioThreadsPerQueue, pollNanos, d);
        }
    }

    /**
     * Where a lazily filled local image comes from, and how fast and how much memory the fill may use.
     *
     * @param sources where pages come from, nearest first (each page from the first that has it)
     * @param tokens where the access token comes from (read at each connect): one for every source, or one per source
     *     in the same order
     * @param pageSize the page map's page size, a power of two from the provider's page size up; 0 = what the local file
     *     was filled in, else 64 KiB or the provider's if larger
     */
    public record LazySource(java.util.List<SourceUri> sources, java.util.List<TokenSource> tokens, long memoryBudget,
                             long fillRateBytesPerSecond, Duration demandTimeout, int pageSize) {
        public LazySource {
            sources = java.util.List.copyOf(sources);
            tokens = java.util.List.copyOf(tokens);
            if (sources.isEmpty()) {
                throw new IllegalArgumentException("no --source given");
            }
            if (tokens.size() != 1 && tokens.size() != sources.size()) {
                throw new IllegalArgumentException(sources.size() + " sources but " + tokens.size()
                    + " tokens: give one --token for all of them, or one per --source in the same order");
            }
        }

        public LazySource(final InetSocketAddress provider, final String image, final TokenSource token, final long memoryBudget,
                          final long fillRateBytesPerSecond, final Duration demandTimeout, final int pageSize) {
            this(java.util.List.of(SourceUri.tcp(provider, image)), java.util.List.of(token), memoryBudget, fillRateBytesPerSecond,
                demandTimeout, pageSize);
        }

        public LazySource(final InetSocketAddress provider, final String image, final TokenSource token, final long memoryBudget,
                          final long fillRateBytesPerSecond, final Duration demandTimeout) {
            this(provider, image, token, memoryBudget, fillRateBytesPerSecond, demandTimeout, 0);
        }

        public LazySource(final InetSocketAddress provider, final String image, final String token, final long memoryBudget,
                          final long fillRateBytesPerSecond, final Duration demandTimeout) {
            this(provider, image, TokenSource.fixed(token), memoryBudget, fillRateBytesPerSecond, demandTimeout, 0);
        }

        /** The image's name at the first source: what a complete local file records it is a copy of. */
        public String image() {
            return sources.get(0).image();
        }

        /** The first source's token. */
        public TokenSource token() {
            return tokens.get(0);
        }

        public TokenSource token(final int source) {
            return tokens.get(tokens.size() == 1 ? 0 : source);
        }

        /** The first source's TCP address (tests and tools that start with one TCP provider). */
        public InetSocketAddress provider() {
            return sources.get(0).address();
        }

        public LazySource withSources(final java.util.List<SourceUri> s, final java.util.List<TokenSource> t) {
            return new LazySource(s, t, memoryBudget, fillRateBytesPerSecond, demandTimeout, pageSize);
        }
    }

    /**
     * Starts an engine whose local image fills lazily from {@code src}. A local file whose state records a finished
     * fill is served from disk without contacting the provider; a local file of another image is refused.
     */
    public static Engine startLazy(final Options o, final LazySource src) throws IOException {
        return startLazy(o, src, false);
    }

    /**
     * As {@link #startLazy(Options, LazySource)}; with {@code statusOnCaller} the status server gets no thread of its own
     * and is served by the thread that calls {@link #join()} (see {@link #start(Options, boolean)}).
     */
    static Engine startLazy(final Options o, final LazySource src, final boolean statusOnCaller) throws IOException {
        final Path local = o.localImage();
        final io.lazyblk.blk.Storage.Opener opener = () -> openLazy(o, src);
        // The lock first, unless the file is still to be made: a live migration's destination must not even read the
        // state file before the source engine let go of it (it changes until then).
        final io.lazyblk.blk.Storage storage = Files.exists(local)
            ? io.lazyblk.blk.Storage.open(local, false, o.lockWait(), opener)
            : io.lazyblk.blk.Storage.adopt(local, openLazy(o, src), o.lockWait(), opener);
        final Engine[] self = new Engine[1];
        storage.gate(opened -> self[0].migrations.beforeServing(opened, o, src));
        final Engine e = start(o, storage, statusOnCaller);
        self[0] = e;
        e.sourceNames = src.sources().stream().map(SourceUri::toString).toList();
        return e;
    }

    /** The live-migration roles of this engine: a migrate-export's source, a destination's gate. */
    Migrations migrations() {
        return migrations;
    }

    /** The running migrate-export, or null. */
    MigrationExport migrationExport() {
        return migrations.export();
    }

    synchronized MigrationExport migrateExport(final InetSocketAddress listen, final String name, final byte[] secret, final long rate)
        throws IOException {
        return migrations.migrateExport(listen, name, secret, rate);
    }

    /** The backend of a lazily filled local file (see {@link #startLazy}); with its lock held, if the file exists. */
    private static BlockBackend openLazy(final Options o, final LazySource src) throws IOException {
        return openLazy(o.localImage(), o.readOnly(), src);
    }

    /**
     * The backend of a lazily filled local file: a {@link LazyStore} filling it from {@code src}, or the complete copy's
     * file backend if its state file records the switch to disk-only. No lock taken (see {@link #startLazy}); for the
     * image server's host cache of an s3:// image too.
     */
    static BlockBackend openLazy(final Path local, final boolean readOnly, final LazySource src) throws IOException {
        final Path stateFile = PageStateFile.beside(local);
        final java.util.Optional<String> complete = Files.isRegularFile(local) ? PageStateFile.diskOnlyImage(stateFile)
            : java.util.Optional.empty();
        if (complete.isPresent()) {
            if (!complete.get().equals(src.image())) {
                throw new IOException(local + " is a complete copy of image " + complete.get() + ", not of " + src.image()
                    + ": it belongs to another image. Use another --local path, or name the image it holds");
            }
            LOG.info("{} is complete (its state file records the switch to disk-only): serving from disk, the provider is not contacted", local);
            return completeCopy(local, stateFile, readOnly);
        }
        byte[] pinned = null;
        Manifest saved = null;
        if (Files.exists(local) && Files.exists(stateFile)) {
            pinned = PageStateFile.identity(stateFile).digest(); // what the seed vouched for when this fill began
            saved = PeerExport.savedManifest(local);
        }
        final PageSource source = openSources(src, pinned, saved);
        try {
            final Manifest m = pages(source, src, Files.exists(local) ? PageStateFile.recordedPageSize(stateFile) : java.util.OptionalInt.empty(),
                local);
            if (!Files.exists(local)) {
                // A state file without its image describes nothing any more; the new state file comes first, so a
                // crash between the two leaves a pair the next start accepts.
                Files.deleteIfExists(stateFile);
                PageStateFile.openOrCreate(stateFile, m.size(), m.pageSize(), m.digest()).close();
                // Only the pages that hold data are reserved: zero pages are never written and stay holes.
                LocalImage.createReserved(local, m.size(), m.pageSize(), p -> !m.isZeroPage(p));
            } else if (Files.size(local) != m.size()) {
                throw new IOException(local + " is " + Files.size(local) + " bytes but image " + src.image() + " is " + m.size()
                    + " bytes: it belongs to another image. Use another --local path, or delete it (and " + stateFile.getFileName()
                    + ") to start over");
            } else if (!Files.exists(stateFile)) {
                // Only fill files lazyblk created: a mistyped --local must never be overwritten by the fill.
                throw new IOException(local + " exists but has no " + stateFile.getFileName() + " beside it, so it was not filled by"
                    + " lazyblk and would be overwritten. Give --local a new path (it is created), or delete the file if it is scratch");
            }
            final PageStateFile state = PageStateFile.openOrCreate(stateFile, m.size(), m.pageSize(), m.digest());
            // Only now that the state file proved the local file is this image's: lets image-server export it as a peer later
            // (a live migration's copy is saved too, so that the export refuses it by name: no hashes to check pages against).
            PeerExport.saveManifest(local, source.manifest());
            final LazyStore store = new LazyStore(m, LocalImage.open(local, false), state, source,
                new LazyStore.Options(src.image(), src.memoryBudget(), src.fillRateBytesPerSecond(), src.demandTimeout().toNanos(),
                    source.manifest().isLive()), // a migration's destination: complete only once the final set is fetched again
                bootProfile(source, state));
            LOG.info("lazy fill of {} ({} pages of {} KiB, {} local already) from {}", local, m.pageCount(), m.pageSize() >> 10,
                state.localCount(), src.sources().size() == 1 ? src.sources().get(0) : src.sources());
            return store;
        } catch (final IOException | RuntimeException e) {
            source.close();
            throw e;
        }
    }

    /**
     * The provider's learned boot set for this image, asked once at start (it may cost a round trip, so never on the
     * data path); none if the copy is complete but for the switch, the source has none, or asking fails (the fill works
     * without it).
     */
    private static int[] bootProfile(final PageSource source, final PageStateFile state) {
        if (state.allLocal()) {
            return new int[0];
        }
        try {
            final int[] p = source.bootProfile();
            return p == null ? new int[0] : p;
        } catch (final RuntimeException e) {
            LOG.warn("no boot profile from the provider ({}); the fill goes on without one", e.toString());
            return new int[0];
        }
    }

    /**
     * Connects to the sources (the handshake of each bounded by 10 s) and decides which image is being filled.
     *
     * <p>Who says what the image is: the seed, the last source, which holds the image's secret; or, on a restart, the
     * state file beside the local file, which recorded the digest the seed vouched for when the fill began. Every other
     * source (a host cache, a peer) is hostile input: one whose manifest has another digest is refused with one log line
     * and never used, and the chain goes on without it. Pages from any source are then checked against the pinned
     * manifest's SHA-256 page hashes, which no source can forge.
     *
     * @param pinned the digest recorded by an earlier fill of the local file, or null for a new one
     * @param saved the manifest saved beside the local file by that fill (its digest is checked), or null
     */
    private static PageSource openSources(final LazySource src, final byte[] pinned, final Manifest saved) throws IOException {
        if (src.sources().size() == 1) {
            return src.sources().get(0).open(src.token(0), HANDSHAKE_TIMEOUT); // the seed itself: its manifest is the image
        }
        // A chain: a source that cannot be reached now is kept as a late source, down until a background retry
        // reaches it and proves to serve the pinned image.
        final int n = src.sources().size();
        final int seed = n - 1;
        final PageSource[] open = new PageSource[n];
        final java.util.List<String> names = new java.util.ArrayList<>();
        final StringBuilder failures = new StringBuilder();
        for (int i = 0; i < n; i++) {
            final SourceUri u = src.sources().get(i);
            names.add(u.toString());
            try {
                open[i] = u.open(src.token(i), HANDSHAKE_TIMEOUT);
            } catch (final IOException e) {
                LOG.warn("source {} is unreachable ({}); the fill goes on without it and it is retried in the background", u, e.getMessage());
                failures.append(failures.isEmpty() ? "" : "; ").append(u).append(": ").append(e.getMessage());
            }
        }
        try {
            final Manifest image = authority(src, open, pinned, saved, failures);
            int maxPages = Integer.MAX_VALUE;
            for (int i = 0; i < n; i++) {
                if (open[i] != null && open[i].manifest().isLive()) {
                    // A live migration's export: in a chain it could claim the seed's digest and be filled from unchecked,
                    // and a chain going on without it would fill the golden image, not the VM's disk. Refuse to start.
                    throw new IOException("source " + src.sources().get(i) + " is a live migration's export (lazyblk migrate-export):"
                        + " give it as the only --source. A source engine that still fills from a provider fetches what the"
                        + " destination asks for itself");
                }
                if (open[i] != null && !java.util.Arrays.equals(open[i].manifest().digest(), image.digest())) {
                    final Manifest m = open[i].manifest();
                    final String why = "serves another image than the seed " + src.sources().get(seed) + " vouches for (digest "
                        + m.digestHex().substring(0, 16) + "..., " + m.size() + " bytes in " + m.pageSize() + "-byte pages, against "
                        + image.digestHex().substring(0, 16) + "..., " + image.size() + " bytes in " + image.pageSize()
                        + "-byte pages): a stale or forged copy, or one exported with another --page-size";
                    LOG.warn("source {} {}; it is refused and the chain goes on without it", src.sources().get(i), why);
                    open[i].close();
                    open[i] = new io.lazyblk.pull.chain.RefusedSource(image, why);
                    continue;
                }
                if (open[i] != null) {
                    maxPages = Math.min(maxPages, open[i].maxPagesPerFetch());
                }
            }
            if (maxPages == Integer.MAX_VALUE) {
                maxPages = 1; // nothing is up: late sources promise the least and must offer at least that
            }
            final java.util.List<PageSource> chain = new java.util.ArrayList<>();
            for (int i = 0; i < n; i++) {
                chain.add(open[i] != null ? open[i] : new LateSource(src.sources().get(i), src.token(i), image, maxPages, HANDSHAKE_TIMEOUT));
            }
            try {
                return new io.lazyblk.pull.chain.SourceChain(chain, names);
            } catch (final IllegalArgumentException e) {
                chain.forEach(PageSource::close);
                throw e;
            }
        } catch (final IOException | RuntimeException e) {
            for (final PageSource s : open) {
                if (s != null) {
                    s.close();
                }
            }
            throw e;
        }
    }

    /** The manifest of the image being filled: the one the state file pinned, else the seed's (see {@link #openSources}). */
    private static Manifest authority(final LazySource src, final PageSource[] open, final byte[] pinned, final Manifest saved,
                                      final CharSequence failures) throws IOException {
        final int seed = open.length - 1;
        if (open[seed] != null && open[seed].manifest().isLive()) {
            throw new IOException("the seed " + src.sources().get(seed) + " is a live migration's export: it can only be an engine's"
                + " only --source (a chain checks its pages against the seed's hashes, which an export has not)");
        }
        if (pinned == null) {
            if (open[seed] == null) {
                throw new IOException("the seed " + src.sources().get(seed) + " (the last --source, which says what the image is) is"
                    + " unreachable, and no earlier fill of this local file recorded which image it is; other sources cannot be"
                    + " trusted to say. Start again once the seed answers (" + failures + ")");
            }
            return open[seed].manifest();
        }
        if (open[seed] != null && !java.util.Arrays.equals(open[seed].manifest().digest(), pinned)) {
            // The seed serves something else now: the image changed upstream, and this copy cannot be completed from
            // it. The state file refuses it below, with the message that says what to do.
            return open[seed].manifest();
        }
        for (final PageSource s : open) {
            if (s != null && !s.manifest().isLive() && java.util.Arrays.equals(s.manifest().digest(), pinned)) {
                return s.manifest();
            }
        }
        if (saved != null && !saved.isLive() && java.util.Arrays.equals(saved.digest(), pinned)) {
            return saved; // nothing that serves this image is up now: late sources will be, and are checked against it
        }
        throw new IOException("no source serving the image this local file holds could be reached: " + failures);
    }

    /**
     * The manifest in the page map's pages: {@code src.pageSize()} if given, else the page size the local file was
     * filled in (a restart resumes in the same pages), else {@link #DEFAULT_PAGE_SIZE} or the provider's if larger.
     */
    static final Duration HANDSHAKE_TIMEOUT = Duration.ofSeconds(10);
    /**
     * The page map's page when nothing says otherwise: 64 KiB, or the provider's page if larger. The fetch unit is the
     * page map's, the hash unit the provider's: with smaller provider pages (image-server --page-size 16k) a miss is
     * answered once the provider pages it reads are hashed (~9 us for 16 KiB against ~35 us for 64 KiB here), while
     * the fill still moves 64 KiB a fetch.
     */
    static final int DEFAULT_PAGE_SIZE = 64 << 10;

    private static Manifest pages(final PageSource source, final LazySource src, final java.util.OptionalInt recorded,
                                  final Path local) throws IOException {
        final Manifest provider = source.manifest();
        if (src.pageSize() > 0 && recorded.isPresent() && recorded.getAsInt() != src.pageSize()) {
            throw new IOException(local + " was filled in pages of " + recorded.getAsInt() + " bytes (its state file says so), not "
                + src.pageSize() + ": restart with --page-size " + recorded.getAsInt() + " (or without --page-size), or give another --local path");
        }
        final int size = src.pageSize() > 0 ? src.pageSize() : recorded.orElse(Math.max(provider.pageSize(), DEFAULT_PAGE_SIZE));
        final Manifest m;
        try {
            m = provider.coarsened(size);
        } catch (final IllegalArgumentException e) {
            throw new IllegalArgumentException("--page-size " + size + ": " + e.getMessage(), e);
        }
        if (m.sourcePagesPerPage() > source.maxPagesPerFetch()) {
            throw new IllegalArgumentException("--page-size " + size + " spans " + m.sourcePagesPerPage() + " of the provider's "
                + provider.pageSize() + "-byte pages, more than one request may carry (" + source.maxPagesPerFetch()
                + "); use at most " + (long) provider.pageSize() * source.maxPagesPerFetch());
        }
        return m;
    }

    /**
     * Starts an engine over a local file ({@code --local}) or the null backend. A local file with a page-state file beside
     * it must be a complete lazily filled copy (its guest's writes are then recorded there, so the file exported as a
     * peer never serves them); a partly filled one is refused, as its absent pages would read as zeros.
     */
    public static Engine start(final Options o) throws IOException {
        return start(o, false);
    }

    /**
     * As {@link #start(Options)}; with {@code statusOnCaller} the status server gets no thread of its own and is served
     * by the thread that calls {@link #join()}, which {@code serve}'s main thread does anyway: one thread less per engine
     * (issue 13: many engines per host, each a JVM). Until {@link #join()} is called, status requests wait in the socket's
     * backlog.
     */
    static Engine start(final Options o, final boolean statusOnCaller) throws IOException {
        if (o.localImage() == null) {
            return start(o, io.lazyblk.blk.Storage.fixed(new NullBackend(o.nullSize())), statusOnCaller);
        }
        final io.lazyblk.blk.Storage storage = io.lazyblk.blk.Storage.open(o.localImage(), o.readOnly(), o.lockWait(), () -> openLocal(o));
        final Engine[] self = new Engine[1];
        storage.gate(opened -> {
            self[0].migrations.forgetHandover();
            return null;
        });
        final Engine e = start(o, storage, statusOnCaller);
        self[0] = e;
        return e;
    }

    /** The backend of {@code --local} without {@code --source}; with its lock held. */
    private static BlockBackend openLocal(final Options o) throws IOException {
        final Path stateFile = PageStateFile.beside(o.localImage());
        if (Files.exists(stateFile)) {
            if (PageStateFile.diskOnlyImage(stateFile).isEmpty()) {
                throw new IOException(o.localImage() + " is a lazily filled copy that is not complete yet (" + stateFile.getFileName()
                    + " says so): its absent pages would read as zeros. Serve it with the --source it is filled from, or, if the"
                    + " file is a plain image, delete " + stateFile.getFileName());
            }
            return completeCopy(o.localImage(), stateFile, o.readOnly());
        }
        return new FileBackend(LocalImage.open(o.localImage(), o.readOnly()));
    }

    /**
     * A complete lazily filled copy, served from disk with its guest's writes recorded in its state file. Refuses a file
     * whose size is not the one its state file records (resized or replaced since the fill).
     */
    private static BlockBackend completeCopy(final Path local, final Path stateFile, final boolean readOnly) throws IOException {
        final PageStateFile.Identity recorded = PageStateFile.identity(stateFile);
        final long size = Files.size(local);
        if (size != recorded.imageSize()) {
            throw new IOException(local + " is " + size + " bytes but " + stateFile.getFileName() + " records a complete copy of "
                + recorded.imageSize() + " bytes: the file was resized or replaced after its fill. Restore it, or delete it and "
                + stateFile.getFileName() + " to fill it again");
        }
        final LocalImage image = LocalImage.open(local, readOnly);
        if (readOnly) {
            return new FileBackend(image); // nothing will be written: nothing to record
        }
        try {
            return new FileBackend(image, PageStateFile.openOrCreate(stateFile, recorded.imageSize(), recorded.pageSize(),
                recorded.digest()));
        } catch (final IOException | RuntimeException e) {
            image.close();
            throw e;
        }
    }

    private static Engine start(final Options o, final io.lazyblk.blk.Storage backend, final boolean statusOnCaller) throws IOException {
        if (o.queues() < 1 || o.queues() > 64) {
            backend.close();
            throw new IllegalArgumentException("--queues must be between 1 and 64, not " + o.queues());
        }
        if (o.ioThreadsPerQueue() < 0 || o.ioThreadsPerQueue() > 64) {
            backend.close();
            throw new IllegalArgumentException("--io-threads must be between 0 and 64, not " + o.ioThreadsPerQueue());
        }
        try {
            final String serial = o.localImage() != null ? "lazyblk-" + o.localImage().getFileName() : "lazyblk-null";
            final VirtioBlkDevice device = new VirtioBlkDevice(backend, o.queues(), o.ioThreadsPerQueue(), serial);
            final Engine e = new Engine(new VhostUserServer(o.socket(), device, o.pollNanos()), backend);
            e.migrations = new Migrations(e, device, backend, o.localImage());
            e.thread.start();
            e.status = new StatusServer(e, o.socket(), !statusOnCaller);
            return e;
        } catch (final IOException | RuntimeException ex) {
            backend.close();
            throw ex;
        }
    }

    java.util.List<String> sourceNames() {
        return sourceNames;
    }

    /** Times requests for the latency histogram (see {@link VirtioBlkDevice#timeRequests}). */
    void timeRequests(final boolean on) {
        migrations.device().timeRequests(on);
    }

    /** Everything the device answered: see {@link VirtioBlkDevice#answered}. */
    void answered(final long[] counts, final long[] latency) {
        migrations.device().answered(counts, latency);
    }

    /** The lazy store, or null when the engine serves a complete local file (or has none open: see {@link #storage()}). */
    public LazyStore lazyStore() {
        return storage.current() instanceof LazyStore l ? l : null;
    }

    /** The image and whether this engine holds it (a live migration hands it from engine to engine). */
    public io.lazyblk.blk.Storage storage() {
        return storage;
    }

    /** Why the engine's storage failed (sticky: every FLUSH fails since), with what to do; null while healthy. */
    public String storageFailure() {
        final BlockBackend b = storage.current();
        return b == null ? null : b.failure();
    }

    public long sizeBytes() {
        return storage.sizeBytes();
    }

    /**
     * Blocks until the server stops; for an engine started with its status server on the caller, serves status requests
     * on this thread meanwhile (until {@link #close()}, or the server stops by itself).
     */
    public void join() throws InterruptedException {
        if (!status.ownThread()) {
            status.serveUntil(() -> !thread.isAlive());
        }
        thread.join();
    }

    /** The status as {@code lazyblk status --format kv} prints it. */
    public java.util.Map<String, String> status() {
        return status.status();
    }

    @Override
    public void close() {
        if (status != null) {
            status.close();
        }
        if (migrations != null) {
            migrations.close();
        }
        server.close();
        try {
            thread.join(30_000);
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        storage.close();
    }
}
