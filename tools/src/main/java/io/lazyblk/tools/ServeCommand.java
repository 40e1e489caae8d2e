package io.lazyblk.tools;

import io.lazyblk.pull.token.TokenSource;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.function.Function;

/** {@code lazyblk serve}: one engine for one VM. */
@Command(name = "serve", mixinStandardHelpOptions = true,
    description = {"Serve a disk to QEMU over a vhost-user-blk socket.",
        "QEMU: -object memory-backend-memfd,id=mem0,size=1G,share=on -numa node,memdev=mem0",
        "      -chardev socket,id=vub0,path=SOCK,reconnect=1 -device vhost-user-blk-pci,chardev=vub0,num-queues=N"},
    footer = {"", "With --source and neither --token nor --token-file, the access token is taken from the environment variable "
        + TokenSource.ENV + ": one token for all sources, or one per --source in order, separated by commas.",
        "Sizes take binary units (k = 1024, M = 1024^2, G, T; 1.5G is allowed); durations take units (500ms, 30s, 15m, 24h,"
            + " 7d; a bare number is seconds). --log-level LEVEL (any command): trace, debug, info, warn, error, off."})
public final class ServeCommand implements Callable<Integer> {
    @Option(names = "--socket", required = true, description = "UNIX socket path QEMU connects to (created; a socket a stopped engine left there is replaced, anything else is refused)")
    Path socket;

    @Option(names = "--local", description = "raw image file to serve (size a multiple of 512)")
    Path local;

    @Option(names = "--null", converter = SizeConverter.class, paramLabel = "SIZE",
        description = "serve a null disk of SIZE that ignores data (engine overhead benchmarks), instead of --local")
    long nullSize;

    @Option(names = "--queues", defaultValue = "1", description = "virtqueues offered (default ${DEFAULT-VALUE})")
    int queues;

    @Option(names = "--read-only", description = "refuse guest writes (the guest sees a read-only disk)")
    boolean readOnly;

    @Option(names = "--io-threads", defaultValue = "0", description = "dedicated I/O threads per queue; 0 runs I/O on the queue's own thread, no hand-off (default ${DEFAULT-VALUE})")
    int ioThreads;

    @Option(names = "--source", paramLabel = "URI",
        description = {"fill --local lazily from this image source (see image-server); the file is created if missing:",
            "tcp://HOST:PORT/NAME (a provider over TCP), rdma://HOST:PORT/NAME (the same provider by RDMA READs where this host",
            "can, else TCP: see 'lazyblk doctor'), shm://SOCKPATH/NAME (an image server's UNIX socket on this host) or",
            "s3://BUCKET/KEY (an object published by 'lazyblk publish'; S3 credentials and endpoint from AWS_ACCESS_KEY_ID,",
            "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL_S3; no lazyblk token).",
            "Repeat for a chain, nearest first (host cache, peers, seed): each page comes from the first source that has it."})
    java.util.List<String> sources;

    @Option(names = "--token", paramLabel = "TOKEN",
        description = "access token for --source (see 'lazyblk token'); one for all sources, or one per --source in order"
            + " (s3:// sources take none and are not counted)."
            + " Every user of this host can read it in 'ps': prefer --token-file or " + TokenSource.ENV + ".")
    java.util.List<String> tokens;

    @Option(names = "--token-file", paramLabel = "FILE",
        description = "read the access token for --source from FILE (chmod 600): one token for all sources, or one line per"
            + " --source in order; or repeat, one file per --source. Read again at each reconnect: rotate the token by writing"
            + " a new file and renaming it over FILE.")
    java.util.List<Path> tokenFiles;

    /** Where {@value TokenSource#ENV} is looked up: the process's environment; a test may give its own. */
    Function<String, String> environment = System::getenv;

    @Option(names = "--page-size", converter = SizeConverter.class, defaultValue = "0",
        description = "page size of the page map (the unit fetched), a power of two from the provider's page size (the unit its"
            + " SHA-256 hashes cover) to 4M, e.g. 1M for fewer, larger fetches; default: what --local was filled in, else"
            + " 64k or the provider's if larger")
    long pageSize;

