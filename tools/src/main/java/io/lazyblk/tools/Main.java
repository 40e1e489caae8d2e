package io.lazyblk.tools;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** The {@code lazyblk} command line. */
@Command(name = "lazyblk", mixinStandardHelpOptions = true, version = "lazyblk 0.1.0",
    description = "vhost-user-blk backend that boots VMs from images served locally or pulled lazily.",
    subcommands = {ServeCommand.class, io.lazyblk.tools.frontend.BenchCommand.class, BootBenchCommand.class, SourceBenchCommand.class, FillBenchCommand.class,
        DemoCommand.class, StatusCommand.class, MigrateExportCommand.class, ImageServerCommand.class, DoctorCommand.class,
        TokenCommand.class, CommandLine.HelpCommand.class})
public final class Main implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    public static void main(final String[] args) {
        System.exit(run(args));
    }

    /** Runs the CLI and returns its exit code (tests call this instead of {@link #main}). */
    public static int run(final String... args) {
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

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "name a command: serve, status, bench, demo, image-server, token or doctor (see --help)");
    }
}
