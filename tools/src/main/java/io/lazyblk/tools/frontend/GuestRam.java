package io.lazyblk.tools.frontend;

import io.lazyblk.sys.LibC;
import io.lazyblk.sys.NativeException;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * "Guest memory" for a test front end: one memfd mapped {@code MAP_SHARED}, offered to the back end as a single
 * region at guest physical address 0 whose user address is our own mapping address (as QEMU offers its HVA).
 * {@link #create} seals the memfd against shrinking and growing, as QEMU's {@code memory-backend-memfd} does by
 * default ({@code seal=on}); {@link #createUnsealed} leaves it unsealable, as QEMU's {@code memory-backend-ram,share=on}
 * and {@code memory-backend-memfd,seal=off} do, so a hostile test can shrink it under the back end.
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
    private final boolean sealed;
    private final Arena arena;
    private final MemorySegment memory;
    private long next = PAGE;
    private boolean closed;

    private GuestRam(final int fd, final long size, final boolean sealed, final Arena arena, final MemorySegment memory) {
        this.fd = fd;
        this.size = size;
        this.sealed = sealed;
        this.arena = arena;
        this.memory = memory;
    }

    /**
     * Creates {@code size} bytes of zeroed guest memory in a memfd sealed with {@code F_SEAL_SHRINK | F_SEAL_GROW}
     * (QEMU's default); {@code size} must be a positive multiple of 4096.
     */
    public static GuestRam create(final long size) throws NativeException {
        return create(size, true);
    }

    /**
     * Like {@link #create}, but the memfd is created without {@code MFD_ALLOW_SEALING}: nothing can ever seal it, and
     * whoever holds it may {@code ftruncate} it (the back end's mapping of the lost pages then faults).
     */
    public static GuestRam createUnsealed(final long size) throws NativeException {
        return create(size, false);
    }

    @SuppressWarnings("restricted") // reinterpret: the length is exactly what we just mapped
    private static GuestRam create(final long size, final boolean seal) throws NativeException {
        if (size < 2 * PAGE || size % PAGE != 0) {
            throw new IllegalArgumentException("guest RAM size must be a multiple of 4096 and at least 8192, got " + size);
        }
        final int fd = LibC.memfdCreate("lazyblk-frontend-ram", seal ? LibC.MFD_ALLOW_SEALING : 0);
        try {
            LibC.ftruncate(fd, size);
            if (seal) {
                // What QEMU adds (it also adds F_SEAL_SEAL): the size is fixed from here, for us and the back end.
                LibC.addSeals(fd, LibC.F_SEAL_SHRINK | LibC.F_SEAL_GROW);
            }
            final long addr = LibC.mmapShared(fd, size, 0);
            final Arena arena = Arena.ofShared();
            final MemorySegment mem = MemorySegment.ofAddress(addr).reinterpret(size, arena, s -> LibC.munmap(addr, size));
            return new GuestRam(fd, size, seal, arena, mem);
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

    /** Whether the memfd is sealed against shrinking and growing ({@link #create}) or unsealable ({@link #createUnsealed}). */
    public boolean sealed() {
        return sealed;
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
