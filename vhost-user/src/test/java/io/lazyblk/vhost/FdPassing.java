package io.lazyblk.vhost;

import io.lazyblk.sys.UnixSocket;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** Test helper: passes fds the way a front end does. */
public final class FdPassing {
    private FdPassing() {
    }

    /** A new fd for what {@code fd} refers to, sent through a real UNIX socket pair with SCM_RIGHTS; {@code fd} stays open. */
    public static int throughSocket(final int fd) throws Exception {
        final UnixSocket[] pair = UnixSocket.pair();
        try (var a = pair[0]; var b = pair[1]) {
            final MemorySegment buf = Arena.ofAuto().allocate(8);
            a.send(buf, 1, new int[] {fd}, 1);
            final int[] fds = new int[UnixSocket.MAX_FDS];
            final int[] n = new int[1];
            b.receive(buf, 1, fds, n);
            assertEquals(1, n[0], "one fd passed");
            return fds[0];
        }
    }
}
