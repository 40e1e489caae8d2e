package io.lazyblk.pull.rdma;

import com.ibm.disni.verbs.IbvCQ;
import com.ibm.disni.verbs.IbvCompChannel;
import com.ibm.disni.verbs.IbvMr;
import com.ibm.disni.verbs.IbvPd;
import com.ibm.disni.verbs.IbvQP;
import com.ibm.disni.verbs.IbvSendWR;
import com.ibm.disni.verbs.IbvSge;
import com.ibm.disni.verbs.IbvWC;
import com.ibm.disni.verbs.RdmaCmId;
import com.ibm.disni.verbs.RdmaEventChannel;
import com.ibm.disni.verbs.SVCPollCq;
import com.ibm.disni.verbs.SVCPostSend;
import com.ibm.disni.verbs.SVCRegMr;

import java.io.IOException;
import java.nio.channels.SocketChannel;
import java.util.LinkedList;

/**
 * {@link ReadVerbs} over a connected DiSNI queue pair. One RDMA READ work request and one poll call are built once
 * ({@link SVCPostSend}, {@link SVCPollCq}: DiSNI serializes them to native memory once) and re-executed with new
 * addresses and keys per read, so a post and a poll allocate nothing. Confined to the transport thread, except
 * {@link #stop()} and {@link #close()}.
 */
final class DisniQueuePair implements ReadVerbs {
    /** What the set-up made, released in reverse order by {@link #release}. */
    static final class Parts {
        RdmaEventChannel events;
        RdmaCmId id;
        IbvPd pd;
        IbvCompChannel compChannel;
        IbvCQ cq;
        IbvQP qp;
        SocketChannel control;
        SVCPostSend post;
        SVCPollCq poll;
        boolean qpDestroyed;
    }

    private static final int SUCCESS = IbvWC.IbvWcStatus.IBV_WC_SUCCESS.ordinal();

    private final Parts p;
    private final String description;
    private final IbvWC[] completions;
    private final SVCPostSend.SendWRMod wrMod;
    private final SVCPostSend.SgeMod sgeMod;
    private final SVCPostSend.RdmaMod rdmaMod;
    private boolean stopped;
    private boolean closed;

    DisniQueuePair(final Parts p, final int window, final String description) throws IOException {
        this.p = p;
        this.description = description;
        final IbvSge sge = new IbvSge();
        final LinkedList<IbvSge> sges = new LinkedList<>();
        sges.add(sge);
        final IbvSendWR wr = new IbvSendWR();
        wr.setSg_list(sges);
        wr.setNum_sge(1);
        wr.setOpcode(IbvSendWR.IBV_WR_RDMA_READ);
        wr.setSend_flags(IbvSendWR.IBV_SEND_SIGNALED); // every read completes visibly: its fetch waits on it
        final LinkedList<IbvSendWR> wrs = new LinkedList<>();
        wrs.add(wr);
        p.post = p.qp.postSend(wrs, null);
        this.wrMod = p.post.getWrMod(0);
        this.sgeMod = wrMod.getSgeMod(0);
        this.rdmaMod = wrMod.getRdmaMod();
        this.completions = new IbvWC[window];
        for (int i = 0; i < window; i++) {
            completions[i] = new IbvWC();
        }
        p.poll = p.cq.poll(completions, window);
    }

    @Override
    public boolean postRead(final long wrId, final long localAddress, final int lkey, final int length, final long remoteAddress,
                            final int rkey) {
        wrMod.setWr_id(wrId);
        sgeMod.setAddr(localAddress);
        sgeMod.setLength(length);
        sgeMod.setLkey(lkey);
        rdmaMod.setRemote_addr(remoteAddress);
        rdmaMod.setRkey(rkey);
        try {
            // ibv_post_send: the HCA reads the work request from the send queue after its doorbell; libibverbs orders
            // the WQE writes before the doorbell write itself, so nothing more is needed on our side.
            p.post.execute();
            return true;
        } catch (final IOException e) {
            return false;
        }
    }

    @Override
    public int poll(final long[] ids, final boolean[] ok) {
        final int n;
        try {
            n = p.poll.execute().getPolls();
        } catch (final IOException e) {
            return -1;
        }
        for (int i = 0; i < n; i++) {
            // A READ's completion is written by the HCA after its data landed (the verbs guarantee our poll sees the
            // data once it sees the completion), so the fetch may be handed on as soon as it is reaped here.
            ids[i] = completions[i].getWr_id();
            ok[i] = completions[i].getStatus() == SUCCESS;
        }
        return n;
    }

    @Override
    public MemoryRegistry.Registrar registrar() {
        return (address, length) -> {
            final SVCRegMr call = p.pd.regMr(address, (int) length, IbvMr.IBV_ACCESS_LOCAL_WRITE);
            final IbvMr mr = call.execute().getMr();
            call.free();
            return new MemoryRegistry.Registration() {
                @Override
                public int lkey() {
                    return mr.getLkey();
                }

                @Override
                public void deregister() {
                    try {
                        mr.deregMr().execute().free();
                    } catch (final IOException e) {
                        // the protection domain goes next; its memory regions with it
                    }
                }
            };
        };
    }

    @Override
    public String describe() {
        return description;
    }

    /** Disconnects (the queue pair enters the error state, posted reads flush) and destroys the queue pair. */
    @Override
    public void stop() {
        if (stopped) {
            return;
        }
        stopped = true;
        stopQp(p);
    }

    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        stop();
        release(p, true);
    }

    private static void stopQp(final Parts p) {
        if (p.qp == null || p.qpDestroyed) {
            return;
        }
        p.qpDestroyed = true;
        try {
            p.id.disconnect();
        } catch (final IOException e) {
            // not connected (set-up failed half-way): destroying the queue pair is what matters
        }
        try {
            p.id.destroyQP(); // from here on the device reads into none of our memory
        } catch (final IOException e) {
            // already gone with the device
        }
    }

    /** Releases what {@code p} holds; the queue pair first. Every step is attempted whatever failed before it. */
    static void release(final Parts p, final boolean connected) {
        stopQp(p);
        if (p.post != null) {
            p.post.free();
        }
        if (p.poll != null) {
            p.poll.free();
        }
        try {
            if (p.cq != null) {
                p.cq.destroyCQ();
            }
            if (p.compChannel != null) {
                p.compChannel.destroyCompChannel();
            }
        } catch (final IOException e) {
            // continue releasing
        }
        try {
            if (p.pd != null) {
                p.pd.deallocPd();
            }
        } catch (final Exception e) {
            // deallocPd declares Exception; continue releasing
        }
        if (p.events != null) {
            Cm.drain(p.events, connected ? 200 : 10); // rdma_destroy_id waits for its events to be acknowledged
            try {
                if (p.id != null) {
                    p.id.destroyId();
                }
                p.events.destroyEventChannel();
            } catch (final IOException e) {
                // nothing more to release
            }
        }
        if (p.control != null) {
            try {
                p.control.close(); // the provider revokes this client's grant when it sees the control connection end
            } catch (final IOException e) {
                // closing
            }
        }
    }
}
