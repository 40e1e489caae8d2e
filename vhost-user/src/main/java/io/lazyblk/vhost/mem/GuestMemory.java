package io.lazyblk.vhost.mem;

import java.util.ArrayList;
import java.util.List;

/**
 * An immutable guest memory table: translates guest physical addresses (descriptors) and front-end user
 * addresses (ring addresses) to native addresses inside a mapped region, checking that the whole range lies in
 * one region. Thread-safe; does not own its regions (the control agent closes a region once no table in use
 * by any queue agent still holds it).
 */
public final class GuestMemory {
    public static final GuestMemory EMPTY = new GuestMemory(new MemoryRegion[0]);
    /** Returned by the translate methods for a range outside every region. */
    public static final long INVALID = -1L;

    private final MemoryRegion[] regions;

    private GuestMemory(final MemoryRegion[] regions) {
        this.regions = regions;
    }

    /** A table of {@code regions}; refuses overlapping guest ranges. */
    public static GuestMemory of(final List<MemoryRegion> regions) {
        for (int i = 0; i < regions.size(); i++) {
            for (int j = i + 1; j < regions.size(); j++) {
                if (regions.get(i).overlapsGuest(regions.get(j))) {
                    throw new IllegalArgumentException("memory regions overlap: " + regions.get(i) + " and " + regions.get(j));
                }
            }
        }
        return new GuestMemory(regions.toArray(new MemoryRegion[0]));
    }

    public GuestMemory with(final MemoryRegion added) {
        final List<MemoryRegion> list = new ArrayList<>(List.of(regions));
        list.add(added);
        return of(list);
    }

    public GuestMemory without(final MemoryRegion removed) {
        final List<MemoryRegion> list = new ArrayList<>(List.of(regions));
        list.remove(removed);
        return of(list);
    }

    public List<MemoryRegion> regions() {
        return List.of(regions);
    }

    public int size() {
        return regions.length;
    }

    /** Native address of guest physical range {@code [gpa, gpa+len)}, or {@link #INVALID} if not inside one region. */
    public long gpaToAddress(final long gpa, final long len) {
        for (final MemoryRegion r : regions) {
            final long off = gpa - r.guestPhysAddr;
            // Unsigned compares: a gpa below the region wraps to a huge offset and fails too.
            if (Long.compareUnsigned(off, r.size) < 0 && Long.compareUnsigned(len, r.size - off) <= 0) {
                return r.base + off;
            }
        }
        return INVALID;
    }

    /** The region holding guest physical range {@code [gpa, gpa+len)}, or {@code null}. */
    public MemoryRegion regionOfGpa(final long gpa, final long len) {
        for (final MemoryRegion r : regions) {
            final long off = gpa - r.guestPhysAddr;
            if (Long.compareUnsigned(off, r.size) < 0 && Long.compareUnsigned(len, r.size - off) <= 0) {
                return r;
            }
        }
        return null;
    }

    /** The region holding front-end user range {@code [uva, uva+len)}, or {@code null}. */
    public MemoryRegion regionOfUva(final long uva, final long len) {
        for (final MemoryRegion r : regions) {
            final long off = uva - r.userAddr;
            if (Long.compareUnsigned(off, r.size) < 0 && Long.compareUnsigned(len, r.size - off) <= 0) {
                return r;
            }
        }
        return null;
    }
}
