package io.lazyblk.blk;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.util.function.LongSupplier;

/**
 * How hard the background fill may run, from what the guest is doing: flat out while the guest is idle, backed off
 * hard while it waits on demand misses (a boot), and in between while it does I/O the local file serves, ramping up
 * as long as the engine's own CPU leaves room for the guest. {@code --fill-rate} stays a hard cap on top (the fill
 * applies the lower of the two). No threads and no clock of its own: the fill agent feeds it counters and the time
 * ({@link #observe}), and asks for the window of runs in flight ({@link #window()}) and the rate ({@link #rate()}).
 *
 * <ul>
 *   <li>{@link Mode#BACKOFF}: a demand fetch is outstanding, or one was issued in the last {@link #MISS_HOLD_NANOS}.
 *       One run in flight, at {@link #FLOOR_BYTES_PER_SECOND}: the guest's misses meet at most one background request
 *       ahead of them at the provider, and the fill's threads take ~3.5% of a core.</li>
 *   <li>{@link Mode#ACTIVE}: the guest made a request in the last {@link #IDLE_AFTER_NANOS}, no miss lately. The rate
 *       starts at the floor and doubles every {@link #RAMP_NANOS} while the engine's CPU stayed under
 *       {@link #ACTIVE_CPU_CORES} cores; above, it halves (never below the floor). Past {@link #CEILING_BYTES_PER_SECOND}
 *       it is uncapped.</li>
 *   <li>{@link Mode#IDLE}: no request for {@link #IDLE_AFTER_NANOS}: uncapped, the full window.</li>
 * </ul>
 *
 * <p>The floor is what keeps a guest that is busy forever from stopping the fill: at 16 MiB/s a 2.3 GB image is still
 * local in under 2.5 minutes. Not thread-safe: the fill agent's.
 */
final class FillGovernor {
    /** What the guest is doing, as far as the fill is concerned. */
    enum Mode { IDLE, ACTIVE, BACKOFF }

    /**
     * Quiet this long after its last request, the guest is idle. A booting guest's requests come in bursts a few ms
     * apart (it computes in between); 20 ms without one means it waits for nothing from the disk.
     */
    static final long IDLE_AFTER_NANOS = 20_000_000L;
    /**
     * Back-off holds this long after the last miss: a boot's misses come in bursts (readahead, a directory walk) with
     * gaps of a few ms; opening up in each gap would put background requests ahead of the burst's next miss.
     */
    static final long MISS_HOLD_NANOS = 10_000_000L;
    /**
     * The fill's floor: 16 MiB/s, one 256 KiB run per 16 ms. At ~2 CPU-s/GB (engine ~1.6 and a loopback provider
     * ~0.35, measured by bench-fill) that is ~3.5% of a core taken from a busy guest, while a 2.3 GB image still
     * completes in 2.4 min.
     */
    static final long FLOOR_BYTES_PER_SECOND = 16L << 20;
    /** Rate steps while the guest is active: from the floor to uncapped in 7 steps (70 ms) if CPU allows. */
    static final long RAMP_NANOS = 10_000_000L;
    /**
     * Beyond this the rate is uncapped: above what loopback TCP delivers (~1.2 GB/s here), so a cap this high would
     * only cost token bookkeeping.
     */
    static final long CEILING_BYTES_PER_SECOND = 2L << 30;
    /**
     * The engine's CPU while the guest is active, in cores, above which the rate halves. On a 2-core host a TCG guest's
     * vCPU thread needs one core; the engine (request threads, fill, transport) keeps to three quarters of the other,
     * leaving the rest to QEMU's I/O thread and the host.
     */
    static final double ACTIVE_CPU_CORES = 0.75;
    /** Window in BACKOFF: one run at a time. */
    static final int FLOOR_WINDOW = 1;

    private static final Mode[] MODES = Mode.values();

    private final int maxWindow;
    private final LongSupplier cpuNanos;
    private Mode mode = Mode.IDLE;
    private long rate = Long.MAX_VALUE;
    private long lastRequests = Long.MIN_VALUE;
    private long lastMisses = Long.MIN_VALUE;
    private long lastRequestNanos;
    private long lastMissNanos;
    private boolean seenRequest;
    private boolean seenMiss;
    private long lastRampNanos;
    private long lastCpu;
    private long lastObserveNanos;
    private boolean started;
    // Counters for status, read by other threads: written with setOpaque (a plain store on x86, never torn) by the
    // agent, read with getOpaque; nothing else is ordered by them.
    private long backoffs;
    private long backedOffNanos;
    private long activeNanos;
    private int modeOrdinal;
    private static final VarHandle BACKOFFS;
    private static final VarHandle BACKED_OFF;
    private static final VarHandle ACTIVE;
    private static final VarHandle MODE;

