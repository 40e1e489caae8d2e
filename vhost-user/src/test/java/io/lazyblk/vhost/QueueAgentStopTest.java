package io.lazyblk.vhost;

import io.lazyblk.sys.LibC;
import io.lazyblk.vhost.device.QueueHandler;
import io.lazyblk.vhost.mem.GuestMemory;
import io.lazyblk.vhost.mem.MemoryRegion;
import io.lazyblk.vhost.ring.SplitVirtqueue;
import org.agrona.concurrent.AgentRunner;
import org.agrona.concurrent.IdleStrategy;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;

import static java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Stopping a {@link QueueAgent} while it has a request in flight, with a real ring in a memfd and a hand-written
 * handler that takes every available request and holds them until released: the stop must finish what was taken
 * and take nothing the driver makes available meanwhile, so the ring's base is the first request not taken.
 */
class QueueAgentStopTest {
    private static final long MEM = 1 << 20;
    private static final long UVA = 0x7f00_0000_0000L;
    private static final long DESC = 0x1000;
    private static final long AVAIL = 0x2000;
    private static final long USED = 0x3000;
    private static final int SIZE = 8;
    private static final long WAIT_SECONDS = 5;

    private MemoryRegion region;
    private MemorySegment g;
    private SplitVirtqueue ring;

    /**
     * Takes every available chain; completes them only once released. Runs on the agent's thread only (the idle
     * strategy below too). A pass not preceded by an idle call is one the agent made after its work loop ended,
     * while stopping: the work loop idles after every pass, the stop does not.
     */
    private static final class HoldingHandler implements QueueHandler {
        private final SplitVirtqueue ring;
        final CountDownLatch firstTaken = new CountDownLatch(1);
        /** One permit per pass the agent made while stopping. */
        final Semaphore stoppingPasses = new Semaphore(0);
        volatile boolean release;
        volatile int taken;
        boolean idled = true;
        private int inFlight;
        private final int[] heads = new int[SIZE];

        HoldingHandler(final SplitVirtqueue ring) {
            this.ring = ring;
        }

        private void pass() {
            if (!idled) {
                stoppingPasses.release();
            }
            idled = false;
        }

        @Override
        public int doWork() {
            pass();
            int work = 0;
            for (int n = ring.pending(); n > 0; n--) {
                heads[inFlight++] = ring.pop();
                taken++;
                work++;
            }
            if (taken > 0) {
                firstTaken.countDown();
            }
            return work + complete();
        }

        @Override
        public int finishInFlight() {
            pass();
            return complete();
        }

        private int complete() {
            if (!release || inFlight == 0) {
                return 0;
            }
            for (int i = 0; i < inFlight; i++) {
                ring.pushUsed(heads[i], 0);
            }
            ring.publishUsed();
            final int done = inFlight;
            inFlight = 0;
            return done;
        }

        @Override
        public int inFlight() {
            return inFlight;
        }

        @Override
        public boolean hasCompletions() {
            return false;
        }

        @Override
        public void close() {
        }
    }

    @BeforeEach
    void setUp() throws Exception {
        final int fd = LibC.memfdCreate("guest");
        LibC.ftruncate(fd, MEM);
        region = MemoryRegion.map(fd, 0, MEM, UVA, 0);
        g = region.segment;
        ring = new SplitVirtqueue(0);
        ring.configure(SIZE, false, false);
        assertNull(ring.setAddresses(GuestMemory.of(List.of(region)), UVA + DESC, UVA + AVAIL, UVA + USED));
        ring.setBase(0);
    }

    @AfterEach
    void tearDown() {
        region.close();
    }

    /** Makes descriptor {@code head} available (its contents do not matter to the holding handler). */
    private void offer(final int head) {
        final int idx = Short.toUnsignedInt(g.get(JAVA_SHORT_UNALIGNED, AVAIL + 2));
        g.set(JAVA_SHORT_UNALIGNED, AVAIL + 4 + 2L * (idx % SIZE), (short) head);
        g.set(JAVA_SHORT_UNALIGNED, AVAIL + 2, (short) (idx + 1));
    }

