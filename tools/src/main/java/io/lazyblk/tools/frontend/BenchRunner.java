package io.lazyblk.tools.frontend;

import io.lazyblk.vhost.proto.Protocol;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Drives a vhost-user-blk back end as fast as one front end can: connects, lays out preallocated request slots in
 * guest RAM, runs one {@link BenchWorker} thread per queue (busy-polling, or sleeping on the call eventfd: see
 * {@link BenchWait}) for a {@link #WARMUP_SECONDS} s warm-up plus the measured seconds, drains, and reports throughput
 * and latency percentiles of the measured window. {@link #runAll} drives several back ends at once over one window.
 *
 * <p>Requests go through indirect tables when INDIRECT_DESC is negotiated (as Linux's virtio-blk driver sends
 * them), else as three-descriptor chains. Stateless; each run uses its own connections.
 */
public final class BenchRunner {
    public static final int WARMUP_SECONDS = 1;
    /** Slack over the run's length before the workers are declared stuck (each also has its own stall check). */
    private static final long JOIN_SLACK_MILLIS = 30_000;
    private static final long MIB = 1L << 20;

    private BenchRunner() {
    }

    /** Written by whoever fails first, read by every worker: stop submitting and drain. */
    static final class StopFlag {
        volatile boolean stopped;
    }

    /** Runs {@code o} against its socket. */
    public static BenchResult run(final BenchOptions o) throws IOException, InterruptedException {
        return runAll(o, List.of(o.socket())).get(0);
    }

    /**
     * Runs {@code o} against every one of {@code sockets} at once: one front end (connection, guest RAM, queue threads)
     * per socket, all connected first and then started together, so every result covers the same measured window.
     *
     * @return one result per socket, in the order given
     * @throws IOException if a connection or handshake fails, or any queue of any front end fails or stalls
     */
    public static List<BenchResult> runAll(final BenchOptions o, final List<Path> sockets) throws IOException, InterruptedException {
        if (sockets.isEmpty()) {
            throw new IllegalArgumentException("no socket to run against");
        }
        final List<Target> targets = new ArrayList<>(sockets.size());
        try {
            for (final Path s : sockets) {
                targets.add(connect(o.withSocket(s)));
            }
            return runWorkers(targets, o);
        } finally {
            for (final Target t : targets) {
                t.fe().close();
            }
        }
    }

    /** One connected front end and what its requests look like. */
    private record Target(VhostUserFrontend fe, BenchOptions o, boolean indirect, int segmentBytes, long diskBytes) {
    }

    private static Target connect(final BenchOptions o) throws IOException {
        final int queueSize = Math.min(1024, Math.max(128, Integer.highestOneBit(3 * o.iodepth() - 1) << 1));
        // No per-head indirect tables: each worker writes one table per request slot, once.
        final FrontendConfig cfg = FrontendConfig.defaults().withQueues(o.queues()).withQueueSize(queueSize).withIndirectEntries(0);
        // Rings, slot metadata and data buffers per queue, plus slack; rounded to 2 MiB.
        final long slotBytes = 4096 + ((o.blockSize() + 4095L) & -4096L) + 4096;
        final long ramBytes = ((o.queues() * (MIB + o.iodepth() * slotBytes) + 2 * MIB) + 2 * MIB - 1) & -(2 * MIB);
        final VhostUserFrontend fe = VhostUserFrontend.connect(o.socket(), GuestRam.create(ramBytes), cfg);
        try {
            final BlkConfig config = fe.blkConfig();
            if (o.pattern().write && fe.hasFeature(VirtioBlk.F_RO)) {
                throw new IOException("the device is read-only (VIRTIO_BLK_F_RO); cannot run " + o.pattern());
            }
            if (config.bytes() < (long) o.blockSize() * o.queues()) {
                throw new IOException("disk of " + config.bytes() + " bytes is smaller than one " + o.blockSize() + "-byte block per queue");
            }
            final boolean indirect = fe.hasFeature(Protocol.F_INDIRECT_DESC);
            final int segmentBytes = fe.hasFeature(VirtioBlk.F_SIZE_MAX) && config.sizeMax() > 0
                ? Math.min(o.blockSize(), config.sizeMax()) : o.blockSize();
            final int segments = (o.blockSize() + segmentBytes - 1) / segmentBytes;
            if (fe.hasFeature(VirtioBlk.F_SEG_MAX) && config.segMax() > 0 && segments > config.segMax()) {
                throw new IOException(o.blockSize() + "-byte requests need " + segments + " segments; the device takes " + config.segMax());
            }
            if (!indirect && (long) (segments + 2) * o.iodepth() > queueSize) {
                throw new IOException("without indirect descriptors " + o.iodepth() + " requests of " + (segments + 2)
                    + " descriptors do not fit a " + queueSize + "-entry queue");
            }
            return new Target(fe, o, indirect, segmentBytes, config.bytes());
        } catch (final IOException | RuntimeException e) {
            fe.close();
            throw e;
        }
    }

    private static List<BenchResult> runWorkers(final List<Target> targets, final BenchOptions o) throws IOException, InterruptedException {
        final long t0 = System.nanoTime();
        final long measureStart = o.singlePass() ? t0 : t0 + WARMUP_SECONDS * 1_000_000_000L;
        // Distinct-stride runs end on their own (every stride read, or their seconds after their warm-up): cap at a minute.
        final long measureEnd = o.distinctStride() > 0 ? t0 + 60_000_000_000L : measureStart + o.seconds() * 1_000_000_000L;
        final StopFlag stop = new StopFlag();
        final AtomicReference<Throwable> failure = new AtomicReference<>();
        final BenchWorker[][] workers = new BenchWorker[targets.size()][o.queues()];
        final List<Thread> threads = new ArrayList<>(targets.size() * o.queues());
        for (int j = 0; j < targets.size(); j++) {
            final Target target = targets.get(j);
            for (int i = 0; i < o.queues(); i++) {
                final BenchWorker w = new BenchWorker(target.fe().queue(i), target.fe().ram(), target.o(), target.indirect(),
                    target.segmentBytes(), target.diskBytes(), measureStart, measureEnd, stop);
                workers[j][i] = w;
                final String where = targets.size() == 1 ? "" : target.o().socket() + ": ";
                threads.add(Thread.ofPlatform().name(targets.size() == 1 ? "bench-q" + i : "bench-" + j + "-q" + i).unstarted(() -> {
                    try {
                        w.run();
                    } catch (final Throwable t) {
                        failure.compareAndSet(null, where.isEmpty() ? t : new IOException(where + t.getMessage(), t));
                        stop.stopped = true;
                    }
                }));
            }
        }
        for (final Thread t : threads) {
            t.start();
        }
        final long joinDeadline = System.currentTimeMillis() + (o.distinctStride() > 0 ? 60_000L
            : ((o.singlePass() ? 0 : WARMUP_SECONDS) + o.seconds()) * 1000L)
            + JOIN_SLACK_MILLIS;
        for (final Thread t : threads) {
            t.join(Math.max(1, joinDeadline - System.currentTimeMillis()));
            if (t.isAlive()) {
                stop.stopped = true;
                throw new IOException(t.getName() + " did not finish within " + JOIN_SLACK_MILLIS / 1000 + " s after the run ended");
            }
        }
        if (failure.get() != null) {
            throw new IOException("benchmark failed: " + failure.get().getMessage(), failure.get());
        }
        final List<BenchResult> results = new ArrayList<>(targets.size());
        for (int j = 0; j < targets.size(); j++) {
            results.add(result(targets.get(j).fe(), workers[j], o));
        }
        return results;
    }

    /** Sums one front end's queues. Their threads have ended: join() made every worker's and queue's counters visible. */
    private static BenchResult result(final VhostUserFrontend fe, final BenchWorker[] workers, final BenchOptions o) {
        final LatencyHistogram all = new LatencyHistogram();
        long ops = 0;
        long errors = 0;
        long kicks = 0;
        long allocated = 0;
        long cpuNanos = 0;
        long sleeps = 0;
        long wakeups = 0;
        for (int i = 0; i < workers.length; i++) {
            all.add(workers[i].histogram());
            ops += workers[i].ops();
            errors += workers[i].errors();
            allocated += workers[i].allocatedBytes();
            cpuNanos = cpuNanos < 0 || workers[i].cpuNanos() < 0 ? -1 : cpuNanos + workers[i].cpuNanos();
            kicks += fe.queue(i).kicks();
            sleeps += fe.queue(i).sleeps();
            wakeups += fe.queue(i).wakeups();
        }
        return new BenchResult(ops, ops * o.blockSize(), errors, o.seconds(),
            all.valueAtPercentile(50) / 1000.0, all.valueAtPercentile(99) / 1000.0, all.max() / 1000.0, kicks, allocated,
            cpuNanos < 0 ? -1 : cpuNanos / 1e9, sleeps, wakeups);
    }
}