    static {
        try {
            final MethodHandles.Lookup l = MethodHandles.lookup();
            BACKOFFS = l.findVarHandle(FillGovernor.class, "backoffs", long.class);
            BACKED_OFF = l.findVarHandle(FillGovernor.class, "backedOffNanos", long.class);
            ACTIVE = l.findVarHandle(FillGovernor.class, "activeNanos", long.class);
            MODE = l.findVarHandle(FillGovernor.class, "modeOrdinal", int.class);
        } catch (final ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    /**
     * @param maxWindow runs in flight while nothing holds the fill back
     * @param cpuNanos the engine process's CPU time so far (read once per {@link #RAMP_NANOS} while the guest is active)
     */
    FillGovernor(final int maxWindow, final LongSupplier cpuNanos) {
        this.maxWindow = Math.max(FLOOR_WINDOW, maxWindow);
        this.cpuNanos = cpuNanos;
    }

    /**
     * Feeds the counters as of {@code now}: guest requests served so far, demand fetches issued so far, and demand
     * fetches outstanding. Cheap: the agent calls it every time it looks at the background.
     */
    void observe(final long now, final long guestRequests, final long demandIssued, final int demandOutstanding) {
        if (!started) {
            started = true;
            lastRequests = guestRequests;
            lastMisses = demandIssued;
            lastObserveNanos = now;
        }
        if (guestRequests != lastRequests) {
            lastRequests = guestRequests;
            lastRequestNanos = now;
            seenRequest = true;
        }
        if (demandIssued != lastMisses) {
            lastMisses = demandIssued;
            lastMissNanos = now;
            seenMiss = true;
        }
        final long elapsed = now - lastObserveNanos;
        lastObserveNanos = now;
        if (mode == Mode.BACKOFF) {
            BACKED_OFF.setOpaque(this, backedOffNanos + elapsed);
        } else if (mode == Mode.ACTIVE) {
            ACTIVE.setOpaque(this, activeNanos + elapsed);
        }
        if (demandOutstanding > 0 || (seenMiss && now - lastMissNanos < MISS_HOLD_NANOS)) {
            if (mode != Mode.BACKOFF) {
                BACKOFFS.setOpaque(this, backoffs + 1);
                setMode(Mode.BACKOFF);
            }
            rate = FLOOR_BYTES_PER_SECOND;
            lastRampNanos = now;
            return;
        }
        if (seenRequest && now - lastRequestNanos < IDLE_AFTER_NANOS) {
            if (mode != Mode.ACTIVE) {
                setMode(Mode.ACTIVE);
                rate = FLOOR_BYTES_PER_SECOND; // from idle or back-off alike: the guest is at work, prove there is room first
                lastRampNanos = now;
                lastCpu = cpuNanos.getAsLong();
                return;
            }
            if (now - lastRampNanos >= RAMP_NANOS) {
                final long cpu = cpuNanos.getAsLong();
                final double cores = (double) (cpu - lastCpu) / (now - lastRampNanos);
                lastCpu = cpu;
                lastRampNanos = now;
                if (cores > ACTIVE_CPU_CORES) {
                    rate = Math.max(FLOOR_BYTES_PER_SECOND, rate == Long.MAX_VALUE ? CEILING_BYTES_PER_SECOND / 2 : rate / 2);
                } else if (rate != Long.MAX_VALUE) {
                    rate = rate * 2 > CEILING_BYTES_PER_SECOND ? Long.MAX_VALUE : rate * 2;
                }
            }
            return;
        }
        setMode(Mode.IDLE);
        rate = Long.MAX_VALUE;
    }

    private void setMode(final Mode m) {
        mode = m;
        MODE.setOpaque(this, m.ordinal());
    }

    /** The current mode; any thread (as of a recent {@link #observe}). */
    Mode mode() {
        return MODES[(int) MODE.getOpaque(this)];
    }

    /** This process's CPU time so far: the engine's cost to the guest, as the governor weighs it. */
    static long processCpuNanos() {
        return CPU.getProcessCpuTime();
    }

    private static final com.sun.management.OperatingSystemMXBean CPU =
        (com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory.getOperatingSystemMXBean();

    /** Background runs that may be in flight now. */
    int window() {
        return mode == Mode.BACKOFF ? FLOOR_WINDOW : maxWindow;
    }

    /** Background bytes per second allowed now; 0 = uncapped. */
    long rate() {
        return rate == Long.MAX_VALUE ? 0 : rate;
    }

    /** Times the fill entered back-off (a miss while it was not backed off). */
    long backoffs() {
        return (long) BACKOFFS.getOpaque(this);
    }

    /** Time spent backed off (demand misses). */
    long backedOffNanos() {
        return (long) BACKED_OFF.getOpaque(this);
    }

    /** Time spent rate-limited by an active guest without misses. */
    long activeNanos() {
        return (long) ACTIVE.getOpaque(this);
    }
}
