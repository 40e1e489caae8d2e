package io.lazyblk.tools;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageGeometry;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.profile.ProfileSettings;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.SecretFile;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.PrintStream;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;

/** {@code lazyblk image-server}: the image provider, exporting raw images by name to token holders. */
@Command(name = "image-server", mixinStandardHelpOptions = true,
    description = {"Export raw disk images by name to lazyblk engines holding an access token (see 'lazyblk token').",
        "Builds each image's manifest on first use (one read of its data; holes are not read) and caches it as IMAGE.lzbm;",
        "learns which pages boots read on demand and hands them to later engines (IMAGE.lzbprofile); runs until killed."},
    footer = {"", "Sizes take binary units (k = 1024, M = 1024^2, G, T; 1.5G is allowed); durations take units (500ms, 30s, 15m,"
        + " 24h, 7d; a bare number is seconds)."})
public final class ImageServerCommand implements Callable<Integer> {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Option(names = "--listen", converter = ListenAddressConverter.class, paramLabel = "HOST:PORT",
        description = "where to listen for engines over TCP; a bare PORT binds loopback only. Traffic is not encrypted: bind other"
            + " interfaces only on a trusted network")
    InetSocketAddress listen;

    @Option(names = "--unix", paramLabel = "SOCKPATH",
        description = "also (or only) serve engines on this host through a UNIX socket: after the token check each gets a read-only"
            + " fd of the image and reads pages through it from the host's page cache (--source shm://SOCKPATH/NAME)")
    Path unix;

    @Option(names = "--export", required = true, paramLabel = "NAME=PATH",
        description = {"export the raw image at PATH as NAME (repeat for more); or NAME=s3://BUCKET/KEY: a host cache of an image",
            "in S3 (published by 'lazyblk publish'), filled into --fill-dir once, at demand priority when an engine asks",
            "(credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL_S3)"})
    List<String> exports;

    @Option(names = "--fill-dir", paramLabel = "DIR",
        description = "where the local copies of s3:// exports fill (NAME.raw and its state file; a restart resumes)")
    Path fillDir;

    @Option(names = "--fill-memory", converter = SizeConverter.class, paramLabel = "SIZE", defaultValue = "256M",
        description = "RAM each s3:// export's fill may hold, as serve --memory-budget (default ${DEFAULT-VALUE})")
    long fillMemory;

    @Option(names = "--fill-rate", converter = SizeConverter.class, paramLabel = "BYTES_PER_S", defaultValue = "0",
        description = "cap on each s3:// export's background fill in bytes per second, e.g. 100M; 0 = no cap (pages engines ask"
            + " for are never capped)")
    long fillRate;

    /** The s3:// exports' copies, closed after the server on shutdown. */
    private final List<S3HostCache> caches = new ArrayList<>();

    /** Where the AWS variables are looked up: the process's environment; a test may give its own. */
    java.util.function.Function<String, String> environment = System::getenv;

    @Option(names = "--secret-file", required = true, paramLabel = "FILE",
        description = "the secret tokens are signed with (make one: head -c 32 /dev/urandom > FILE && chmod 600 FILE)")
    Path secretFile;

    @Option(names = "--page-size", converter = SizeConverter.class, paramLabel = "SIZE", defaultValue = "64k",
        description = "page size, a power of two from 4k to 4M (default ${DEFAULT-VALUE})")
    long pageSize;

    @Option(names = "--metrics", paramLabel = "HOST:PORT", converter = ListenAddressConverter.class,
        description = "serve /metrics for Prometheus here (a bare PORT: loopback only): clients, bytes sent per image, refusals"
            + " by reason, requests")
    InetSocketAddress metrics;

    @Option(names = "--cache-dir", paramLabel = "DIR",
        description = "where manifests of images in read-only directories are cached (default: ~/.cache/lazyblk/manifests)")
    Path cacheDir;

