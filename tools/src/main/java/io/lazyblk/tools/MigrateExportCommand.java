package io.lazyblk.tools;

import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.Callable;

/** {@code lazyblk migrate-export}: asks a running engine to export its live disk to a migration's destination engine. */
@Command(name = "migrate-export", mixinStandardHelpOptions = true,
    description = {"Ask a running engine to serve its live disk (guest writes included) to a live migration's destination"
        + " engine, for a migration without shared storage.",
        "The destination is an ordinary lazy engine: serve --local B.img --source tcp://HOST:PORT/NAME --token TOKEN, with a"
            + " token of NAME signed with the same secret (lazyblk token). Then migrate the VM with QMP. The engine tracks"
            + " what its guest changes after the destination fetched it and hands the destination that final set at the"
            + " switchover; 'lazyblk status' then says migration=complete once the destination has the whole disk."})
public final class MigrateExportCommand implements Callable<Integer> {
    @Option(names = "--socket", required = true, description = "the running engine's vhost-user socket (as given to serve)")
    Path socket;

    @Option(names = "--listen", required = true, paramLabel = "HOST:PORT", converter = ListenAddressConverter.class,
        description = "where the engine listens for the destination engine (a bare PORT: loopback only; port 0 picks one)")
    InetSocketAddress listen;

    @Option(names = "--name", required = true, description = "the export's name, which the destination's token names")
    String name;

    @Option(names = "--secret-file", required = true, paramLabel = "FILE",
        description = "the secret the destination's token is signed with (read by the engine; make one: head -c 32 /dev/urandom > FILE && chmod 600 FILE)")
    Path secretFile;

    @Option(names = "--rate", converter = SizeConverter.class, defaultValue = "0", paramLabel = "BYTES_PER_S",
        description = "cap on the copy while the guest still runs here, e.g. 100M, so it does not starve the guest's own I/O;"
            + " 0 = none (the destination's --fill-rate and fill governor still apply). After the switchover the"
            + " destination's VM waits for what it lacks: no cap then (default ${DEFAULT-VALUE})")
    long rate;

    @Override
    public Integer call() {
        final String secret = secretFile.toAbsolutePath().normalize().toString();
        if (secret.chars().anyMatch(Character::isWhitespace) || name.chars().anyMatch(Character::isWhitespace)) {
            System.err.println("lazyblk migrate-export: --name and --secret-file must not contain spaces");
            return 2;
        }
        final Map<String, String> m;
        try {
            m = StatusCommand.request(StatusServer.controlSocket(socket), "migrate-export listen=" + StatusServer.hostPort(listen)
                + " name=" + name + " secret-file=" + secret + " rate=" + rate, false);
        } catch (final IOException e) {
            System.err.println("lazyblk migrate-export: cannot reach the engine at " + StatusServer.controlSocket(socket) + " ("
                + e.getMessage() + "); is 'lazyblk serve --socket " + socket + "' running?");
            return 1;
        }
        if (!"1".equals(m.get("ok"))) {
            System.err.println("lazyblk migrate-export: " + m.getOrDefault("error", "the engine gave no answer: " + m));
            return 1;
        }
        System.out.println("exporting the live disk of " + socket + " as " + m.get("name") + " on " + m.get("listen"));
        System.out.println("destination: lazyblk serve --socket B.sock --local B.img --source tcp://" + m.get("listen") + "/"
            + m.get("name") + " --token $(lazyblk token --secret-file SECRET --image " + m.get("name") + " --ttl 1h)");
        return 0;
    }
}
