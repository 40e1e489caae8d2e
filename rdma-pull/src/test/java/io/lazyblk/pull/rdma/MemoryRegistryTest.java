package io.lazyblk.pull.rdma;

import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Destination registration as bookkeeping: once per region, hits for slices, re-registration when an arena dies. */
class MemoryRegistryTest {
    /** Registers by handing out increasing lkeys; records what is registered and deregistered. */
    static final class FakeRegistrar implements MemoryRegistry.Registrar {
        final List<long[]> registered = new ArrayList<>();
        final List<Integer> deregistered = new ArrayList<>();
        boolean refuse;
        private int nextKey = 100;

        @Override
        public MemoryRegistry.Registration register(final long address, final long length) throws IOException {
            if (refuse) {
                throw new IOException("ibv_reg_mr: Cannot allocate memory");
            }
            final int key = nextKey++;
            registered.add(new long[] {address, length, key});
            return new MemoryRegistry.Registration() {
                @Override
                public int lkey() {
                    return key;
                }

                @Override
                public void deregister() {
                    deregistered.add(key);
                }
            };
        }
    }

    private final FakeRegistrar fake = new FakeRegistrar();
    private final MemoryRegistry registry = new MemoryRegistry(fake, 8);

    @Test
    void shouldRegisterEachDistinctBufferOnceAndReuseItsKey() {
        try (Arena a = Arena.ofShared()) {
            final MemorySegment[] buffers = new MemorySegment[4];
            for (int i = 0; i < buffers.length; i++) {
                buffers[i] = a.allocate(16 << 10, 4096);
            }
            final long[] keys = new long[buffers.length];
            for (int round = 0; round < 50; round++) {
                for (int i = 0; i < buffers.length; i++) {
                    final long k = registry.lkey(buffers[i]);
                    if (round == 0) {
                        keys[i] = k;
                    }
                    assertEquals(keys[i], k, "buffer " + i + " keeps its key");
                }
            }
            assertEquals(4, fake.registered.size(), "one registration per buffer, not per read");
            assertEquals(4, registry.size());
            for (int i = 0; i < buffers.length; i++) {
                final long[] r = fake.registered.get(i);
                assertTrue(r[0] == buffers[i].address() && r[1] == buffers[i].byteSize(), "registered exactly the buffer");
            }
        }
    }

    @Test
    void shouldServeSlicesOfARegisteredRegionWithoutRegisteringAgain() {
        try (Arena a = Arena.ofShared()) {
            final MemorySegment slab = a.allocate(1 << 20, 4096);
            final long key = registry.lkey(slab);
            assertEquals(key, registry.lkey(slab.asSlice(4096, 8192)));
            assertEquals(key, registry.lkey(slab.asSlice((1 << 20) - 512, 512)), "a slice at the slab's very end");
            assertEquals(1, fake.registered.size());
            final MemorySegment straddling = a.allocate(8192, 4096);
            assertNotEquals(key, registry.lkey(straddling), "memory outside the slab needs its own registration");
        }
    }

    @Test
    void shouldRegisterAgainWhenTheArenaOfARegisteredRegionWasClosed() {
        final Arena first = Arena.ofShared();
        final MemorySegment old = first.allocate(64 << 10, 4096);
        final long oldKey = registry.lkey(old);
        final long address = old.address();
        first.close();
        // New memory at the same address (as an allocator may hand out) must not use the dead registration.
        try (Arena second = Arena.ofShared()) {
            final MemorySegment same = MemorySegment.ofAddress(address).reinterpret(64 << 10, second, null);
            final long newKey = registry.lkey(same);
            assertNotEquals(oldKey, newKey);
            assertEquals(List.of((int) oldKey), fake.deregistered, "the dead registration was released");
            assertEquals(1, registry.size());
        }
    }

    @Test
    void shouldRefuseHeapMemoryFailedRegistrationsAndAFullTable() {
        assertEquals(MemoryRegistry.UNREGISTERED, registry.lkey(MemorySegment.ofArray(new byte[4096])), "the device cannot write the Java heap");
        try (Arena a = Arena.ofShared()) {
            fake.refuse = true;
            assertEquals(MemoryRegistry.UNREGISTERED, registry.lkey(a.allocate(4096)));
            assertEquals(0, registry.size());
            fake.refuse = false;
            for (int i = 0; i < 8; i++) {
                assertNotEquals(MemoryRegistry.UNREGISTERED, registry.lkey(a.allocate(4096, 4096)));
            }
            assertEquals(MemoryRegistry.UNREGISTERED, registry.lkey(a.allocate(4096, 4096)), "capacity 8");
            assertEquals(2, registry.failures());
        }
    }

    @Test
    void shouldDeregisterEverythingOnCloseAndRefuseAfterwards() {
        try (Arena a = Arena.ofShared()) {
            registry.lkey(a.allocate(4096));
            registry.lkey(a.allocate(4096));
            registry.close();
            assertEquals(2, fake.deregistered.size());
            assertEquals(MemoryRegistry.UNREGISTERED, registry.lkey(a.allocate(4096)));
        }
    }
}