    // The defaults and their derivation: ImageServer.Limits. Two connections per engine and tcp:// source.
    @Option(names = "--max-connections", paramLabel = "N", defaultValue = "" + ImageServer.Limits.DEFAULT_MAX_CONNECTIONS,
        description = "connections open at once, in all (each holds a thread; an engine holds 2 per tcp:// source); more are"
            + " closed at accept (default ${DEFAULT-VALUE})")
    int maxConnections;

    @Option(names = "--max-connections-per-peer", paramLabel = "N", defaultValue = "" + ImageServer.Limits.DEFAULT_MAX_CONNECTIONS_PER_PEER,
        description = "connections open at once from one peer (a TCP client's IP address; on --unix, a client's uid), so one host"
            + " cannot take every slot (an engine holds 2 per tcp:// source) (default ${DEFAULT-VALUE})")
    int maxConnectionsPerPeer;

    @Option(names = "--idle-timeout", paramLabel = "DURATION", converter = DurationConverter.class, defaultValue = "5m",
        description = "close a TCP client that has asked for nothing this long (none outstanding), e.g. one whose host died;"
            + " an engine just reconnects (default ${DEFAULT-VALUE})")
    java.time.Duration idleTimeout;

    // The defaults and their derivation: io.lazyblk.pull.profile.ProfileSettings.
    @Option(names = "--profile-window", paramLabel = "DURATION", converter = DurationConverter.class, defaultValue = "60s",
        description = "learn boot profiles: the pages an engine's connection asks for on demand within this long after its first"
            + " demand fetch count as its boot; boots are merged into the image's profile (IMAGE.lzbprofile, beside the manifest"
            + " cache) and handed to later engines, which fetch those pages first (default ${DEFAULT-VALUE})")
    java.time.Duration profileWindow;

    @Option(names = "--profile-max", paramLabel = "SIZE", converter = SizeConverter.class, defaultValue = "256M",
        description = "most image bytes a boot profile names (and at most 65536 pages); a profile never drops a page, so this is"
            + " what bounds it (default ${DEFAULT-VALUE})")
    long profileMax;

    @Option(names = "--no-profile",
        description = "learn no boot profiles and hand none out (profile files are left as they are)")
    boolean noProfile;