    @Option(names = "--memory-budget", converter = SizeConverter.class, defaultValue = "256M",
        description = "RAM the fill may hold: a quarter for pages in flight, a quarter for pages not yet durable, half for"
            + " background-filled pages left in the page cache (older ones are dropped; pages the guest used are kept) (default ${DEFAULT-VALUE})")
    long memoryBudget;

    @Option(names = "--fill-rate", converter = SizeConverter.class, defaultValue = "0", paramLabel = "BYTES_PER_S",
        description = "cap on the background fill in bytes per second, e.g. 100M; 0 = no cap (demand fetches are never capped)")
    long fillRate;

    @Option(names = "--demand-timeout", defaultValue = "30s", paramLabel = "DURATION", converter = DurationConverter.class,
        description = "how long a guest read waits for an absent page while the provider is unreachable before it gets IOERR (default ${DEFAULT-VALUE})")
    java.time.Duration demandTimeout;

    @Option(names = "--lock-wait", defaultValue = "60s", paramLabel = "DURATION", converter = DurationConverter.class,
        description = "if another engine holds the image (a live migration's source), how long to wait for it when the VM"
            + " starts before refusing to serve it (default ${DEFAULT-VALUE})")
    java.time.Duration lockWait;

    @Option(names = "--metrics", paramLabel = "HOST:PORT", converter = ListenAddressConverter.class,
        description = "serve /metrics for Prometheus here (a bare PORT: loopback only); requests, errors and bytes per"
            + " operation, request latency, pages local, bytes fetched, demand-miss latency, mode, sources up")
    java.net.InetSocketAddress metrics;

    @Option(names = "--socket-mode", paramLabel = "OCTAL",
        description = "permissions of the vhost-user socket, e.g. 0660 so that QEMU running as another user of --socket-group"
            + " can connect (default: as the umask leaves it)")
    String socketMode;

    @Option(names = "--socket-group", paramLabel = "GROUP",
        description = "group of the vhost-user socket, e.g. the group QEMU runs as under libvirt (kvm, libvirt-qemu); this user"
            + " must be a member")
    String socketGroup;

    @Option(names = "--poll-us", defaultValue = "50", description = "µs a queue polls its ring after the last request before sleeping; at least 500 while requests are in flight; 0: never poll (default ${DEFAULT-VALUE})")
    long pollMicros;

    @Override
    public Integer call() throws Exception {
        if (sources != null) {
            return serveLazy();
        }
        if ((local == null) == (nullSize == 0)) {
            System.err.println("lazyblk serve: give exactly one of --local IMAGE or --null SIZE");
            return 2;
        }
        if (local != null && !Files.isRegularFile(local)) {
            System.err.println("lazyblk serve: " + local + " is not a file; create one first (e.g. truncate -s 1G " + local + ")");
            return 2;
        }
        final Engine engine;
        try {
            // The status server runs on this thread, in engine.join(): it would only wait there otherwise.
            engine = Engine.start(new Engine.Options(socket, local, nullSize, queues, readOnly, ioThreads, pollMicros * 1000,
                lockWait), true);
        } catch (final IllegalArgumentException e) {
            System.err.println("lazyblk serve: " + e.getMessage());
            return 2;
        }
        if (!prepare(engine)) {
            return 1;
        }
        System.err.printf("lazyblk: serving %s (%d bytes, %d queue%s%s) on %s%n", local != null ? local : "null disk",
            engine.sizeBytes(), queues, queues == 1 ? "" : "s", (readOnly ? ", read-only" : "")
                + (engine.storage().standingBy() ? ", standing by: another engine holds it, see above" : ""), socket);
        ready(local != null ? local.toString() : "null disk");
        engine.join();
        return 0;
    }

