package io.lazyblk.pull.rdma;

import com.ibm.disni.verbs.IbvCQ;
import com.ibm.disni.verbs.IbvCompChannel;
import com.ibm.disni.verbs.IbvContext;
import com.ibm.disni.verbs.IbvMr;
import com.ibm.disni.verbs.IbvPd;
import com.ibm.disni.verbs.IbvQP;
import com.ibm.disni.verbs.IbvQPInitAttr;
import com.ibm.disni.verbs.RdmaCm;
import com.ibm.disni.verbs.RdmaCmEvent;
import com.ibm.disni.verbs.RdmaCmId;
import com.ibm.disni.verbs.RdmaConnParam;
import com.ibm.disni.verbs.RdmaEventChannel;
import com.ibm.disni.verbs.SVCRegMr;
import io.lazyblk.pull.provider.ProviderProtocol;
import io.lazyblk.pull.provider.RdmaExporter;
import io.lazyblk.pull.provider.RdmaOffer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.Inet4Address;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The provider's RDMA side with DiSNI. Per client whose token the TCP hello accepted: the image is mapped read-only
 * and registered for remote read in a protection domain of its own (in regions: DiSNI registers at most 2 GiB at
 * once), and the offer carries those rkeys. The client then claims the CM source address it will connect from; a
 * connect request from that address, and from no other, gets a queue pair in that protection domain, so the rkeys
 * work only on that client's queue pair. Ending the client's TCP connection, or its RDMA disconnect, destroys the
 * queue pair and then deregisters and unmaps. One RDMA CM listener per local IPv4 address clients reach us on,
 * bound to an ephemeral CM port, each with one thread for its CM events. Thread-safe.
 */
final class DisniExporter implements RdmaExporter {
    private static final Logger LOG = LoggerFactory.getLogger(DisniExporter.class);
    /** Regions start every 1 GiB... */
    static final long STRIDE = 1L << 30;
    /** ...and overlap by the most one read may span (a TCP request's limit), so every read lies in one region. */
    static final int OVERLAP = ProviderProtocol.MAX_BYTES_PER_REQUEST;
    /** A claimed grant must be connected within this: a client that claims and never connects holds a pinned image. */
    private static final long CLAIM_TIMEOUT_NANOS = 10_000_000_000L;
    /** getCmEvent's wait: how quickly a listener thread notices close(). */
    private static final int EVENT_WAIT_MILLIS = 500;
    /** Reads a client may have in flight against us (the QP's responder resources are what DiSNI's native code sets). */
    private static final int SERVER_QP_WR = 1;
    /** Connect requests a CM listener queues before its thread handles them: as the TCP listener's backlog. */
    private static final int CM_BACKLOG = 128;

    private final Map<InetAddress, Listener> listeners = new ConcurrentHashMap<>();
    /** Set by close() (any thread), read by connection threads asking for offers: volatile so they see it at once. */
    private volatile boolean closing;

    @Override
    public Grant offer(final String image, final Path file, final long length, final InetSocketAddress local, final String peer)
        throws Unavailable {
        if (closing) {
            throw new Unavailable("the provider is shutting down");
        }
        final InetAddress ip = local.getAddress();
        if (!(ip instanceof Inet4Address) || ip.isLoopbackAddress() || ip.isAnyLocalAddress()) {
            throw new Unavailable("the client reached this provider at " + ip + ": RDMA needs the IPv4 address of an RDMA interface"
                + " (DiSNI speaks IPv4 only; no RDMA device serves loopback)");
        }
        if (RdmaOffer.regionCount(length, STRIDE) > RdmaOffer.MAX_REGIONS) {
            throw new Unavailable("image '" + image + "' is too large for an RDMA offer (" + length + " bytes)");
        }
        final Listener l;
        try {
            l = listener(ip);
        } catch (final IOException | RuntimeException e) {
            throw new Unavailable("cannot listen for RDMA CM connections on " + ip + ": " + e.getMessage());
        }
        final DisniGrant g = new DisniGrant(l, image, peer);
        try {
            g.register(file, length);
        } catch (final IOException | RuntimeException e) {
            g.close();
            throw new Unavailable("cannot register image '" + image + "' for RDMA: " + e.getMessage());
        }
        return g;
    }

    private Listener listener(final InetAddress ip) throws IOException {
        synchronized (listeners) {
            Listener l = listeners.get(ip);
            if (l == null) {
                l = new Listener(ip);
                listeners.put(ip, l);
                l.thread.start();
            }
            return l;
        }
    }

    @Override
    public String describe() {
        return "RDMA offered to clients that reach this provider on the IPv4 address of an RDMA interface (" + RdmaProbe.probe().reason() + ")";
    }

    @Override
    public void close() {
        closing = true;
        synchronized (listeners) {
            for (final Listener l : listeners.values()) {
                l.close();
            }
            listeners.clear();
        }
    }

