package io.lazyblk.blk;

import java.lang.foreign.MemorySegment;

/**
 * The whole address space as one segment, for reading request headers and writing status bytes at native
 * addresses that {@link io.lazyblk.vhost.ring.SplitVirtqueue#readChain} already proved lie inside a mapped guest
 * region. Using it instead of a slice per buffer keeps the data path free of allocation; the regions stay mapped
 * while a request is in flight because a memory-table swap drains every queue first.
 */
final class GuestAccess {
    static final MemorySegment ALL = MemorySegment.NULL.reinterpret(Long.MAX_VALUE);

    private GuestAccess() {
    }
}