    @Override
    public Integer call() throws Exception {
        final ImageServer server;
        try {
            server = start(System.out, System.err);
        } catch (final IOException e) {
            System.err.println("lazyblk image-server: " + e.getMessage());
            return 1;
        }
        final ProviderMetrics scrape;
        try {
            scrape = metrics == null ? null : ProviderMetrics.start(server, metrics);
        } catch (final IOException e) {
            System.err.println("lazyblk image-server: cannot serve --metrics on " + StatusServer.hostPort(metrics) + ": " + e.getMessage());
            server.close();
            return 1;
        }
        if (scrape != null) {
            System.err.println("lazyblk image-server: metrics on port " + scrape.port() + " (/metrics)");
        }
        final CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            ServeCommand.notifySystemd("STOPPING=1");
            if (scrape != null) {
                scrape.close();
            }
            server.close();
            closeCaches();
            stopped.countDown();
        }, "shutdown"));
        // Type=notify: ready once every export is open and the listeners accept.
        ServeCommand.notifySystemd("READY=1\nSTATUS=serving " + exports.size() + " image(s)\nMAINPID=" + ProcessHandle.current().pid());
        stopped.await();
        return 0;
    }

    /** Closes the s3:// exports' copies: their fills stop and record what is local. */
    void closeCaches() {
        for (final S3HostCache c : caches) {
            c.close();
        }
        caches.clear();
    }

    /**
     * Checks the arguments, builds or loads every manifest (progress on {@code err}), starts the server and prints one
     * "serving NAME (SIZE, N pages, digest HEX...) on HOST:PORT" line per export on {@code out}. Argument errors are
     * {@link CommandLine.ParameterException}s that say what to do.
     */
    ImageServer start(final PrintStream out, final PrintStream err) throws IOException {
        final CommandLine cl = spec.commandLine();
        if (listen == null && unix == null) {
            throw new CommandLine.ParameterException(cl, "give --listen HOST:PORT (engines on other hosts), --unix SOCKPATH (engines on"
                + " this host), or both");
        }
        if (pageSize < PageGeometry.MIN_PAGE || pageSize > PageGeometry.MAX_PAGE || Long.bitCount(pageSize) != 1) {
            throw new CommandLine.ParameterException(cl, "--page-size " + pageSize + " is not a power of two from 4k to 4M (e.g. 64k)");
        }
        final List<String[]> named = new ArrayList<>();
        final Set<String> names = new HashSet<>();
        for (final String e : exports) {
            final int eq = e.indexOf('=');
            if (eq <= 0 || eq == e.length() - 1) {
                throw new CommandLine.ParameterException(cl, "--export '" + e + "' is not NAME=PATH (e.g. --export debian-12=/srv/images/debian-12.raw)");
            }
            final String name = e.substring(0, eq);
            try {
                ImageExport.validateName(name);
            } catch (final IllegalArgumentException x) {
                throw new CommandLine.ParameterException(cl, "--export '" + e + "': " + x.getMessage());
            }
            if (!names.add(name)) {
                throw new CommandLine.ParameterException(cl, "--export: the name '" + name + "' is given twice; each export needs its own name");
            }
            if (e.startsWith("s3://", eq + 1)) {
                try {
                    io.lazyblk.pull.s3.S3Location.parse(e.substring(eq + 1));
                } catch (final IllegalArgumentException x) {
                    throw new CommandLine.ParameterException(cl, "--export " + name + ": " + x.getMessage());
                }
                if (fillDir == null) {
                    throw new CommandLine.ParameterException(cl, "--export " + name + "=s3://... needs --fill-dir DIR, where its local"
                        + " copy fills (e.g. --fill-dir /var/lib/lazyblk/cache)");
                }
                named.add(new String[] {name, e.substring(eq + 1)});
                continue;
            }
            final Path image = Path.of(e.substring(eq + 1));
            if (!Files.exists(image)) {
                throw new CommandLine.ParameterException(cl, "--export " + name + ": " + image + " does not exist; give the path of a raw disk image");
            }
            if (!Files.isRegularFile(image) || !Files.isReadable(image)) {
                throw new CommandLine.ParameterException(cl, "--export " + name + ": " + image + " is not a readable regular file"
                    + " (check its permissions; qcow2 and other formats must first be converted: qemu-img convert -O raw IN OUT)");
            }
            named.add(new String[] {name, image.toString()});
        }
        final ImageServer.Limits limits;
        try {
            limits = new ImageServer.Limits(maxConnections, maxConnectionsPerPeer, idleTimeout);
        } catch (final IllegalArgumentException e) {
            throw new CommandLine.ParameterException(cl, "--max-connections " + maxConnections + ", --max-connections-per-peer "
                + maxConnectionsPerPeer + ", --idle-timeout " + idleTimeout.toSeconds() + "s: " + e.getMessage());
        }
        final ProfileSettings profiles;
        try {
            profiles = new ProfileSettings(!noProfile, profileWindow, profileMax);
        } catch (final IllegalArgumentException e) {
            throw new CommandLine.ParameterException(cl, "--profile-window " + profileWindow.toSeconds() + "s, --profile-max "
                + profileMax + ": " + e.getMessage());
        }
        final byte[] secret;
        try {
            secret = SecretFile.read(secretFile);
        } catch (final IOException e) {
            throw new CommandLine.ParameterException(cl, e.getMessage());
        }
        if (listen != null && !listen.getAddress().isLoopbackAddress()) {
            err.println("lazyblk image-server: listening on " + listen.getAddress().getHostAddress()
                + ", reachable from other hosts: the tokens guard the images, but the traffic is not encrypted");
        }
        final ManifestBuilder manifests = new ManifestBuilder(cacheDir != null ? cacheDir : ManifestBuilder.defaultCacheDir());
        final List<ImageExport> list = new ArrayList<>();
        for (final String[] n : named) {
            if (n[1].startsWith("s3://")) {
                final S3HostCache cache;
                try {
                    cache = S3HostCache.open(n[0], io.lazyblk.pull.s3.S3Location.parse(n[1]),
                        io.lazyblk.pull.s3.S3Config.fromEnvironment(environment), fillDir, fillMemory, fillRate);
                } catch (final IllegalArgumentException e) {
                    closeCaches();
                    throw new CommandLine.ParameterException(cl, "--export " + n[0] + ": " + e.getMessage());
                } catch (final IOException e) {
                    closeCaches();
                    throw new IOException("--export " + n[0] + ": " + e.getMessage(), e);
                }
                caches.add(cache);
                final io.lazyblk.blk.LazyStore store = cache.store();
                err.println("lazyblk image-server: " + n[0] + " is a host cache of " + n[1] + " in " + fillDir + ": "
                    + (store == null ? "complete, served from disk" : store.localPages() + " of " + store.pageCount()
                    + " pages local so far; the rest fill in the background and on demand"));
                list.add(cache.export());
                continue;
            }
            if (PeerExport.isEngineLocalFile(Path.of(n[1]))) {
                // An engine's local file (complete or still filling): served as a peer, page by page, with the image's manifest.
                final ImageExport peer;
                try {
                    peer = PeerExport.of(n[0], Path.of(n[1]));
                } catch (final IOException e) {
                    throw new CommandLine.ParameterException(cl, "--export " + n[0] + ": " + e.getMessage());
                }
                final PeerExport.Pages pages = (PeerExport.Pages) peer.availability();
                err.println("lazyblk image-server: " + n[0] + " is an engine's local file: serving it as a peer, " + pages.localPages()
                    + " of " + pages.pageCount() + " pages local so far (pages its guest wrote are never served)");
                list.add(peer);
                continue;
            }
            final ProgressLine progress = new ProgressLine(n[0], err);
            try {
                list.add(ImageExport.of(n[0], Path.of(n[1]), (int) pageSize, manifests, progress));
            } finally {
                progress.finish();
            }
        }
        final ImageServer server;
        try {
            server = ImageServer.start(listen, unix, list, secret, limits, profiles);
        } catch (final IOException | RuntimeException e) {
            closeCaches();
            throw e;
        }
        final String at = (listen != null ? server.address().getAddress().getHostAddress() + ":" + server.port() : "")
            + (listen != null && unix != null ? " and " : "") + (unix != null ? "unix:" + unix : "");
        for (final ImageExport e : list) {
            final Manifest m = e.manifest();
            // The digest says which image this is: engines pin it at their first start (see docs/security.md).
            out.println("serving " + e.name() + " (" + human(m.size()) + ", " + m.pageCount() + " pages, digest "
                + m.digestHex().substring(0, 16) + "...) on " + at);
        }
        out.flush();
        return server;
    }

    static String human(final long bytes) {
        final String[] units = {"bytes", "KiB", "MiB", "GiB", "TiB"};
        double v = bytes;
        int u = 0;
        while (v >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        return u == 0 ? bytes + " bytes" : String.format(Locale.ROOT, "%.1f %s", v, units[u]);
    }

    /** A progress line on stderr, only once a build has taken over a second, refreshed at most 4 times a second. */
    private static final class ProgressLine implements ManifestBuilder.Progress {
        private static final long QUIET_NANOS = 1_000_000_000L;
        private static final long REFRESH_NANOS = 250_000_000L;
        private final String name;
        private final PrintStream err;
        private final long start = System.nanoTime();
        private long last;
        private boolean printed;

        ProgressLine(final String name, final PrintStream err) {
            this.name = name;
            this.err = err;
        }

        @Override
        public void update(final long done, final long total) {
            final long now = System.nanoTime();
            if (now - start < QUIET_NANOS || (done < total && now - last < REFRESH_NANOS)) {
                return;
            }
            last = now;
            printed = true;
            err.printf(Locale.ROOT, "\rlazyblk image-server: building the manifest of %s: %3d%% (%s of %s)", name,
                total == 0 ? 100 : done * 100 / total, human(done), human(total));
            err.flush();
        }

        void finish() {
            if (printed) {
                err.println();
            }
        }
    }
}
