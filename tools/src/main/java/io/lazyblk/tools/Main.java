package io.lazyblk.tools;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** The {@code lazyblk} command line. */
@Command(name = "lazyblk", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
    description = "vhost-user-blk backend that boots VMs from images served locally or pulled lazily.",
    subcommands = {ServeCommand.class, io.lazyblk.tools.frontend.BenchCommand.class, BootBenchCommand.class, SourceBenchCommand.class, FillBenchCommand.class, FanoutBenchCommand.class,
        DemoCommand.class, StatusCommand.class, MigrateExportCommand.class, ImageServerCommand.class, PublishCommand.class, DoctorCommand.class,
        TokenCommand.class, CommandLine.HelpCommand.class})
public final class Main implements Runnable {
    /** The version the build wrote into {@code version.properties} (resources-filtered). */
    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() throws java.io.IOException {
            final java.util.Properties p = new java.util.Properties();
            try (java.io.InputStream in = Main.class.getResourceAsStream("version.properties")) {
                if (in == null) {
                    return new String[] {"lazyblk (version unknown: not built by Maven)"};
                }
                p.load(in);
            }
            return new String[] {"lazyblk " + p.getProperty("version") + " (built " + p.getProperty("built") + ")",
                "JVM: " + System.getProperty("java.vm.name") + " " + Runtime.version()};
        }
    }

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    public static void main(final String[] args) {
        System.exit(run(args));
    }

    /** Runs the CLI and returns its exit code (tests call this instead of {@link #main}). */
    public static int run(final String... args) {
        applyLogLevel(args);
        return new CommandLine(new Main()).setCaseInsensitiveEnumValuesAllowed(true)
            .setExecutionExceptionHandler(Main::oneLine).execute(args);
    }

    /**
     * An error a user can meet (a socket in a missing directory, a file they may not open, an image of the wrong size, a
     * value picocli let through): one line naming the command and the problem, exit 1. Anything else is a bug of ours:
     * its stack trace, for the report.
     */
    private static int oneLine(final Exception e, final CommandLine cmd, final CommandLine.ParseResult parsed) throws Exception {
        if (e instanceof java.io.IOException || e instanceof java.io.UncheckedIOException || e instanceof IllegalArgumentException
            || e instanceof IllegalStateException) {
            cmd.getErr().println(cmd.getCommandSpec().qualifiedName() + ": " + e.getMessage());
            cmd.getErr().flush();
            return 1;
        }
        throw e;
    }

    private static final java.util.Set<String> LEVELS = java.util.Set.of("trace", "debug", "info", "warn", "error", "off");

    /** Every command takes {@code --log-level}; it is applied before anything logs (see {@link #applyLogLevel}). */
    @CommandLine.Option(names = "--log-level", scope = CommandLine.ScopeType.INHERIT, paramLabel = "LEVEL",
        description = "trace, debug, info (the default), warn, error or off")
    void logLevel(final String level) {
        if (!LEVELS.contains(level.toLowerCase(java.util.Locale.ROOT))) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--log-level " + level + " is not one of trace, debug,"
                + " info, warn, error, off");
        }
    }

    /**
     * The logger reads its level once, when the first class logs, which picocli's building of the commands may already
     * do: so the level is taken from the arguments before that.
     */
    private static void applyLogLevel(final String... args) {
        for (int i = 0; i < args.length; i++) {
            String level = null;
            if (args[i].equals("--log-level") && i + 1 < args.length) {
                level = args[i + 1];
            } else if (args[i].startsWith("--log-level=")) {
                level = args[i].substring("--log-level=".length());
            }
            if (level != null && LEVELS.contains(level.toLowerCase(java.util.Locale.ROOT))) {
                System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", level.toLowerCase(java.util.Locale.ROOT));
            }
        }
    }

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "name a command: serve, status, bench, demo, image-server, token or doctor (see --help)");
    }
}
