package io.lazyblk.blk;

import org.junit.jupiter.api.Test;

import static io.lazyblk.blk.FillGovernor.FLOOR_BYTES_PER_SECOND;
import static io.lazyblk.blk.FillGovernor.IDLE_AFTER_NANOS;
import static io.lazyblk.blk.FillGovernor.MISS_HOLD_NANOS;
import static io.lazyblk.blk.FillGovernor.RAMP_NANOS;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The governor's policy, fed counters on a fake clock and a fake CPU meter: no threads, no timing. */
class FillGovernorTest {
    private static final long MS = 1_000_000L;
    private long cpu;
    private final FillGovernor g = new FillGovernor(8, () -> cpu);
    private long now = 1_000 * MS;
    private long requests;
    private long misses;

    private void tick(final long nanos, final int outstanding) {
        now += nanos;
        g.observe(now, requests, misses, outstanding);
    }

    @Test
    void shouldRunFlatOutWhileTheGuestIsIdle() {
        tick(MS, 0);
        tick(50 * MS, 0);
        assertEquals(FillGovernor.Mode.IDLE, g.mode());
        assertEquals(8, g.window());
        assertEquals(0, g.rate(), "uncapped");
        assertEquals(0, g.backoffs());
    }

    @Test
    void shouldBackOffToOneRunAtTheFloorOnEveryMissAndHoldWhileMissesKeepComing() {
        tick(MS, 0);
        for (int i = 0; i < 100; i++) { // a boot: a miss every 2 ms (and a request with each) for 200 ms
            requests++;
            misses++;
            tick(MS, 1);
            tick(MS, 0);
            assertEquals(FillGovernor.Mode.BACKOFF, g.mode(), "miss " + i);
            assertEquals(1, g.window());
            assertEquals(FLOOR_BYTES_PER_SECOND, g.rate(), "the floor: the fill never stops");
        }
        assertEquals(1, g.backoffs(), "one back-off for one burst of misses");
        assertTrue(g.backedOffNanos() >= 199 * MS, "time backed off: " + g.backedOffNanos());

        tick(MISS_HOLD_NANOS - 2 * MS, 0);
        assertEquals(FillGovernor.Mode.BACKOFF, g.mode(), "held a while after the last miss");
        tick(2 * MS, 0);
        assertEquals(FillGovernor.Mode.ACTIVE, g.mode(), "the guest made requests lately: not idle yet");
        tick(IDLE_AFTER_NANOS, 0);
        assertEquals(FillGovernor.Mode.IDLE, g.mode());
        assertEquals(8, g.window());
        assertEquals(0, g.rate());

        misses++;
        tick(MS, 1);
        assertEquals(2, g.backoffs(), "a new miss after an idle spell backs off again");
    }

    @Test
    void shouldStayBackedOffWhileAMissIsOutstandingHoweverLong() {
        tick(MS, 0); // the first look takes the counters as they are
        misses++;
        tick(MS, 1);
        tick(10 * MISS_HOLD_NANOS, 1); // a slow provider: the miss is still out
        assertEquals(FillGovernor.Mode.BACKOFF, g.mode());
        tick(MS, 0);
        assertEquals(FillGovernor.Mode.IDLE, g.mode(), "answered, no request since the hold");
    }

    @Test
    void shouldRampUpFromTheFloorWhileTheEngineLeavesTheGuestRoomAndHalveWhenItDoesNot() {
        tick(MS, 0);
        requests++;
        tick(MS, 0);
        assertEquals(FillGovernor.Mode.ACTIVE, g.mode());
        assertEquals(FLOOR_BYTES_PER_SECOND, g.rate());
        assertEquals(8, g.window());
        long rate = FLOOR_BYTES_PER_SECOND;
        for (int i = 0; i < 3; i++) { // the engine used a quarter core: room, the rate doubles each step
            requests++;
            cpu += RAMP_NANOS / 4;
            tick(RAMP_NANOS, 0);
            rate *= 2;
            assertEquals(rate, g.rate());
        }
        requests++;
        cpu += RAMP_NANOS; // a whole core: the guest is starved, halve
        tick(RAMP_NANOS, 0);
        assertEquals(rate / 2, g.rate());
        for (int i = 0; i < 20; i++) {
            requests++;
            cpu += RAMP_NANOS;
            tick(RAMP_NANOS, 0);
        }
        assertEquals(FLOOR_BYTES_PER_SECOND, g.rate(), "never below the floor");
        for (int i = 0; i < 20; i++) {
            requests++;
            tick(RAMP_NANOS, 0);
        }
        assertEquals(0, g.rate(), "past the ceiling: uncapped");
        assertEquals(0, g.backoffs(), "requests without misses never back off");
        assertTrue(g.activeNanos() > 0);
    }
}
