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
        return new CommandLine(new Main()).setCaseInsensitiveEnumValuesAllowed(true).execute(args);
    }

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "name a command: serve, status, bench, demo, image-server, token or doctor (see --help)");
    }
}
