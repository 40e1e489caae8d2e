package io.lazyblk.tools;

import io.lazyblk.tools.frontend.Reply;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.vhost.proto.Protocol;
import io.lazyblk.vhost.proto.Request;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;

/**
 * Memory-table messages the front end's own methods do not build (several regions, regions that leave part of a
 * memfd out, ADD/REM_MEM_REG), sent raw with NEED_REPLY so the back end's REPLY_ACK status comes back.
 */
final class MemoryMessages {
    /** struct vhost_user_memory_region, with the fd that backs it. */
    record Region(long gpa, long size, long uva, long mmapOffset, int fd) {
    }

    private MemoryMessages() {
    }

    /** The payload of SET_MEM_TABLE for {@code regions} (any number, any geometry). */
    static byte[] memTablePayload(final Region... regions) {
        final ByteBuffer b = ByteBuffer.allocate(8 + Protocol.REGION_SIZE * regions.length).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(regions.length).putInt(0);
        for (final Region r : regions) {
            b.putLong(r.gpa).putLong(r.size).putLong(r.uva).putLong(r.mmapOffset);
        }
        return b.array();
    }

    static int[] fds(final Region... regions) {
        final int[] fds = new int[regions.length];
        for (int i = 0; i < regions.length; i++) {
            fds[i] = regions[i].fd;
        }
        return fds;
    }

    /** SET_MEM_TABLE with NEED_REPLY; returns the REPLY_ACK status (0 = applied). */
    static long setMemTable(final VhostUserFrontend fe, final Region... regions) throws IOException {
        fe.sendRaw(Request.SET_MEM_TABLE.code, Protocol.VERSION | Protocol.FLAG_NEED_REPLY, memTablePayload(regions), fds(regions));
        return ack(fe, Request.SET_MEM_TABLE);
    }

    /** ADD_MEM_REG (payload: u64 padding, one region) with NEED_REPLY; returns the REPLY_ACK status. */
    static long addMemReg(final VhostUserFrontend fe, final Region r) throws IOException {
        fe.sendRaw(Request.ADD_MEM_REG.code, Protocol.VERSION | Protocol.FLAG_NEED_REPLY, singleRegion(r), r.fd);
        return ack(fe, Request.ADD_MEM_REG);
    }

    /** REM_MEM_REG naming {@code r}, with its fd as QEMU sends it; returns the REPLY_ACK status. */
    static long remMemReg(final VhostUserFrontend fe, final Region r) throws IOException {
        fe.sendRaw(Request.REM_MEM_REG.code, Protocol.VERSION | Protocol.FLAG_NEED_REPLY, singleRegion(r), r.fd);
        return ack(fe, Request.REM_MEM_REG);
    }

    private static byte[] singleRegion(final Region r) {
        return ByteBuffer.allocate(40).order(ByteOrder.LITTLE_ENDIAN)
            .putLong(0).putLong(r.gpa).putLong(r.size).putLong(r.uva).putLong(r.mmapOffset).array();
    }

    private static long ack(final VhostUserFrontend fe, final Request r) throws IOException {
        final Reply reply = fe.readReply();
        assertNotNull(reply, "the back end closed the connection instead of acking " + r);
        assertEquals(r.code, reply.code(), "ack for " + r);
        return reply.u64();
    }
}
