package io.lazyblk.sys;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * Signals and drains an eventfd with 8-byte reads and writes from a per-thread scratch word, so neither
 * allocates. Thread-safe (stateless). On a blocking eventfd a signal blocks while the counter is saturated and a
 * drain while it is 0: use these on non-blocking eventfds where another process can hold the counter there.
 */
public final class EventFd {
    private static final ThreadLocal<MemorySegment> WORD = ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(8, 8));

    private EventFd() {
    }

    /** Adds 1 to the counter; returns false if the write failed (a closed or bogus fd from the peer). */
    public static boolean signal(final int fd) {
        final MemorySegment w = WORD.get();
        w.set(JAVA_LONG, 0, 1L);
        long n;
        do {
            n = LibC.rawWrite(fd, w.address(), 8);
        } while (n == -LibC.EINTR);
        return n == 8 || n == -LibC.EAGAIN; // EAGAIN: counter saturated, the reader will wake anyway
    }

    /** Reads and clears the counter; returns its value, 0 if it was not readable, or {@code -errno}. */
    public static long drain(final int fd) {
        final MemorySegment w = WORD.get();
        long n;
        do {
            n = LibC.rawRead(fd, w.address(), 8);
        } while (n == -LibC.EINTR);
        if (n == 8) {
            return w.get(JAVA_LONG, 0);
        }
        return n == -LibC.EAGAIN ? 0 : n < 0 ? n : 0;
    }
}
