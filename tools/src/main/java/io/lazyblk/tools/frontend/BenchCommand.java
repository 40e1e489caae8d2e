package io.lazyblk.tools.frontend;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

/**
 * {@code bench}: measures a vhost-user-blk back end with {@link BenchRunner} and prints one line
 * {@code iops=… mbps=… p50_us=… p99_us=…}. Given several sockets, it drives them all at once over the same window and
 * prints that line per socket (with {@code socket=…}), then
 * {@code sockets=N total_iops=… min_iops=… mean_iops=… slowest_over_mean=…}.
 */
@Command(name = "bench", mixinStandardHelpOptions = true,
    description = "Drive a vhost-user-blk back end from a polling (or interrupt-driven) front end and print iops, MB/s and latency.")
public final class BenchCommand implements Callable<Integer> {
    @Option(names = "--socket", required = true, paramLabel = "SOCKET",
        description = "the back end's vhost-user socket; repeat it to drive several back ends at once, one front end each")
    List<Path> sockets;

    @Option(names = "--wait", defaultValue = "poll", converter = WaitConverter.class,
        description = "how a queue thread waits for completions: poll (spin on the used ring, a busy core per queue) or "
            + "interrupt (sleep on the call eventfd with device signals enabled, as a guest's driver does) (default: ${DEFAULT-VALUE})")
    BenchWait wait;

    @Option(names = "--pattern", defaultValue = "randread", converter = PatternConverter.class,
        description = "randread, randwrite, read or write (default: ${DEFAULT-VALUE})")
    BenchPattern pattern;

    @Option(names = {"--bs", "--block-size"}, defaultValue = "4k", converter = io.lazyblk.tools.SizeConverter.class,
        description = "bytes per request, a multiple of 512: 4096, 4k, 1m (default: ${DEFAULT-VALUE})")
    long blockSize;

    @Option(names = "--iodepth", defaultValue = "1", description = "requests in flight per queue (default: ${DEFAULT-VALUE})")
    int iodepth;

    @Option(names = "--seconds", defaultValue = "10", description = "measured seconds after a 1 s warm-up (default: ${DEFAULT-VALUE})")
    int seconds;

    @Option(names = "--queues", defaultValue = "1", description = "virtqueues, one thread each (default: ${DEFAULT-VALUE})")
    int queues;

    @Option(names = "--details", description = "also print ops, errors, kicks, max latency and allocation to stderr")
    boolean details;

    @Option(names = "--seed", defaultValue = "1", description = "random offset seed (default: ${DEFAULT-VALUE})")
    long seed;

    @Override
    public Integer call() throws Exception {
        if (blockSize < 512 || blockSize > (64 << 20) || blockSize % 512 != 0) {
            System.err.println("lazyblk bench: --bs must be a multiple of 512 between 512 and 64m, not " + blockSize);
            return 2;
        }
        final BenchOptions o = new BenchOptions(sockets.get(0), pattern, (int) blockSize, iodepth, seconds, queues, seed).withWait(wait);
        final List<BenchResult> results = BenchRunner.runAll(o, sockets);
        long errors = 0;
        for (int i = 0; i < results.size(); i++) {
            final BenchResult r = results.get(i);
            System.out.println(results.size() == 1 ? r.line() : r.line() + " socket=" + sockets.get(i));
            if (details) {
                System.err.println((results.size() == 1 ? "" : sockets.get(i) + ": ") + r.details());
            }
            errors += r.errors();
        }
        if (results.size() > 1) {
            System.out.println(summary(results));
        }
        if (errors > 0) {
            System.err.println(errors + " requests completed with an error status");
            return 1;
        }
        return 0;
    }

    /** {@code sockets=N total_iops=… min_iops=… mean_iops=… slowest_over_mean=…} over results of one window. */
    static String summary(final List<BenchResult> results) {
        double total = 0;
        double min = Double.MAX_VALUE;
        for (final BenchResult r : results) {
            total += r.iops();
            min = Math.min(min, r.iops());
        }
        final double mean = total / results.size();
        return String.format(Locale.ROOT, "sockets=%d total_iops=%.0f min_iops=%.0f mean_iops=%.0f slowest_over_mean=%.2f",
            results.size(), total, min, mean, mean > 0 ? min / mean : 0);
    }

    static final class WaitConverter implements CommandLine.ITypeConverter<BenchWait> {
        @Override
        public BenchWait convert(final String value) {
            try {
                return BenchWait.parse(value);
            } catch (final IllegalArgumentException e) {
                throw new CommandLine.TypeConversionException(e.getMessage());
            }
        }
    }

    static final class PatternConverter implements CommandLine.ITypeConverter<BenchPattern> {
        @Override
        public BenchPattern convert(final String value) {
            try {
                return BenchPattern.parse(value);
            } catch (final IllegalArgumentException e) {
                throw new CommandLine.TypeConversionException(e.getMessage());
            }
        }
    }
}