    /** An RDMA CM listener on one local address; its thread handles connect requests and disconnects. */
    private final class Listener {
        final RdmaEventChannel events;
        final RdmaCmId id;
        final IbvContext context;
        final IbvCompChannel compChannel;
        /** Shared by every server queue pair here: the server posts nothing, so it never fills. */
        final IbvCQ cq;
        final InetSocketAddress address;
        final Thread thread;
        /** Grants claimed and not yet connected, by the CM source address their client claimed. */
        final Map<InetSocketAddress, DisniGrant> claims = new ConcurrentHashMap<>();
        /** Connected grants by their CM id (identity: DiSNI's ids have no equals). Guarded by itself. */
        final Map<RdmaCmId, DisniGrant> connected = new IdentityHashMap<>();
        /** Written by close(), read by the listener thread between event waits: volatile, and close() joins it after. */
        volatile boolean stop;

        Listener(final InetAddress ip) throws IOException {
            events = RdmaEventChannel.createEventChannel();
            if (events == null) {
                throw new IOException("cannot create an RDMA CM event channel");
            }
            try {
                id = events.createId(RdmaCm.RDMA_PS_TCP);
                id.bindAddr(new InetSocketAddress(ip, 0));
                id.listen(CM_BACKLOG);
                context = id.getVerbs();
                if (context == null) {
                    throw new IOException(ip + " is not the address of an RDMA interface");
                }
                compChannel = context.createCompChannel();
                cq = context.createCQ(compChannel, 16, 0);
                address = (InetSocketAddress) id.getSource();
            } catch (final IOException | RuntimeException e) {
                events.destroyEventChannel();
                throw e;
            }
            thread = Thread.ofPlatform().daemon().name("lazyblk-rdma-cm-" + ip.getHostAddress()).unstarted(this::run);
            LOG.info("RDMA CM listening on {}", address);
        }

        private void run() {
            while (!stop) {
                final RdmaCmEvent e;
                try {
                    e = events.getCmEvent(EVENT_WAIT_MILLIS);
                } catch (final IOException ex) {
                    if (!stop) {
                        LOG.warn("RDMA CM on {} failed: {}; no more RDMA connections here", address, ex.getMessage());
                    }
                    return;
                }
                if (e != null) {
                    handle(e);
                }
                final long now = System.nanoTime();
                claims.values().removeIf(g -> {
                    if (now - g.claimedAt > CLAIM_TIMEOUT_NANOS) {
                        LOG.warn("RDMA claim of {} for '{}' expired unconnected", g.peer, g.image);
                        g.close();
                        return true;
                    }
                    return false;
                });
            }
        }

        private void handle(final RdmaCmEvent e) {
            final RdmaCmEvent.EventType type = Cm.type(e);
            final RdmaCmId client = e.getConnIdPriv();
            try {
                if (type == RdmaCmEvent.EventType.RDMA_CM_EVENT_CONNECT_REQUEST) {
                    connectRequest(client, e);
                    return;
                }
                e.ackEvent(); // before anything that may destroy the id: rdma_destroy_id waits for its events' acks
                if (type == RdmaCmEvent.EventType.RDMA_CM_EVENT_DISCONNECTED) {
                    final DisniGrant g;
                    synchronized (connected) {
                        g = connected.remove(client);
                    }
                    if (g != null) {
                        LOG.debug("RDMA client {} of '{}' disconnected", g.peer, g.image);
                        g.close();
                    }
                }
            } catch (final IOException | RuntimeException ex) {
                LOG.warn("RDMA CM event {} on {}: {}", type, address, ex.getMessage());
            }
        }

        /** Accepts only the claimed source, into its grant's protection domain; anything else is rejected. */
        private void connectRequest(final RdmaCmId client, final RdmaCmEvent e) throws IOException {
            InetSocketAddress from = null;
            DisniGrant g = null;
            try {
                from = (InetSocketAddress) client.getDestination();
                g = from == null ? null : claims.remove(from);
            } catch (final IOException | RuntimeException ex) {
                // treated as unclaimed
            }
            if (g == null) {
                e.ackEvent();
                LOG.warn("rejected an RDMA connection from {} on {}: no client with a valid token claimed that address", from, address);
                client.destroyId(); // destroying a connect request's id rejects it
                return;
            }
            try {
                g.connect(client, this);
                final RdmaConnParam param = new RdmaConnParam();
                param.setRetry_count((byte) 7);
                param.setRnr_retry_count((byte) 7);
                client.accept(param);
                synchronized (connected) {
                    connected.put(client, g);
                }
                e.ackEvent();
                LOG.info("RDMA connection from {} ({}) accepted for '{}'", from, g.peer, g.image);
            } catch (final IOException | RuntimeException ex) {
                e.ackEvent();
                LOG.warn("RDMA connection from {} for '{}' failed: {}", from, g.image, ex.getMessage());
                g.close();
            }
        }