    /**
     * What every started engine gets before it is announced: the socket's mode and group, --metrics, and the shutdown
     * hook (systemd told it stops, metrics and engine closed). False, after one line and with the engine closed, if any
     * of it fails.
     */
    private boolean prepare(final Engine engine) {
        if (!socketAccess(engine)) {
            return false;
        }
        final EngineMetrics scrape;
        try {
            scrape = metrics == null ? null : EngineMetrics.start(engine, metrics);
        } catch (final java.io.IOException e) {
            System.err.println("lazyblk serve: cannot serve --metrics on " + StatusServer.hostPort(metrics) + ": " + e.getMessage());
            engine.close();
            return false;
        }
        if (scrape != null) {
            System.err.println("lazyblk: metrics on http://" + StatusServer.hostPort(metrics).replaceFirst(":\\d+$", "") + ":"
                + scrape.port() + "/metrics");
        }
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            notifySystemd("STOPPING=1");
            if (scrape != null) {
                scrape.close();
            }
            engine.close();
        }, "shutdown"));
        return true;
    }

    /** Type=notify: the socket accepts (it was bound and listens before the engine started): systemd may start QEMU. */
    private void ready(final String what) {
        notifySystemd("READY=1\nSTATUS=serving " + what + " on " + socket + "\nMAINPID=" + ProcessHandle.current().pid());
    }

    /** Sends systemd a notification if it asked for one ($NOTIFY_SOCKET); a failure is one warning, not fatal. */
    static void notifySystemd(final String state) {
        try {
            io.lazyblk.sys.SdNotify.notify(state);
        } catch (final java.io.IOException e) {
            System.err.println("lazyblk: " + e.getMessage());
        }
    }

    /** Applies --socket-mode and --socket-group to the vhost-user socket; false (after one line saying why) if it cannot. */
    private boolean socketAccess(final Engine engine) {
        try {
            if (socketMode != null) {
                if (!socketMode.matches("0?[0-7]{3}")) {
                    throw new IllegalArgumentException("--socket-mode " + socketMode + " is not an octal mode such as 0660");
                }
                final int mode = Integer.parseInt(socketMode, 8);
                final java.util.Set<java.nio.file.attribute.PosixFilePermission> perms = java.util.EnumSet.noneOf(
                    java.nio.file.attribute.PosixFilePermission.class);
                final java.nio.file.attribute.PosixFilePermission[] order = {
                    java.nio.file.attribute.PosixFilePermission.OTHERS_EXECUTE, java.nio.file.attribute.PosixFilePermission.OTHERS_WRITE,
                    java.nio.file.attribute.PosixFilePermission.OTHERS_READ, java.nio.file.attribute.PosixFilePermission.GROUP_EXECUTE,
                    java.nio.file.attribute.PosixFilePermission.GROUP_WRITE, java.nio.file.attribute.PosixFilePermission.GROUP_READ,
                    java.nio.file.attribute.PosixFilePermission.OWNER_EXECUTE, java.nio.file.attribute.PosixFilePermission.OWNER_WRITE,
                    java.nio.file.attribute.PosixFilePermission.OWNER_READ};
                for (int bit = 0; bit < 9; bit++) {
                    if ((mode & (1 << bit)) != 0) {
                        perms.add(order[bit]);
                    }
                }
                Files.setPosixFilePermissions(socket, perms);
            }
            if (socketGroup != null) {
                final java.nio.file.attribute.GroupPrincipal g = socket.getFileSystem().getUserPrincipalLookupService()
                    .lookupPrincipalByGroupName(socketGroup);
                Files.getFileAttributeView(socket, java.nio.file.attribute.PosixFileAttributeView.class).setGroup(g);
            }
            return true;
        } catch (final java.nio.file.attribute.UserPrincipalNotFoundException e) {
            System.err.println("lazyblk serve: --socket-group " + socketGroup + ": no such group");
        } catch (final java.io.IOException | IllegalArgumentException e) {
            System.err.println("lazyblk serve: cannot set the access of " + socket + ": " + e.getMessage()
                + (socketGroup != null ? " (this user must be a member of " + socketGroup + ")" : ""));
        }
        engine.close();
        return false;
    }

    /** A progress line, rewritten in place once a second while the fill runs (only when stderr is a terminal). */
    private static void showProgress(final Engine engine) {
        while (true) {
            final java.util.Map<String, String> m = engine.status();
            System.err.print("\r" + StatusServer.human(m) + "   ");
            if (!"lazy".equals(m.get("mode")) && !"standby".equals(m.get("mode"))) {
                System.err.println();
                return;
            }
            java.util.concurrent.locks.LockSupport.parkNanos(1_000_000_000L);
        }
    }

    /**
     * Where each source's token comes from, one entry per source: {@code --token} (one for all, or one per source), {@code --token-file}
     * (one file of one token or of one line per source, or one file per source), else {@value TokenSource#ENV} in
     * {@code environment}. Every file and the variable are read once here, so a missing or malformed one is refused at
     * start; files are read again at each connect.
     *
     * @throws IllegalArgumentException saying what is wrong and what to give instead
     */
    static List<TokenSource> tokenSources(final List<String> tokens, final List<Path> files, final int sources,
                                          final Function<String, String> environment) {
        if (tokens != null && files != null) {
            throw new IllegalArgumentException("give --token or --token-file, not both");
        }
        final List<TokenSource> out = new ArrayList<>();
        if (tokens != null) {
            if (tokens.size() != 1 && tokens.size() != sources) {
                throw new IllegalArgumentException(sources + " sources but " + tokens.size()
                    + " tokens: give one --token for all of them, or one per --source in the same order");
            }
            for (int i = 0; i < sources; i++) {
                out.add(TokenSource.fixed(tokens.get(tokens.size() == 1 ? 0 : i)));
            }
            return out;
        }
        if (files != null) {
            if (files.size() != 1 && files.size() != sources) {
                throw new IllegalArgumentException(sources + " sources but " + files.size() + " token files: give one --token-file for"
                    + " all of them (one token, or one line per --source), or one per --source in the same order");
            }
            for (final Path f : files) {
                final int held = read(f).size();
                if (files.size() > 1 && held != 1) {
                    throw new IllegalArgumentException("token file " + f + " holds " + held + " tokens; with one --token-file per --source,"
                        + " each holds that source's token alone");
                }
                if (held != 1 && held != sources) {
                    throw new IllegalArgumentException("token file " + f + " holds " + held + " tokens for " + sources + " sources: give"
                        + " one token for all of them, or one line per --source in the same order");
                }
            }
            for (int i = 0; i < sources; i++) {
                out.add(files.size() == 1 ? TokenSource.file(files.get(0), i) : TokenSource.file(files.get(i), 0));
            }
            return out;
        }
        final String value = environment.apply(TokenSource.ENV);
        if (value == null || value.isBlank()) {
            throw new IllegalArgumentException("--source needs an access token (from 'lazyblk token'): give --token-file FILE, set "
                + TokenSource.ENV + ", or give --token TOKEN (which every user of this host can read in 'ps')");
        }
        final int held = value.split(",", -1).length;
        if (held != 1 && held != sources) {
            throw new IllegalArgumentException(TokenSource.ENV + " holds " + held + " tokens for " + sources + " sources: give one"
                + " token for all of them, or one per --source in the same order, separated by commas");
        }
        for (int i = 0; i < sources; i++) {
            final TokenSource t = TokenSource.env(environment, i);
            try {
                t.token(); // refused now, with its message, rather than at the first connect
            } catch (final IOException e) {
                throw new IllegalArgumentException(e.getMessage(), e);
            }
            out.add(t);
        }
        return out;
    }

    private static List<String> read(final Path tokenFile) {
        try {
            return TokenSource.readFile(tokenFile);
        } catch (final IOException e) {
            throw new IllegalArgumentException(e.getMessage(), e);
        }
    }

    /** A token file others may read is a token others may use: say so (the secret file gets the same warning). */
    private static void warnIfOthersMayRead(final Path file) {
        try {
            final java.util.Set<PosixFilePermission> p = Files.getPosixFilePermissions(file);
            if (p.contains(PosixFilePermission.OTHERS_READ) || p.contains(PosixFilePermission.GROUP_READ)) {
                System.err.println("lazyblk serve: token file " + file + " is readable by "
                    + (p.contains(PosixFilePermission.OTHERS_READ) ? "every user" : "its group")
                    + ": whoever reads it can read the image until the token expires; chmod 600 " + file);
            }
        } catch (final IOException | UnsupportedOperationException e) {
            // not a POSIX file system: nothing to check
        }
    }

    /**
     * One token source per {@code --source}: {@link #tokenSources} for those that take a lazyblk token (given for them
     * alone: one for all, or one per such source in order), {@link TokenSource#NONE} for s3:// ones.
     */
    private List<TokenSource> sourceTokens(final List<SourceUri> parsed) {
        final int needing = (int) parsed.stream().filter(SourceUri::needsToken).count();
        if (needing == 0) {
            if (tokens != null || tokenFiles != null) {
                throw new IllegalArgumentException("s3:// sources take no lazyblk token (S3's credentials decide: AWS_ACCESS_KEY_ID,"
                    + " AWS_SECRET_ACCESS_KEY); drop --token and --token-file");
            }
            return java.util.Collections.nCopies(parsed.size(), TokenSource.NONE);
        }
        final List<TokenSource> given = tokenSources(tokens, tokenFiles, needing, environment);
        final List<TokenSource> out = new ArrayList<>();
        int next = 0;
        for (final SourceUri u : parsed) {
            out.add(u.needsToken() ? given.get(next++) : TokenSource.NONE);
        }
        return out;
    }

    private Integer serveLazy() throws Exception {
        final java.util.List<SourceUri> parsed = new java.util.ArrayList<>();
        try {
            for (final String s : sources) {
                parsed.add(SourceUri.parse(s));
            }
        } catch (final IllegalArgumentException e) {
            System.err.println("lazyblk serve: " + e.getMessage());
            return 2;
        }
        if (local == null) {
            System.err.println("lazyblk serve: --source needs --local FILE (where the image fills in)");
            return 2;
        }
        final List<TokenSource> tokenSources;
        try {
            tokenSources = sourceTokens(parsed);
            for (int i = 0; i < parsed.size(); i++) {
                if (!parsed.get(i).needsToken()) {
                    parsed.set(i, parsed.get(i).withS3Config(io.lazyblk.pull.s3.S3Config.fromEnvironment(environment)));
                }
            }
        } catch (final IllegalArgumentException e) {
            System.err.println("lazyblk serve: " + e.getMessage());
            return 2;
        }
        if (tokenFiles != null) {
            tokenFiles.forEach(ServeCommand::warnIfOthersMayRead);
        }
        if (readOnly || nullSize != 0) {
            System.err.println("lazyblk serve: --source cannot be combined with --read-only or --null");
            return 2;
        }
        final Engine engine;
        try {
            engine = Engine.startLazy(new Engine.Options(socket, local, 0, queues, false, ioThreads, pollMicros * 1000,
                lockWait),
                new Engine.LazySource(parsed, tokenSources, memoryBudget, fillRate, demandTimeout,
                    (int) Math.min(pageSize, Integer.MAX_VALUE)), true);
        } catch (final java.io.IOException | IllegalArgumentException e) {
            System.err.println("lazyblk serve: " + e.getMessage());
            return 1;
        }
        if (!prepare(engine)) {
            return 1;
        }
        System.err.printf("lazyblk: serving %s (%d bytes, %s) on %s; 'lazyblk status --socket %s' shows progress%n", local,
            engine.sizeBytes(), engine.storage().standingBy() ? "standing by: another engine holds it, see above"
                : engine.lazyStore() != null ? "filling lazily from " + String.join(", ", sources)
                : "complete: from disk alone, " + String.join(", ", sources) + " not contacted", socket, socket);
        if (System.console() != null && engine.lazyStore() != null) {
            final Thread progress = new Thread(() -> showProgress(engine), "progress");
            progress.setDaemon(true);
            progress.start();
        }
        ready(local.toString());
        engine.join();
        return 0;
    }
}
