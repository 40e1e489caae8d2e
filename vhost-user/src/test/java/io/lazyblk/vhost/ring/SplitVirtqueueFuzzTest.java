package io.lazyblk.vhost.ring;

import io.lazyblk.vhost.mem.GuestMemory;
import io.lazyblk.vhost.mem.MemoryRegion;
import io.lazyblk.sys.LibC;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.SplittableRandom;

import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Random descriptor tables, direct and indirect, biased towards the edges a hostile guest would pick: every
 * chain is either refused with a reason or flattened into buffers that all lie inside the guest region, and the
 * walk always ends. Seeded, so a failure names the seed that reproduces it.
 */
class SplitVirtqueueFuzzTest {
    private static final long MEM = 1 << 20;
    private static final long UVA = 0x7f00_0000_0000L;
    private static final long DESC = 0x1000;
    private static final long AVAIL = 0x3000;
    private static final long USED = 0x4000;
    private static final long INDIRECT = 0x8000;
    private static final int SIZE = 64;
    private static final int ROUNDS = 20_000;

    private MemoryRegion region;
    private MemorySegment g;
    private SplitVirtqueue q;
    private final DescriptorChain chain = new DescriptorChain(16);

    @BeforeEach
    void setUp() throws Exception {
        final int fd = LibC.memfdCreate("fuzz-guest");
        LibC.ftruncate(fd, MEM);
        region = MemoryRegion.map(fd, 0, MEM, UVA, 0);
        g = region.segment;
        q = new SplitVirtqueue(0);
        q.configure(SIZE, true, true);
        q.setAddresses(GuestMemory.of(List.of(region)), UVA + DESC, UVA + AVAIL, UVA + USED);
        q.setBase(0);
    }

    @AfterEach
    void tearDown() {
        region.close();
    }

    private static long address(final SplittableRandom r) {
        return switch (r.nextInt(8)) {
            case 0 -> MEM - r.nextInt(1, 64);        // straddles the end
            case 1 -> -r.nextLong(1, 4096);            // wraps 2^64
            case 2 -> MEM + r.nextLong(0, 1 << 20);   // past the end
            case 3 -> INDIRECT + 16L * r.nextInt(8);  // points into an indirect table
            default -> r.nextLong(0x10000, MEM - 0x10000);
        };
    }

    private static int length(final SplittableRandom r) {
        return switch (r.nextInt(6)) {
            case 0 -> 0;
            case 1 -> -1 - r.nextInt(16);             // 4 GiB - small
            case 2 -> 16 * r.nextInt(0, 40);           // indirect-table-like sizes
            default -> r.nextInt(1, 8192);
        };
    }

    private void randomTable(final SplittableRandom r, final long base, final int entries, final int nextRange) {
        for (int i = 0; i < entries; i++) {
            final long o = base + 16L * i;
            g.set(JAVA_LONG_UNALIGNED, o, address(r));
            g.set(JAVA_INT_UNALIGNED, o + 8, length(r));
            g.set(JAVA_SHORT_UNALIGNED, o + 12, (short) r.nextInt(8)); // NEXT, WRITE, INDIRECT in any mix
            g.set(JAVA_SHORT_UNALIGNED, o + 14, (short) (r.nextInt(10) == 0 ? r.nextInt(65536) : r.nextInt(nextRange)));
        }
    }

    @Test
    void shouldRefuseOrSafelyFlattenEveryRandomChain() {
        final long seed = System.nanoTime();
        final SplittableRandom r = new SplittableRandom(seed);
        int ok = 0;
        for (int round = 0; round < ROUNDS; round++) {
            randomTable(r, DESC, SIZE, SIZE);
            randomTable(r, INDIRECT, 32, 32);
            final int idx = Short.toUnsignedInt(g.get(JAVA_SHORT_UNALIGNED, AVAIL + 2));
            g.set(JAVA_SHORT_UNALIGNED, AVAIL + 4 + 2L * (idx % SIZE), (short) (r.nextInt(20) == 0 ? r.nextInt(65536) : r.nextInt(SIZE)));
            g.set(JAVA_SHORT_UNALIGNED, AVAIL + 2, (short) (idx + 1));
            final int pending = q.pending();
            assertTrue(pending == 1, "seed " + seed + " round " + round + ": pending " + pending);
            final int err = q.readChain(q.pop(), chain);
            if (err != ChainError.OK) {
                continue;
            }
            ok++;
            assertTrue(chain.count <= chain.capacity(), "seed " + seed);
            for (int i = 0; i < chain.count; i++) {
                final long a = chain.address[i];
                final long len = Integer.toUnsignedLong(chain.length[i]);
                assertTrue(a >= region.base && a + len <= region.base + MEM && len > 0,
                    "seed " + seed + " round " + round + ": buffer " + i + " outside the guest region");
            }
        }
        assertTrue(ok > 0, "seed " + seed + ": the generator never produced a valid chain, so the test proves little");
    }
}
