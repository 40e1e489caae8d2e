package io.lazyblk.pull.rdma;

import com.ibm.disni.verbs.IbvContext;
import com.ibm.disni.verbs.IbvQP;
import com.ibm.disni.verbs.IbvQPInitAttr;
import com.ibm.disni.verbs.RdmaCm;
import com.ibm.disni.verbs.RdmaCmEvent;
import com.ibm.disni.verbs.RdmaConnParam;
import com.ibm.disni.verbs.RdmaEventChannel;
import io.lazyblk.pull.provider.RdmaOffer;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.nio.channels.SocketChannel;
import java.time.Duration;

/**
 * The client's RDMA set-up with DiSNI's verbs: resolve the provider's CM address and route, build an RC queue pair
 * (its own protection domain and completion queue), claim the CM source address over the control connection, connect.
 * Only called after {@link RdmaProbe} found libdisni and an active port. On failure everything made so far is
 * released and an IOException says which step failed.
 */
final class DisniConnector {
    /** RC retries before a READ fails: 7 is the maximum the CM takes (and what most RDMA software uses). */
    private static final byte RETRIES = 7;

    private DisniConnector() {
    }

    static ReadVerbs connect(final RdmaOffer offer, final RdmaControl control, final SocketChannel channel, final int window,
                             final Duration timeout) throws IOException {
        final int millis = (int) Math.max(1, Math.min(Integer.MAX_VALUE, timeout.toMillis()));
        final DisniQueuePair.Parts p = new DisniQueuePair.Parts();
        p.control = channel;
        try {
            p.events = RdmaEventChannel.createEventChannel();
            if (p.events == null) {
                throw new IOException("cannot create an RDMA CM event channel");
            }
            p.id = p.events.createId(RdmaCm.RDMA_PS_TCP);
            p.id.resolveAddr(null, offer.cm(), millis);
            Cm.expect(p.events, RdmaCmEvent.EventType.RDMA_CM_EVENT_ADDR_RESOLVED, millis, "resolving " + offer.cm());
            p.id.resolveRoute(millis);
            Cm.expect(p.events, RdmaCmEvent.EventType.RDMA_CM_EVENT_ROUTE_RESOLVED, millis, "route to " + offer.cm());
            final IbvContext context = p.id.getVerbs();
            p.pd = context.allocPd();
            p.compChannel = context.createCompChannel(); // DiSNI's createCQ wants one; we never wait on it, we poll
            p.cq = context.createCQ(p.compChannel, window, 0);
            final IbvQPInitAttr attr = new IbvQPInitAttr();
            attr.cap().setMax_send_wr(window);
            attr.cap().setMax_recv_wr(1);
            attr.cap().setMax_send_sge(1);
            attr.cap().setMax_recv_sge(1);
            attr.setQp_type(IbvQP.IBV_QPT_RC);
            attr.setSend_cq(p.cq);
            attr.setRecv_cq(p.cq);
            p.qp = p.id.createQP(p.pd, attr);
            if (p.qp == null) {
                throw new IOException("cannot create a queue pair");
            }
            final SocketAddress source = p.id.getSource();
            if (!(source instanceof InetSocketAddress src)) {
                throw new IOException("the CM id has no source address after resolving " + offer.cm());
            }
            control.claim(src); // only a connection from src may use this grant's protection domain on the provider
            final RdmaConnParam param = new RdmaConnParam();
            param.setRetry_count(RETRIES);
            param.setRnr_retry_count(RETRIES);
            p.id.connect(param);
            Cm.expect(p.events, RdmaCmEvent.EventType.RDMA_CM_EVENT_ESTABLISHED, millis, "connecting to " + offer.cm());
            return new DisniQueuePair(p, window, offer.cm() + " from " + src);
        } catch (final IOException | RuntimeException e) {
            DisniQueuePair.release(p, false);
            throw e;
        }
    }
}
