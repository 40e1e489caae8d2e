package io.lazyblk.vhost.proto;

/**
 * Front-end request codes of the vhost-user protocol (QEMU docs/interop/vhost-user.rst), with the payload size
 * each one must carry and the number of fds it may carry. A value the back end does not know is refused by
 * {@link #of(int)} returning {@code null}.
 */
public enum Request {
    GET_FEATURES(1, 0, 0),
    SET_FEATURES(2, 8, 0),
    SET_OWNER(3, 0, 0),
    RESET_OWNER(4, 0, 0),
    SET_MEM_TABLE(5, -1, 8),
    SET_LOG_BASE(6, Protocol.LOG_BASE_SIZE, 1),
    SET_LOG_FD(7, -1, 1),
    SET_VRING_NUM(8, 8, 0),
    SET_VRING_ADDR(9, 40, 0),
    SET_VRING_BASE(10, 8, 0),
    GET_VRING_BASE(11, 8, 0),
    SET_VRING_KICK(12, 8, 1),
    SET_VRING_CALL(13, 8, 1),
    SET_VRING_ERR(14, 8, 1),
    GET_PROTOCOL_FEATURES(15, 0, 0),
    SET_PROTOCOL_FEATURES(16, 8, 0),
    GET_QUEUE_NUM(17, 0, 0),
    SET_VRING_ENABLE(18, 8, 0),
    SET_BACKEND_REQ_FD(21, 0, 1),
    GET_CONFIG(24, -1, 0),
    GET_INFLIGHT_FD(31, Protocol.INFLIGHT_SIZE, 0),
    SET_INFLIGHT_FD(32, Protocol.INFLIGHT_SIZE, 1),
    SET_CONFIG(25, -1, 0),
    RESET_DEVICE(34, 0, 0),
    GET_MAX_MEM_SLOTS(36, 0, 0),
    ADD_MEM_REG(37, 40, 1),
    REM_MEM_REG(38, 40, 1);

    private static final Request[] BY_CODE = new Request[64];

    static {
        for (final Request r : values()) {
            BY_CODE[r.code] = r;
        }
    }

    public final int code;
    /** Exact payload size, or -1 when the size depends on the contents (checked by the handler). */
    public final int payloadSize;
    /** Most fds this request may carry. */
    public final int maxFds;

    Request(final int code, final int payloadSize, final int maxFds) {
        this.code = code;
        this.payloadSize = payloadSize;
        this.maxFds = maxFds;
    }

    /** The request with this code, or {@code null} if the back end does not know it. */
    public static Request of(final int code) {
        return code > 0 && code < BY_CODE.length ? BY_CODE[code] : null;
    }
}
