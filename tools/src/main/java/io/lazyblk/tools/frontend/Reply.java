package io.lazyblk.tools.frontend;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * One message as read from the back end, header fields as sent. Immutable (the payload array is not copied:
 * do not change it).
 *
 * @param code the request code the back end put in the header
 * @param flags the header flags (version bits, REPLY, NEED_REPLY)
 * @param payload the payload, {@code size} bytes as the header announced
 */
public record Reply(int code, int flags, byte[] payload) {
    /** The payload read as one little-endian u64 (replies to GET_* and REPLY_ACK acks). */
    public long u64() {
        if (payload.length != 8) {
            throw new IllegalStateException("reply to request " + code + " has a " + payload.length + "-byte payload, not a u64");
        }
        return ByteBuffer.wrap(payload).order(ByteOrder.LITTLE_ENDIAN).getLong();
    }

    @Override
    public String toString() {
        return "Reply[code=" + code + ", flags=0x" + Integer.toHexString(flags) + ", size=" + payload.length + "]";
    }
}
