package io.lazyblk.tools.frontend;

import io.lazyblk.sys.LibC;
import io.lazyblk.sys.NativeException;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class GuestRamTest {
    @Test
    void shouldHandOutAlignedNonOverlappingBuffersAfterReservedPageZero() throws NativeException {
        try (GuestRam ram = GuestRam.create(1 << 20)) {
            final long a = ram.allocate(10, 1);
            final long b = ram.allocate(100, 64);
            final long c = ram.allocate(4096, 4096);

            assertTrue(a >= 4096, "page 0 stays unused");
            assertEquals(0, b % 64);
            assertTrue(b >= a + 10);
            assertEquals(0, c % 4096);
            assertTrue(c >= b + 100);
        }
    }

    @Test
    void shouldFailClearlyWhenExhausted() throws NativeException {
        try (GuestRam ram = GuestRam.create(16384)) {
            ram.allocate(8192, 4096);

            final IllegalStateException e = assertThrows(IllegalStateException.class, () -> ram.allocate(8192, 4096));
            assertTrue(e.getMessage().contains("exhausted"), e.getMessage());
        }
    }

    @Test
    void shouldRefuseViewsOutsideGuestRam() throws NativeException {
        try (GuestRam ram = GuestRam.create(16384)) {
            assertThrows(IndexOutOfBoundsException.class, () -> ram.segment(16000, 1000));
        }
    }

    @Test
    void shouldTranslateGuestPhysicalToOurMappingAddress() throws NativeException {
        try (GuestRam ram = GuestRam.create(16384)) {
            assertEquals(ram.memory().address() + 0x1234, ram.userAddress(0x1234));
            assertEquals(ram.segment(0x2000, 8).address(), ram.userAddress(0x2000));
        }
    }

    @Test
    @SuppressWarnings("restricted") // reinterpret: the length is exactly what we just mapped
    void shouldShareBytesWithAnotherMappingOfTheMemfdAsTheBackEndMapsIt() throws NativeException {
        try (GuestRam ram = GuestRam.create(16384)) {
            final long other = LibC.mmapShared(ram.fd(), 16384, 0);
            try {
                final MemorySegment seen = MemorySegment.ofAddress(other).reinterpret(16384);
                ram.memory().set(ValueLayout.JAVA_LONG, 8192, 0x0123_4567_89ab_cdefL);

                assertEquals(0x0123_4567_89ab_cdefL, seen.get(ValueLayout.JAVA_LONG, 8192));
            } finally {
                LibC.munmap(other, 16384);
            }
        }
    }
}