        void close() {
            stop = true;
            try {
                thread.join();
            } catch (final InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            claims.values().forEach(DisniGrant::close);
            final List<DisniGrant> all;
            synchronized (connected) {
                all = new ArrayList<>(connected.values());
                connected.clear();
            }
            all.forEach(DisniGrant::close);
            try {
                cq.destroyCQ();
                compChannel.destroyCompChannel();
                id.destroyId();
                events.destroyEventChannel();
            } catch (final IOException e) {
                // shutting down
            }
        }
    }

    /** One client's access: a protection domain with the image registered in it, and at most one queue pair. */
    private static final class DisniGrant implements Grant {
        final Listener listener;
        final String image;
        final String peer;
        final IbvPd pd;
        private Arena mapping;
        private final List<IbvMr> regions = new ArrayList<>();
        private RdmaOffer offer;
        private RdmaCmId id;
        private InetSocketAddress claimed;
        /** Written under the grant's lock by the claiming connection thread before the grant is published in claims
         *  (a ConcurrentHashMap put: happens-before the listener thread's read of it there); volatile for the
         *  expiry scan, which reads it without the lock. */
        volatile long claimedAt;
        private boolean closed;

        DisniGrant(final Listener listener, final String image, final String peer) throws Unavailable {
            this.listener = listener;
            this.image = image;
            this.peer = peer;
            try {
                this.pd = listener.context.allocPd();
            } catch (final IOException e) {
                throw new Unavailable("cannot allocate an RDMA protection domain: " + e.getMessage());
            }
        }

        /** Maps the image read-only and registers it for remote read only (never local or remote write). */
        synchronized void register(final Path file, final long length) throws IOException {
            mapping = Arena.ofShared();
            final MemorySegment image;
            try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
                image = ch.map(FileChannel.MapMode.READ_ONLY, 0, length, mapping);
            }
            final int count = RdmaOffer.regionCount(length, STRIDE);
            final int regionLength = (int) Math.min(STRIDE + OVERLAP, length);
            final int[] rkeys = new int[count];
            for (int i = 0; i < count; i++) {
                final long start = i * STRIDE;
                final int bytes = (int) Math.min(regionLength, length - start);
                final SVCRegMr call = pd.regMr(image.address() + start, bytes, IbvMr.IBV_ACCESS_REMOTE_READ);
                final IbvMr mr = call.execute().getMr();
                call.free();
                regions.add(mr);
                rkeys[i] = mr.getRkey();
            }
            offer = new RdmaOffer(listener.address, length, image.address(), STRIDE, regionLength, rkeys);
        }

        @Override
        public synchronized RdmaOffer offer() {
            return offer;
        }

        @Override
        public void claim(final InetSocketAddress source) throws Unavailable {
            synchronized (this) {
                if (closed) {
                    throw new Unavailable("the grant was revoked");
                }
                if (claimed != null) {
                    throw new Unavailable("this connection already claimed " + claimed);
                }
                claimed = source;
                claimedAt = System.nanoTime();
            }
            if (listener.claims.putIfAbsent(source, this) != null) {
                throw new Unavailable(source + " is claimed by another client");
            }
        }

        /** Creates this client's queue pair in the grant's protection domain: the only one there. */
        synchronized void connect(final RdmaCmId client, final Listener l) throws IOException {
            if (closed) {
                throw new IOException("the grant was revoked before the client connected");
            }
            final IbvQPInitAttr attr = new IbvQPInitAttr();
            attr.cap().setMax_send_wr(SERVER_QP_WR);
            attr.cap().setMax_recv_wr(SERVER_QP_WR);
            attr.cap().setMax_send_sge(1);
            attr.cap().setMax_recv_sge(1);
            attr.setQp_type(IbvQP.IBV_QPT_RC);
            attr.setSend_cq(l.cq);
            attr.setRecv_cq(l.cq);
            if (client.createQP(pd, attr) == null) {
                throw new IOException("cannot create a queue pair");
            }
            id = client;
        }

        /** Queue pair first (no READ served after it is destroyed), then the registrations, the domain, the mapping. */
        @Override
        public void close() {
            synchronized (this) {
                if (closed) {
                    return;
                }
                closed = true;
            }
            if (claimed != null) {
                listener.claims.remove(claimed, this);
            }
            final RdmaCmId qpId;
            synchronized (this) {
                qpId = id;
            }
            if (qpId != null) {
                synchronized (listener.connected) {
                    listener.connected.remove(qpId);
                }
                try {
                    qpId.disconnect();
                } catch (final IOException e) {
                    // already disconnected
                }
                try {
                    qpId.destroyQP();
                } catch (final IOException e) {
                    // gone with the device
                }
            }
            for (final IbvMr mr : regions) {
                try {
                    mr.deregMr().execute().free();
                } catch (final IOException e) {
                    // the protection domain goes next
                }
            }
            try {
                pd.deallocPd();
            } catch (final Exception e) {
                // deallocPd declares Exception; nothing more to do
            }
            if (mapping != null) {
                mapping.close();
            }
            if (qpId != null) {
                try {
                    qpId.destroyId();
                } catch (final IOException e) {
                    // nothing more to release
                }
            }
        }
    }
}
