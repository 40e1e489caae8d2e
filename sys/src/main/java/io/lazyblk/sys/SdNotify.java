package io.lazyblk.sys;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;
import java.nio.charset.StandardCharsets;

import static io.lazyblk.sys.Downcalls.errno;
import static io.lazyblk.sys.Downcalls.fn;
import static io.lazyblk.sys.Downcalls.rethrow;
import static io.lazyblk.sys.Downcalls.state;
import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

/**
 * The systemd service notification protocol ({@code sd_notify(3)}): one datagram of {@code KEY=VALUE} lines to the
 * {@code AF_UNIX} socket named by {@code $NOTIFY_SOCKET} (a path, or an abstract name written with a leading '@').
 * Without that variable (not started by systemd with {@code Type=notify}) it does nothing. Not for the data path.
 */
public final class SdNotify {
    private static final int SOCK_DGRAM = 2;
    private static final int MSG_NOSIGNAL = 0x4000;
    /** {@code struct sockaddr_un}: sun_family u16, then sun_path[108]. */
    private static final int SUN_PATH_BYTES = 108;
    private static final MethodHandle SOCKET = fn("socket", JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT);
    private static final MethodHandle SENDTO = fn("sendto", JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, ADDRESS, JAVA_INT);
    private static final MethodHandle CLOSE = fn("close", JAVA_INT, JAVA_INT);

    private SdNotify() {
    }

    /** Whether the process was started with a notification socket ({@code $NOTIFY_SOCKET}). */
    public static boolean expected() {
        final String s = System.getenv("NOTIFY_SOCKET");
        return s != null && !s.isEmpty();
    }

    /**
     * Sends {@code state} (e.g. {@code "READY=1\nSTATUS=serving"}) to {@code $NOTIFY_SOCKET}; false if there is none.
     * IOException if the socket is named but the datagram cannot be sent (systemd then times the start out: say why).
     */
    public static boolean notify(final String state) throws IOException {
        final String target = System.getenv("NOTIFY_SOCKET");
        if (target == null || target.isEmpty()) {
            return false;
        }
        send(target, state);
        return true;
    }

    /** Sends {@code state} as one datagram to the {@code AF_UNIX} datagram socket {@code target} ('@': abstract). */
    static void send(final String target, final String state) throws IOException {
        final byte[] path = target.getBytes(StandardCharsets.UTF_8);
        final boolean isAbstract = path[0] == '@';
        if (path.length >= SUN_PATH_BYTES || (target.charAt(0) != '/' && !isAbstract)) {
            throw new IOException("NOTIFY_SOCKET=" + target + " is neither an absolute path nor an abstract name ('@...')"
                + " of at most " + (SUN_PATH_BYTES - 1) + " bytes");
        }
        final MemorySegment st = state();
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment addr = a.allocate(2 + SUN_PATH_BYTES, 2);
            addr.set(JAVA_SHORT, 0, (short) LibC.AF_UNIX);
            MemorySegment.copy(path, 0, addr, JAVA_BYTE, 2, path.length);
            if (isAbstract) {
                addr.set(JAVA_BYTE, 2, (byte) 0); // the abstract namespace: a leading NUL, no terminator counted
            }
            final int addrLen = 2 + path.length + (isAbstract ? 0 : 1);
            final byte[] msg = state.getBytes(StandardCharsets.UTF_8);
            final MemorySegment buf = a.allocateFrom(JAVA_BYTE, msg);
            final int fd = (int) SOCKET.invokeExact(st, LibC.AF_UNIX, SOCK_DGRAM | LibC.SOCK_CLOEXEC, 0);
            if (fd < 0) {
                throw new IOException("socket(AF_UNIX, SOCK_DGRAM) for NOTIFY_SOCKET failed: " + LibC.strerror(errno(st)));
            }
            try {
                final long n = (long) SENDTO.invokeExact(st, fd, buf, (long) msg.length, MSG_NOSIGNAL, addr, addrLen);
                if (n < 0) {
                    throw new IOException("notifying systemd at NOTIFY_SOCKET=" + target + " failed: " + LibC.strerror(errno(st)));
                }
            } finally {
                final int ignored = (int) CLOSE.invokeExact(st, fd);
            }
        } catch (final IOException e) {
            throw e;
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }
}
