package io.lazyblk.vhost.mem;

import io.lazyblk.sys.LibC;
import io.lazyblk.sys.NativeException;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * Shared memory a front end hands over by fd for the device to keep mapped (the in-flight region, the dirty log): only
 * a memfd sealed against shrinking is taken, since a file that shrank under the mapping would make the device's next
 * access fault. Stateless.
 */
public final class SealedMemfd {
    private static final long PAGE = 4096;

    private SealedMemfd() {
    }

    /**
     * Maps {@code size} bytes of {@code fd} at {@code offset} into {@code arena} (unmapped when it closes), after checking
     * that the offset is page-aligned and the fd a memfd sealed against shrinking that holds them. Does not close
     * {@code fd}.
     *
     * @param what the mapping's name for the messages, e.g. "dirty log"
     * @throws IllegalArgumentException with the reason it is refused
     */
    public static MemorySegment map(final int fd, final long size, final long offset, final String what, final Arena arena) {
        if (offset < 0 || offset % PAGE != 0 || offset > Long.MAX_VALUE - size) {
            throw new IllegalArgumentException(what + " at offset " + Long.toUnsignedString(offset) + ", not a page-aligned offset");
        }
        final int seals;
        final long fileSize;
        try {
            seals = LibC.seals(fd);
            fileSize = LibC.fileSize(fd);
        } catch (final NativeException e) {
            throw new IllegalArgumentException(what + "'s fd (" + LibC.describeFd(fd) + ") is not a sealable memfd: " + e.getMessage());
        }
        if ((seals & LibC.F_SEAL_SHRINK) == 0) {
            throw new IllegalArgumentException(what + "'s memfd is not sealed against shrinking");
        }
        if (fileSize < offset + size) {
            throw new IllegalArgumentException(what + " of " + size + " bytes at offset " + offset + " does not fit in its "
                + fileSize + "-byte memfd");
        }
        try {
            return mapShared(fd, size, offset, arena);
        } catch (final NativeException e) {
            throw new IllegalArgumentException("cannot map the " + what + ": " + e.getMessage());
        }
    }

    /** {@code mmap(MAP_SHARED)} of {@code size} bytes of {@code fd} at {@code offset}, owned by {@code arena}; no checks. */
    public static MemorySegment mapShared(final int fd, final long size, final long offset, final Arena arena) throws NativeException {
        final long address = LibC.mmapShared(fd, size, offset);
        return MemorySegment.ofAddress(address).reinterpret(size, arena, s -> LibC.munmap(s.address(), size));
    }
}
