package io.lazyblk.vhost.mem;

import io.lazyblk.sys.LibC;
import io.lazyblk.sys.NativeException;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * One guest memory region, mapped shared from the fd the front end passed. Owns the mapping through its own
 * shared {@link Arena}: {@link #close()} unmaps it, after which any access throws instead of touching freed memory.
 * Immutable apart from {@link #close()}; thread-safe.
 */
public final class MemoryRegion implements AutoCloseable {
    public final long guestPhysAddr;
    public final long size;
    public final long userAddr;
    public final long mmapOffset;
    /** The guest bytes of this region, {@code size} long. */
    public final MemorySegment segment;
    /** Native address of guest physical address {@link #guestPhysAddr}. */
    public final long base;
    private final Arena arena;

    private MemoryRegion(final long gpa, final long size, final long uva, final long mmapOffset,
                         final MemorySegment segment, final Arena arena) {
        this.guestPhysAddr = gpa;
        this.size = size;
        this.userAddr = uva;
        this.mmapOffset = mmapOffset;
        this.segment = segment;
        this.base = segment.address();
        this.arena = arena;
    }

    /**
     * Maps {@code size} bytes of {@code fd} starting at {@code mmapOffset}. The fd is closed here whatever
     * happens: a mapping keeps the memory alive without it.
     */
    public static MemoryRegion map(final int fd, final long gpa, final long size, final long uva, final long mmapOffset)
        throws NativeException {
        try {
            // Unsigned: a range whose end wraps past 2^64 is refused (addresses are unsigned; size > 0 checked first).
            if (size <= 0 || mmapOffset < 0 || Long.compareUnsigned(gpa + size, gpa) < 0
                || Long.compareUnsigned(uva + size, uva) < 0 || mmapOffset + size < mmapOffset) {
                throw new IllegalArgumentException("memory region with bad geometry: gpa=0x" + Long.toHexString(gpa)
                    + " size=0x" + Long.toHexString(size) + " uva=0x" + Long.toHexString(uva)
                    + " mmap_offset=0x" + Long.toHexString(mmapOffset));
            }
            final long mapLength = mmapOffset + size;
            // A mapping past the end of the file would fault (SIGBUS) on first touch: refuse it up front.
            final long fileSize = LibC.fileSize(fd);
            if (fileSize < mapLength) {
                throw new IllegalArgumentException("memory region of 0x" + Long.toHexString(size) + " bytes at mmap_offset 0x"
                    + Long.toHexString(mmapOffset) + " does not fit in its " + fileSize + "-byte fd");
            }
            final long addr = LibC.mmapShared(fd, mapLength, 0);
            final Arena arena = Arena.ofShared();
            final MemorySegment whole = MemorySegment.ofAddress(addr)
                .reinterpret(mapLength, arena, s -> LibC.munmap(s.address(), mapLength));
            return new MemoryRegion(gpa, size, uva, mmapOffset, whole.asSlice(mmapOffset, size), arena);
        } finally {
            LibC.close(fd);
        }
    }

    public boolean overlapsGuest(final MemoryRegion o) {
        return guestPhysAddr < o.guestPhysAddr + o.size && o.guestPhysAddr < guestPhysAddr + size;
    }

    /** Same guest range and user address as a REM_MEM_REG payload names. */
    public boolean matches(final long gpa, final long sz, final long uva) {
        return guestPhysAddr == gpa && size == sz && userAddr == uva;
    }

    @Override
    public void close() {
        arena.close();
    }

    @Override
    public String toString() {
        return "region[gpa=0x" + Long.toHexString(guestPhysAddr) + " size=0x" + Long.toHexString(size) + "]";
    }
}
