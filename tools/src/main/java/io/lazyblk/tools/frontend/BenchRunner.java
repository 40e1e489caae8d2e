package io.lazyblk.tools.frontend;

import io.lazyblk.vhost.proto.Protocol;

import java.io.IOException;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Drives a vhost-user-blk back end as fast as one front end can: connects, lays out preallocated request slots in
 * guest RAM, runs one busy-polling {@link BenchWorker} thread per queue for a {@link #WARMUP_SECONDS} s warm-up
 * plus the measured seconds, drains, and reports throughput and latency percentiles of the measured window.
 *
 * <p>Requests go through indirect tables when INDIRECT_DESC is negotiated (as Linux's virtio-blk driver sends
 * them), else as three-descriptor chains. Stateless; each {@link #run} uses its own connection.
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

    public static BenchResult run(final BenchOptions o) throws IOException, InterruptedException {
        final int queueSize = Math.min(1024, Math.max(128, Integer.highestOneBit(3 * o.iodepth() - 1) << 1));
        // No per-head indirect tables: each worker writes one table per request slot, once.
        final FrontendConfig cfg = FrontendConfig.defaults().withQueues(o.queues()).withQueueSize(queueSize).withIndirectEntries(0);
        // Rings, slot metadata and data buffers per queue, plus slack; rounded to 2 MiB.
        final long slotBytes = 4096 + ((o.blockSize() + 4095L) & -4096L) + 4096;
        final long ramBytes = ((o.queues() * (MIB + o.iodepth() * slotBytes) + 2 * MIB) + 2 * MIB - 1) & -(2 * MIB);
        try (VhostUserFrontend fe = VhostUserFrontend.connect(o.socket(), GuestRam.create(ramBytes), cfg)) {
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
            return runWorkers(fe, o, indirect, segmentBytes, config.bytes());
        }
    }

    private static BenchResult runWorkers(final VhostUserFrontend fe, final BenchOptions o, final boolean indirect,
                                          final int segmentBytes, final long diskBytes) throws IOException, InterruptedException {
        final long t0 = System.nanoTime();
        final long measureStart = o.singlePass() ? t0 : t0 + WARMUP_SECONDS * 1_000_000_000L;
        // Distinct-stride runs end on their own (every stride read, or their seconds after their warm-up): cap at a minute.
        final long measureEnd = o.distinctStride() > 0 ? t0 + 60_000_000_000L : measureStart + o.seconds() * 1_000_000_000L;
        final StopFlag stop = new StopFlag();
        final AtomicReference<Throwable> failure = new AtomicReference<>();
        final BenchWorker[] workers = new BenchWorker[o.queues()];
        final Thread[] threads = new Thread[o.queues()];
        for (int i = 0; i < workers.length; i++) {
            workers[i] = new BenchWorker(fe.queue(i), fe.ram(), o, indirect, segmentBytes, diskBytes, measureStart, measureEnd, stop);
            final BenchWorker w = workers[i];
            threads[i] = Thread.ofPlatform().name("bench-q" + i).unstarted(() -> {
                try {
                    w.run();
                } catch (final Throwable t) {
                    failure.compareAndSet(null, t);
                    stop.stopped = true;
                }
            });
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
        final LatencyHistogram all = new LatencyHistogram();
        long ops = 0;
        long errors = 0;
        long kicks = 0;
        long allocated = 0;
        for (int i = 0; i < workers.length; i++) {
            all.add(workers[i].histogram());
            ops += workers[i].ops();
            errors += workers[i].errors();
            allocated += workers[i].allocatedBytes();
            kicks += fe.queue(i).kicks(); // the worker thread has ended: join() made its counter visible
        }
        return new BenchResult(ops, ops * o.blockSize(), errors, o.seconds(),
            all.valueAtPercentile(50) / 1000.0, all.valueAtPercentile(99) / 1000.0, all.max() / 1000.0, kicks, allocated);
    }
}
