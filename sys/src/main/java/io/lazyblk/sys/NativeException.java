package io.lazyblk.sys;

import java.io.IOException;

/** A failed system call: names the call, its arguments and {@code strerror(errno)}. Immutable. */
public final class NativeException extends IOException {
    private static final long serialVersionUID = 1L;
    private final int errno;

    public NativeException(final String call, final int errno) {
        super(call + " failed: " + LibC.strerror(errno) + " (errno " + errno + ")");
        this.errno = errno;
    }

    public int errno() {
        return errno;
    }
}
