package io.lazyblk.tools.frontend;

import org.junit.jupiter.api.Test;
import picocli.CommandLine;

import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

class BenchOptionsTest {
    private static final Path SOCK = Path.of("/nonexistent.sock");

    @Test
    void shouldRejectBlockSizeThatIsNotWholeSectors() {
        assertThrows(IllegalArgumentException.class, () -> new BenchOptions(SOCK, BenchPattern.READ, 1000, 1, 1, 1, 0));
    }

    @Test
    void shouldRejectIodepthThatCannotFitAQueue() {
        assertThrows(IllegalArgumentException.class, () -> new BenchOptions(SOCK, BenchPattern.READ, 4096, 0, 1, 1, 0));
        assertThrows(IllegalArgumentException.class,
            () -> new BenchOptions(SOCK, BenchPattern.READ, 4096, BenchOptions.MAX_IODEPTH + 1, 1, 1, 0));
    }

    @Test
    void shouldRefuseASinglePassOfRandomRequests() {
        assertThrows(IllegalArgumentException.class, () -> new BenchOptions(SOCK, BenchPattern.RANDREAD, 4096, 1, 1, 1, 0).withSinglePass());
    }

    @Test
    void shouldParsePatternsAsFioNamesThem() {
        assertEquals(BenchPattern.RANDWRITE, BenchPattern.parse("randwrite"));
        assertEquals(BenchPattern.READ, BenchPattern.parse("READ"));
        assertThrows(IllegalArgumentException.class, () -> BenchPattern.parse("trim"));
    }

    @Test
    void shouldParseCommandLineSizesWithSuffixes() {
        final BenchCommand cmd = new BenchCommand();
        new CommandLine(cmd).parseArgs("--socket", "/x.sock", "--bs", "1m", "--pattern", "randwrite", "--iodepth", "32");

        assertEquals(1L << 20, cmd.blockSize);
        assertEquals(BenchPattern.RANDWRITE, cmd.pattern);
        assertEquals(32, cmd.iodepth);
        assertEquals(4096L, new io.lazyblk.tools.SizeConverter().convert("4k"));
    }

    @Test
    void shouldTakeSeveralSocketsAndAWaitModeWithPollByDefault() {
        final BenchCommand cmd = new BenchCommand();
        new CommandLine(cmd).parseArgs("--socket", "/a.sock", "--socket", "/b.sock", "--wait", "interrupt");
        final BenchCommand plain = new BenchCommand();
        new CommandLine(plain).parseArgs("--socket", "/a.sock");

        assertEquals(java.util.List.of(Path.of("/a.sock"), Path.of("/b.sock")), cmd.sockets);
        assertEquals(BenchWait.INTERRUPT, cmd.wait);
        assertEquals(BenchWait.POLL, plain.wait);
        assertThrows(CommandLine.ParameterException.class,
            () -> new CommandLine(new BenchCommand()).parseArgs("--socket", "/a.sock", "--wait", "spin"));
    }

    @Test
    void shouldPrintExactlyTheFourFieldsOfTheResultLine() {
        final BenchResult r = new BenchResult(1000, 4_096_000, 0, 2.0, 12.34, 56.78, 90, 10, 0, 0.5, 0, 0);

        assertEquals("iops=500 mbps=2.0 p50_us=12.3 p99_us=56.8", r.line());
        assertEquals(r.line(), r.toString());
    }
}
