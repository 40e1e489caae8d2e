package io.lazyblk.vhost;

import io.lazyblk.vhost.proto.Protocol;
import io.lazyblk.vhost.proto.Request;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.foreign.MemorySegment;

import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;

/** The config-space messages' header (GET_CONFIG, SET_CONFIG: u32 offset, u32 size, u32 flags, then the bytes). Stateless. */
final class ConfigMessages {
    private static final Logger LOG = LoggerFactory.getLogger(ConfigMessages.class);

    private ConfigMessages() {
    }

    /**
     * Checks the header of a {@code size}-byte config message against a {@code configSize}-byte config space.
     *
     * @return the number of config bytes it addresses, or -1 if they lie outside the config space (the message is
     *     answered as failed; the connection goes on)
     * @throws ProtocolException if the message is malformed (the connection ends)
     */
    static int range(final MemorySegment payload, final int size, final int configSize, final Request r) throws ProtocolException {
        if (size < Protocol.CONFIG_HEADER) {
            throw new ProtocolException(r + " payload of " + size + " bytes");
        }
        final int offset = payload.get(JAVA_INT_UNALIGNED, 0);
        final int len = payload.get(JAVA_INT_UNALIGNED, 4);
        if (len < 0 || len > Protocol.MAX_CONFIG_SIZE || size != Protocol.CONFIG_HEADER + len) {
            throw new ProtocolException(r + " for " + len + " bytes in a " + size + "-byte payload");
        }
        if (offset < 0 || (long) offset + len > configSize) { // long: an offset near 2^31 must not wrap into range
            if (r == Request.GET_CONFIG) {
                LOG.warn("GET_CONFIG for bytes {}..{} outside the {}-byte config space", offset, (long) offset + len, configSize);
            }
            return -1;
        }
        return len;
    }
}
