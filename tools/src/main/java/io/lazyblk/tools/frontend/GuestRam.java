package io.lazyblk.tools.frontend;

import io.lazyblk.sys.LibC;
import io.lazyblk.sys.NativeException;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * "Guest memory" for a test front end: one memfd mapped {@code MAP_SHARED}, offered to the back end as a single
 * region at guest physical address 0 whose user address is our own mapping address (as QEMU offers its HVA).
 * Buffers come from a bump allocator that never frees; page 0 is never handed out, so a zero address in a
 * descriptor is always a bug.
 *
 * <p>Owned by one {@link VhostUserFrontend} once connected, which closes it; {@link #close()} is idempotent.
 * Allocation is synchronized (setup only); the bytes themselves are shared with the back end and carry no
 * synchronization of their own (the virtqueue protocol orders them).
 */
public final class GuestRam implements AutoCloseable {
    private static final long PAGE = 4096;

    private final int fd;
    private final long size;
    private final Arena arena;
    private final MemorySegment memory;
    private long next = PAGE;
    private boolean closed;

    private GuestRam(final int fd, final long size, final Arena arena, final MemorySegment memory) {
        this.fd = fd;
        this.size = size;
        this.arena = arena;
        this.memory = memory;
    }

    /** Creates {@code size} bytes of zeroed guest memory; {@code size} must be a positive multiple of 4096. */
    @SuppressWarnings("restricted") // reinterpret: the length is exactly what we just mapped
    public static GuestRam create(final long size) throws NativeException {
        if (size < 2 * PAGE || size % PAGE != 0) {
            throw new IllegalArgumentException("guest RAM size must be a multiple of 4096 and at least 8192, got " + size);
        }
        final int fd = LibC.memfdCreate("lazyblk-frontend-ram");
        try {
            LibC.ftruncate(fd, size);
            final long addr = LibC.mmapShared(fd, size, 0);
            final Arena arena = Arena.ofShared();
            final MemorySegment mem = MemorySegment.ofAddress(addr).reinterpret(size, arena, s -> LibC.munmap(addr, size));
            return new GuestRam(fd, size, arena, mem);
        } catch (final NativeException | RuntimeException e) {
            LibC.close(fd);
            throw e;
        }
    }

    /**
     * Reserves {@code bytes} at a multiple of {@code align} (a power of two) and returns its guest physical address.
     *
     * @throws IllegalStateException when the memory is exhausted
     */
    public synchronized long allocate(final long bytes, final long align) {
        if (bytes <= 0 || align <= 0 || (align & (align - 1)) != 0) {
            throw new IllegalArgumentException("allocate(" + bytes + ", align " + align + ")");
        }
        final long gpa = (next + align - 1) & -align;
        if (gpa + bytes > size || gpa + bytes < gpa) {
            throw new IllegalStateException("guest RAM exhausted: " + bytes + " bytes wanted, "
                + Math.max(0, size - gpa) + " of " + size + " left");
        }
        next = gpa + bytes;
        return gpa;
    }

    /** A view of {@code [gpa, gpa+length)}; throws {@link IndexOutOfBoundsException} outside guest RAM. */
    public MemorySegment segment(final long gpa, final long length) {
        return memory.asSlice(gpa, length);
    }

    /** All of guest RAM, guest physical address 0 at offset 0. */
    public MemorySegment memory() {
        return memory;
    }

    /** Our (the front end's) user address of guest physical address {@code gpa}: what ring addresses are sent as. */
    public long userAddress(final long gpa) {
        if (gpa < 0 || gpa > size) {
            throw new IndexOutOfBoundsException("gpa 0x" + Long.toHexString(gpa) + " outside guest RAM of " + size + " bytes");
        }
        return memory.address() + gpa;
    }

    /** The memfd, still owned by this object; pass it (the kernel duplicates it) in SET_MEM_TABLE. */
    public int fd() {
        return fd;
    }

    public long size() {
        return size;
    }

    /** Bytes handed out so far, including alignment padding and the reserved page 0. */
    public synchronized long allocated() {
        return next;
    }

    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            arena.close(); // munmap; the back end's own mapping keeps the pages alive for it
            LibC.close(fd);
        }
    }
}
