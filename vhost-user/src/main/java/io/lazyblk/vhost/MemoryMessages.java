package io.lazyblk.vhost;

import io.lazyblk.sys.NativeException;
import io.lazyblk.vhost.mem.GuestMemory;
import io.lazyblk.vhost.mem.MemoryRegion;
import io.lazyblk.vhost.proto.Protocol;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.function.IntUnaryOperator;

import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;

/**
 * The memory-table messages (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG): each payload checked and turned into the table
 * the connection is to install. Stateless; called on the connection's control thread.
 */
final class MemoryMessages {
    private static final Logger LOG = LoggerFactory.getLogger(MemoryMessages.class);

    private MemoryMessages() {
    }

    /**
     * SET_MEM_TABLE: maps every region the payload describes (each from its fd, taken with {@code takeFd}).
     *
     * @throws ProtocolException for a malformed payload or a region that cannot be mapped (nothing stays mapped)
     */
    static GuestMemory setMemTable(final MemorySegment payload, final int size, final int nfds, final IntUnaryOperator takeFd)
        throws ProtocolException {
        if (size < 8) {
            throw new ProtocolException("SET_MEM_TABLE payload of " + size + " bytes");
        }
        final int n = payload.get(JAVA_INT_UNALIGNED, 0);
        if (n < 1 || n > Protocol.MAX_REGIONS || size != 8 + n * Protocol.REGION_SIZE) {
            throw new ProtocolException("SET_MEM_TABLE with " + n + " regions in a " + size + "-byte payload");
        }
        if (nfds != n) {
            throw new ProtocolException("SET_MEM_TABLE with " + n + " regions but " + nfds + " fds");
        }
        final List<MemoryRegion> mapped = new ArrayList<>();
        try {
            for (int i = 0; i < n; i++) {
                mapped.add(mapRegion(payload, takeFd.applyAsInt(i), 8 + (long) i * Protocol.REGION_SIZE));
            }
            return GuestMemory.of(mapped);
        } catch (final IllegalArgumentException | NativeException e) {
            mapped.forEach(MemoryRegion::close);
            throw new ProtocolException("SET_MEM_TABLE refused: " + e.getMessage());
        }
    }

    /** ADD_MEM_REG: {@code current} with the region the payload describes added. */
    static GuestMemory addMemReg(final GuestMemory current, final MemorySegment payload, final int nfds,
                                 final IntUnaryOperator takeFd) throws ProtocolException {
        if (nfds != 1) {
            throw new ProtocolException("ADD_MEM_REG without its fd");
        }
        if (current.size() >= Protocol.MAX_MEM_SLOTS) {
            throw new ProtocolException("ADD_MEM_REG beyond " + Protocol.MAX_MEM_SLOTS + " memory slots");
        }
        final MemoryRegion region;
        try {
            region = mapRegion(payload, takeFd.applyAsInt(0), 8);
        } catch (final IllegalArgumentException | NativeException e) {
            throw new ProtocolException("ADD_MEM_REG refused: " + e.getMessage());
        }
        try {
            return current.with(region);
        } catch (final IllegalArgumentException e) {
            region.close();
            throw new ProtocolException("ADD_MEM_REG refused: " + e.getMessage());
        }
    }

    /** REM_MEM_REG: {@code current} without the region the payload names, or null (logged) if none matches. */
    static GuestMemory remMemReg(final GuestMemory current, final MemorySegment payload) {
        final long gpa = payload.get(JAVA_LONG_UNALIGNED, 8);
        final long sz = payload.get(JAVA_LONG_UNALIGNED, 16);
        final long uva = payload.get(JAVA_LONG_UNALIGNED, 24);
        for (final MemoryRegion r : current.regions()) {
            if (r.matches(gpa, sz, uva)) {
                return current.without(r);
            }
        }
        LOG.warn("REM_MEM_REG for a region that is not mapped (gpa=0x{}, size=0x{})", Long.toHexString(gpa), Long.toHexString(sz));
        return null;
    }

    private static MemoryRegion mapRegion(final MemorySegment payload, final int fd, final long off) throws NativeException {
        return MemoryRegion.map(fd, payload.get(JAVA_LONG_UNALIGNED, off), payload.get(JAVA_LONG_UNALIGNED, off + 8),
            payload.get(JAVA_LONG_UNALIGNED, off + 16), payload.get(JAVA_LONG_UNALIGNED, off + 24));
    }
}
