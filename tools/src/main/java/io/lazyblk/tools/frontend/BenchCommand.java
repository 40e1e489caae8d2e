package io.lazyblk.tools.frontend;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.concurrent.Callable;

/**
 * {@code bench}: measures a vhost-user-blk back end with {@link BenchRunner} and prints one line
 * {@code iops=… mbps=… p50_us=… p99_us=…}.
 */
@Command(name = "bench", mixinStandardHelpOptions = true,
    description = "Drive a vhost-user-blk back end from a polling front end and print iops, MB/s and latency.")
public final class BenchCommand implements Callable<Integer> {
    @Option(names = "--socket", required = true, description = "the back end's vhost-user socket")
    Path socket;

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

    @Option(names = "--queues", defaultValue = "1", description = "virtqueues, one polling thread each (default: ${DEFAULT-VALUE})")
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
        final BenchResult r = BenchRunner.run(new BenchOptions(socket, pattern, (int) blockSize, iodepth, seconds, queues, seed));
        System.out.println(r.line());
        if (details) {
            System.err.println(r.details());
        }
        if (r.errors() > 0) {
            System.err.println(r.errors() + " requests completed with an error status");
            return 1;
        }
        return 0;
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
