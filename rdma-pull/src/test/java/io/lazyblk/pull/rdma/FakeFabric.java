package io.lazyblk.pull.rdma;

import io.lazyblk.pull.provider.RdmaExporter;
import io.lazyblk.pull.provider.RdmaOffer;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.channels.FileChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A test double of the RDMA fabric, for logic only: the provider side ({@link #exporter()}) maps the image in this
 * process and hands out random rkeys per region; the client side ({@link #connector()}) gives {@link ReadVerbs}
 * whose READs copy from that mapping as a device would, but complete later and out of order, and fail as a device
 * would on a wrong lkey, rkey or range. No DiSNI class is touched.
 */
final class FakeFabric {
    /** Small regions, so an image of a megabyte spans several and reads use more than one rkey. */
    final long stride;
    final int overlap;
    private final Map<Integer, Grant> byRkey = new ConcurrentHashMap<>();
    private final Random random = new Random(11);
    final AtomicInteger windowViolations = new AtomicInteger();
    final AtomicInteger registrations = new AtomicInteger();
    final AtomicInteger badKeys = new AtomicInteger();
    /** Fail the completion of this many-th read (1-based), 0 for never. */
    volatile int failRead;
    private final AtomicInteger reads = new AtomicInteger();
    /** The queue pair the connector made last. */
    volatile Verbs last;

    FakeFabric(final long stride, final int overlap) {
        this.stride = stride;
        this.overlap = overlap;
    }

    RdmaExporter exporter() {
        return new RdmaExporter() {
            @Override
            public Grant offer(final String image, final Path file, final long length, final InetSocketAddress local, final String peer)
                throws Unavailable {
                try {
                    return new FakeFabric.Grant(file, length);
                } catch (final IOException e) {
                    throw new Unavailable("cannot map: " + e.getMessage());
                }
            }

            @Override
            public String describe() {
                return "fake RDMA";
            }

            @Override
            public void close() {
            }
        };
    }

    RdmaSources.Connector connector() {
        final AtomicInteger port = new AtomicInteger(40000);
        return (offer, control, channel, window, timeout) -> {
            final InetSocketAddress source = new InetSocketAddress(InetAddress.getByName("10.9.9.9"), port.incrementAndGet());
            control.claim(source);
            final Verbs v = new Verbs(channel, window, source);
            last = v;
            return v;
        };
    }

    /** One client's grant: the mapping and its rkeys. */
    final class Grant implements RdmaExporter.Grant {
        final Arena arena = Arena.ofShared();
        final MemorySegment image;
        final RdmaOffer offer;
        volatile InetSocketAddress claimed;
        volatile boolean closed;

        Grant(final Path file, final long length) throws IOException {
            try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
                image = ch.map(FileChannel.MapMode.READ_ONLY, 0, length, arena);
            }
            final int count = RdmaOffer.regionCount(length, stride);
            final int[] rkeys = new int[count];
            synchronized (random) {
                for (int i = 0; i < count; i++) {
                    rkeys[i] = random.nextInt();
                }
            }
            offer = new RdmaOffer(new InetSocketAddress(InetAddress.getByName("10.0.0.1"), 4791), length, image.address(), stride,
                (int) Math.min(stride + overlap, length), rkeys);
            for (int i = 0; i < count; i++) {
                byRkey.put(rkeys[i], this);
            }
        }

        @Override
        public RdmaOffer offer() {
            return offer;
        }

        @Override
        public void claim(final InetSocketAddress source) {
            claimed = source;
        }

        @Override
        public void close() {
            closed = true;
            for (final int k : offer.rkeys()) {
                byRkey.remove(k);
            }
            arena.close();
        }
    }

    /** A queue pair whose reads land at a later poll, in random order. */
    final class Verbs implements ReadVerbs {
        private final SocketChannel control;
        private final int window;
        private final InetSocketAddress source;
        private final long[] ids;
        private final long[] locals;
        private final int[] lkeys;
        private final int[] lengths;
        private final long[] remotes;
        private final int[] rkeys;
        private int pending;
        private final Map<Integer, long[]> registered = new ConcurrentHashMap<>();
        private int nextLkey = 1;
        volatile boolean stopped;
        private final Random order = new Random(3);

        Verbs(final SocketChannel control, final int window, final InetSocketAddress source) {
            this.control = control;
            this.window = window;
            this.source = source;
            ids = new long[window];
            locals = new long[window];
            lkeys = new int[window];
            lengths = new int[window];
            remotes = new long[window];
            rkeys = new int[window];
        }

        @Override
        public boolean postRead(final long wrId, final long localAddress, final int lkey, final int length, final long remoteAddress,
                                final int rkey) {
            if (stopped) {
                return false;
            }
            if (pending == window) {
                windowViolations.incrementAndGet(); // a real send queue would refuse: the caller broke its window
                return false;
            }
            ids[pending] = wrId;
            locals[pending] = localAddress;
            lkeys[pending] = lkey;
            lengths[pending] = length;
            remotes[pending] = remoteAddress;
            rkeys[pending] = rkey;
            pending++;
            return true;
        }

        @Override
        public int poll(final long[] outIds, final boolean[] ok) {
            if (stopped || pending == 0) {
                return 0;
            }
            // Some reads are still on the wire: complete a random subset, in random order (possibly none this time).
            final int n = Math.min(outIds.length, order.nextInt(pending + 1));
            for (int k = 0; k < n; k++) {
                final int i = order.nextInt(pending);
                outIds[k] = ids[i];
                ok[k] = land(i);
                pending--;
                ids[i] = ids[pending];
                locals[i] = locals[pending];
                lkeys[i] = lkeys[pending];
                lengths[i] = lengths[pending];
                remotes[i] = remotes[pending];
                rkeys[i] = rkeys[pending];
            }
            return n;
        }

        /** What the device does for read i: check keys and ranges, then move the bytes. */
        private boolean land(final int i) {
            if (failRead > 0 && reads.incrementAndGet() == failRead) {
                return false;
            }
            final long[] reg = registered.get(lkeys[i]);
            if (reg == null || locals[i] < reg[0] || locals[i] + lengths[i] > reg[0] + reg[1]) {
                badKeys.incrementAndGet(); // IBV_WC_LOC_PROT_ERR
                return false;
            }
            final Grant g = byRkey.get(rkeys[i]);
            if (g == null || g.closed || !source.equals(g.claimed)) {
                badKeys.incrementAndGet(); // IBV_WC_REM_ACCESS_ERR: unknown rkey, or not this client's grant
                return false;
            }
            int region = -1;
            for (int r = 0; r < g.offer.regionCount(); r++) {
                if (g.offer.rkey(r) == rkeys[i]) {
                    region = r;
                }
            }
            final long start = g.offer.remoteAddress() + region * stride;
            if (remotes[i] < start || remotes[i] + lengths[i] > start + g.offer.regionBytes(region)) {
                badKeys.incrementAndGet(); // outside the region this rkey covers
                return false;
            }
            MemorySegment.copy(g.image, remotes[i] - g.offer.remoteAddress(),
                MemorySegment.ofAddress(locals[i]).reinterpret(lengths[i]), 0, lengths[i]);
            return true;
        }

        @Override
        public MemoryRegistry.Registrar registrar() {
            return (address, length) -> {
                final int key = nextLkey++;
                registered.put(key, new long[] {address, length});
                registrations.incrementAndGet();
                return new MemoryRegistry.Registration() {
                    @Override
                    public int lkey() {
                        return key;
                    }

                    @Override
                    public void deregister() {
                        registered.remove(key);
                    }
                };
            };
        }

        @Override
        public String describe() {
            return "fake queue pair from " + source;
        }

        @Override
        public void stop() {
            stopped = true;
            pending = 0; // a destroyed queue pair: nothing lands any more
        }

        @Override
        public void close() {
            try {
                control.close();
            } catch (final IOException e) {
                // closing
            }
        }
    }

    static RdmaProbe.Availability usable() {
        return new RdmaProbe.Availability(true, "fake: usable for the test", java.util.List.of(), java.util.List.of(), null,
            java.util.List.of());
    }

    static final Duration TIMEOUT = Duration.ofSeconds(5);
}