    @Test
    void shouldFinishTheTakenRequestAtStopWithoutTakingTheOnesMadeAvailableMeanwhile() throws Exception {
        final HoldingHandler handler = new HoldingHandler(ring);
        final QueueAgent agent = new QueueAgent(ring, waker -> handler, -1, -1, 0);
        final IdleStrategy idle = agent.idleStrategy();
        final IdleStrategy noted = new IdleStrategy() {
            @Override
            public void idle(final int workCount) {
                handler.idled = true;
                idle.idle(workCount);
            }

            @Override
            public void idle() {
                handler.idled = true;
                idle.idle();
            }

            @Override
            public void reset() {
                idle.reset();
            }
        };
        final AgentRunner runner = new AgentRunner(noted, Throwable::printStackTrace, null, agent);
        offer(0);
        AgentRunner.startOnThread(runner);
        assertTrue(handler.firstTaken.await(WAIT_SECONDS, TimeUnit.SECONDS), "the agent took the first request");

        // As the connection stops a queue: wake the agent and wait for it to finish.
        final Thread stopper = new Thread(() -> {
            agent.interruptSleep();
            runner.close();
        }, "test-stop");
        stopper.start();
        assertTrue(handler.stoppingPasses.tryAcquire(2, WAIT_SECONDS, TimeUnit.SECONDS), "the agent is stopping");
        assertTrue(stopper.isAlive(), "the stop waits for the request in flight");

        offer(1);
        offer(2); // the driver adds requests while the queue stops
        assertTrue(handler.stoppingPasses.tryAcquire(3, WAIT_SECONDS, TimeUnit.SECONDS), "the stopping agent made passes over them");
        handler.release = true;
        stopper.join(TimeUnit.SECONDS.toMillis(WAIT_SECONDS));

        assertFalse(stopper.isAlive(), "the stop finished once the request in flight completed");
        assertEquals(1, handler.taken, "the stop took no request made available after it began");
        assertEquals(1, ring.base(), "GET_VRING_BASE would report the first request not taken");
        assertEquals(1, Short.toUnsignedInt(g.get(JAVA_SHORT_UNALIGNED, USED + 2)), "the taken request was completed");
    }

    /** A handler with a bug: its first pass throws an Error, which Agrona rethrows (skipping the agent's onClose). */
    private static final class FailingHandler implements QueueHandler {
        final CountDownLatch failed = new CountDownLatch(1);
        volatile boolean closed;

        @Override
        public int doWork() {
            failed.countDown();
            throw new AssertionError("a bug in the handler");
        }

        @Override
        public int finishInFlight() {
            return 0;
        }

        @Override
        public int inFlight() {
            return 0;
        }

        @Override
        public boolean hasCompletions() {
            return false;
        }

        @Override
        public void close() {
            closed = true;
        }
    }

    private static long eventFds() throws Exception {
        try (var fds = java.nio.file.Files.list(java.nio.file.Path.of("/proc/self/fd"))) {
            return fds.filter(fd -> LibC.describeFd(Integer.parseInt(fd.getFileName().toString())).equals("anon_inode:[eventfd]")).count();
        }
    }

    @Test
    void shouldReleaseTheHandlerAndTheWakeEventfdWhenTheAgentThreadDiedOfAnError() throws Exception {
        final long before = eventFds();
        final FailingHandler handler = new FailingHandler();
        final QueueAgent agent = new QueueAgent(ring, waker -> handler, -1, -1, 0);
        final AgentRunner runner = new AgentRunner(agent.idleStrategy(), t -> { }, null, agent);
        final Thread thread = AgentRunner.startOnThread(runner, r -> {
            final Thread t = new Thread(r, "vq-test");
            t.setUncaughtExceptionHandler((th, e) -> { }); // the Error is the point: keep it out of the test's output
            return t;
        });
        assertTrue(handler.failed.await(WAIT_SECONDS, TimeUnit.SECONDS));
        thread.join(TimeUnit.SECONDS.toMillis(WAIT_SECONDS));
        assertFalse(thread.isAlive(), "the Error ended the agent's thread");
        assertFalse(handler.closed, "without the agent's onClose, which Agrona skips after an Error");

        runner.close();
        agent.releaseAfterStop();

        assertTrue(handler.closed, "the handler was closed");
        assertEquals(before, eventFds(), "the agent's wake eventfd was closed");
        agent.releaseAfterStop(); // idempotent: nothing is closed twice
    }
}
