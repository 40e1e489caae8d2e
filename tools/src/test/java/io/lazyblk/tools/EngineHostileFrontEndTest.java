package io.lazyblk.tools;

import io.lazyblk.pagemap.Await;
import io.lazyblk.sys.EventFd;
import io.lazyblk.sys.LibC;
import io.lazyblk.sys.NativeException;
import io.lazyblk.tools.MemoryMessages.Region;
import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.DriverQueue;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.ReplyTimeoutException;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import io.lazyblk.tools.frontend.VirtioBlk;
import io.lazyblk.vhost.VhostUserServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The engine against a front end that misuses what it hands over rather than the protocol's framing, over a real
 * socket with real memfds and eventfds: it floods a queue while stopping it, takes the memory under a ring away and
 * brings it back, gives blocking eventfds (a saturated call fd, a kick fd it reads itself), and shrinks its guest
 * memory under the engine. Each test shows the engine serving first, then misbehaves, and proves the engine kept its
 * threads and fds and serves a new front end that writes and reads back through it.
 */
class EngineHostileFrontEndTest {
    private static final int IMAGE_BYTES = 4 << 20;
    /** Writes of 4 KiB at sectors 0, 8, 16, ... while racing the engine for kicks: at most the whole image. */
    /** Slots of 4 KiB the kick race writes in turn; it goes round them until the front end has taken enough kicks. */
    private static final int KICK_RACE_SLOTS = IMAGE_BYTES / 4096;
    /**
     * Bound on the kick race's writes: how often the front end wins a kick varies a lot from run to run (4 in 1,024
     * writes was seen on a loaded host); 8 rounds of the slots make a run with none practically impossible.
     */
    private static final int MAX_KICK_RACE_WRITES = 8 * KICK_RACE_SLOTS;
    /** The largest value an eventfd counter holds: a write that would go past it blocks, or fails with EAGAIN. */
    private static final long EVENTFD_MAX = 0xfffffffffffffffeL;

    @TempDir
    Path dir;
    private Path image;
    private Path socket;
    private Engine engine;
    private VhostUserFrontend fe;
    /** Run at the end of each test before the engine closes (unblock what a failing engine is stuck on). */
    private final List<Runnable> cleanups = new ArrayList<>();

    @BeforeEach
    void createImage() throws IOException {
        image = TestImage.create(dir.resolve("disk.img"), IMAGE_BYTES, 4);
        socket = dir.resolve("vhost.sock");
    }

    @AfterEach
    void stop() {
        for (int i = cleanups.size() - 1; i >= 0; i--) {
            cleanups.get(i).run();
        }
        if (fe != null) {
            fe.close();
        }
        if (engine != null) {
            engine.close();
        }
    }

    private void startEngine(final int ioThreads, final long pollNanos) throws IOException {
        engine = Engine.start(new Engine.Options(socket, image, 0, 1, false, ioThreads, pollNanos));
    }

    private void startEngine() throws IOException {
        startEngine(0, VhostUserServer.DEFAULT_SPIN_NANOS);
    }

    // ---------------------------------------------------------------- item 7: stopping a queue

    @Test
    void shouldStopQueueUnderAFloodOfNewRequestsTakingNoneAndResumeAtTheFirstUntakenOne() throws Exception {
        startEngine(1, VhostUserServer.DEFAULT_SPIN_NANOS); // a dedicated I/O thread: requests are in flight at the stop
        fe = VhostUserFrontend.connect(socket, GuestRam.create(16L << 20), FrontEnds.CONFIG);
        final DriverQueue q = fe.queue(0);
        final RequestFlood flood = new RequestFlood(fe, 128);
        final Thread driver = new Thread(flood, "test-flood");
        cleanups.add(() -> {
            flood.stop.set(true);
            joinQuietly(driver);
        });
        driver.start();
        Await.until("the flood is being served", FrontEnds.DEADLINE, () -> flood.completed > 1000 || flood.failure.get() != null);
        assertNull(flood.failure.get());

        final int base;
        try {
            base = fe.stopQueue(0);
        } catch (final ReplyTimeoutException e) {
            fail("GET_VRING_BASE got no answer within " + FrontEnds.DEADLINE + " while the driver kept adding requests: the"
                + " stop took new requests instead of finishing the ones it had", e);
            return;
        }
        flood.stop.set(true);
        driver.join(FrontEnds.DEADLINE.toMillis());
        assertFalse(driver.isAlive());
        assertNull(flood.failure.get());

        assertEquals(base, q.usedIdx(), "every request the engine took was completed before it reported the base, no more");
        while (flood.reapOne() >= 0) {
            // completions published before the stop that the flood had not reaped yet
        }
        int outstanding = 0;
        for (int i = 0; i < flood.count; i++) {
            if (flood.availPos[i] >= 0) {
                outstanding++;
                assertTrue(((flood.availPos[i] - base) & 0xffff) < q.size(), "request " + i + " at avail index "
                    + flood.availPos[i] + " is at or after the base " + base + ", or it would have completed");
                assertEquals(RawChains.NO_STATUS, flood.status(i), "request " + i + " was not taken, so not touched");
            }
        }
        assertEquals((q.availIdx() - base) & 0xffff, outstanding, "the untaken requests are exactly those from the base on");

        fe.restartQueue(0, base);

        final long end = System.nanoTime() + FrontEnds.DEADLINE.toNanos();
        for (int done = 0; done < outstanding; ) {
            final int i = flood.reapOne();
            if (i >= 0) {
                assertEquals(VirtioBlk.S_OK, flood.status(i), "request " + i + " completed after the restart");
                done++;
            } else {
                assertTrue(q.awaitUsed(Math.max(0, end - System.nanoTime())), done + " of " + outstanding
                    + " requests left on the ring completed after the restart");
            }
        }
        for (int i = 0; i < flood.count; i++) {
            assertArrayEquals(RequestFlood.data(i), TestImage.read(image, i * 8L * VirtioBlk.SECTOR_SIZE, 4096), "request " + i + " in the image");
        }
        fe.close();
        fe = null;
        FrontEnds.assertEngineServesNewFrontEnd(socket, image, 4000);
    }

    @Test
    void shouldServeAgainWhenTheRegionHoldingTheRingIsRemovedAndAddedBack() throws IOException {
        startEngine();
        fe = FrontEnds.connect(socket);
        final GuestRam ram = fe.ram();
        final BlkClient blk = FrontEnds.client(fe, 0);
        assertEquals(VirtioBlk.S_OK, blk.write(8, TestImage.pattern(4096, 1)), "the queue runs");
        final Region all = new Region(0, ram.size(), ram.userAddress(0), 0, ram.fd());

        assertEquals(0, MemoryMessages.remMemReg(fe, all), "the region holding the ring is removed (the queue cannot run)");
        assertEquals(0, MemoryMessages.addMemReg(fe, all), "and added back");

        final byte[] data = TestImage.pattern(4096, 2);
        assertEquals(VirtioBlk.S_OK, blk.write(16, data), "the queue runs again once its ring is in guest memory again");
        assertArrayEquals(data, blk.read(16, 4096).data());
        assertArrayEquals(data, TestImage.read(image, 16L * VirtioBlk.SECTOR_SIZE, 4096));
        fe.close();
        fe = null;
        FrontEnds.assertEngineServesNewFrontEnd(socket, image, 4000);
    }

    // ---------------------------------------------------------------- item 8: blocking eventfds

    @Test
    void shouldCompleteRequestsAndLetTheNextFrontEndInWhenTheCallEventfdIsBlockingAndSaturated() throws Exception {
        startEngine();
        fe = FrontEnds.connect(socket);
        final int call = LibC.eventfd(0); // blocking, as a front end may hand it over
        cleanups.add(() -> {
            if (readable(call)) {
                EventFd.drain(call); // unblocks an engine stuck writing to it
            }
            LibC.close(call);
        });
        addToCounter(call, EVENTFD_MAX); // counter 0 -> max: one more signal would block a blocking writer
        fe.setVringCall(0, call);
        final DriverQueue q = fe.queue(0);
        final long header = fe.ram().allocate(VirtioBlk.HEADER_SIZE, 16);
        final long status = fe.ram().allocate(1, 1);
        final long buf = fe.ram().allocate(4096, 4096);

        for (int i = 0; i < 16; i++) {
            final byte[] data = TestImage.pattern(4096, 100 + i);
            fe.ram().segment(buf, 4096).copyFrom(MemorySegment.ofArray(data));
            final MemorySegment h = fe.ram().segment(header, VirtioBlk.HEADER_SIZE);
            h.set(JAVA_INT_UNALIGNED, VirtioBlk.HEADER_TYPE, VirtioBlk.T_OUT);
            h.set(JAVA_INT_UNALIGNED, 4, 0);
            h.set(JAVA_LONG_UNALIGNED, VirtioBlk.HEADER_SECTOR, 64 + i * 8L);
            fe.ram().memory().set(JAVA_BYTE, status, (byte) RawChains.NO_STATUS);
            q.requestSignal(); // a driver waiting for an interrupt: the engine signals the saturated call fd
            q.add(header, VirtioBlk.HEADER_SIZE, false).add(buf, 4096, false).add(status, 1, true);
            final int head = q.submit();
            q.publish();
            // Polled, not waited for on the call fd: this front end never reads it, so it stays saturated.
            Await.until("write " + i + " completed", FrontEnds.DEADLINE, q::hasUsed);
            assertEquals(head, q.reap());
            assertEquals(VirtioBlk.S_OK, Byte.toUnsignedInt(fe.ram().memory().get(JAVA_BYTE, status)), "write " + i);
            assertArrayEquals(data, TestImage.read(image, (64 + i * 8L) * VirtioBlk.SECTOR_SIZE, 4096), "write " + i + " in the image");
        }
        assertEquals(16, fe.stopQueue(0), "GET_VRING_BASE answers: the queue stopped");

        fe.close();
        fe = null;
        FrontEnds.assertEngineServesNewFrontEnd(socket, image, 4000);
    }

    @Test
    void shouldNeitherHangNorLoseRequestsWhenTheFrontEndAlsoReadsItsBlockingKickEventfd() throws Exception {
        startEngine(0, 0); // no polling: the engine sleeps on the kick fd after every request
        fe = VhostUserFrontend.connect(socket, GuestRam.create(FrontEnds.RAM_BYTES), FrontEnds.CONFIG.withBlockingEventFds(true));
        final int kick = fe.queue(0).kickFd();
        final AtomicBoolean stealing = new AtomicBoolean(true);
        final AtomicLong stolen = new AtomicLong();
        final Thread thief = new Thread(() -> {
            try (Arena a = Arena.ofConfined()) {
                final MemorySegment pfd = a.allocate(8, 4);
                while (stealing.get()) {
                    // Blocked in read(2) while the fd is blocking, this thread takes a kick as soon as it lands, often
                    // between the engine's poll(2) seeing it and the engine's read(2). Once the fd is non-blocking the
                    // read returns EAGAIN (0 here), and the thread waits in poll(2) instead of spinning.
                    if (EventFd.drain(kick) > 0) {
                        stolen.incrementAndGet();
                        continue;
                    }
                    pfd.set(JAVA_INT, 0, kick);
                    pfd.set(JAVA_SHORT, 4, LibC.POLLIN);
                    pfd.set(JAVA_SHORT, 6, (short) 0);
                    LibC.rawPoll(pfd, 1, 10);
                }
            }
        }, "test-kick-thief");
        final Runnable stopThief = () -> {
            stealing.set(false);
            final long end = System.nanoTime() + FrontEnds.DEADLINE.toNanos();
            while (thief.isAlive() && System.nanoTime() < end) {
                EventFd.signal(kick); // wakes a thief blocked in read(2) (or the engine, on the old code)
                joinQuietly(thief, 10);
            }
        };
        cleanups.add(stopThief);
        thief.start();
        // Each request is published and then waited for at once, without BlkClient's polling spell: the kick finds
        // the engine asleep in poll(2) and this thread gone from the CPU, so the engine and the thief race for it.
        final RawChains raw = new RawChains(fe, 0);
        // At least 100 write/read pairs, and on until the front end has taken a few kicks (how often it wins the race
        // for them varies from run to run), bounded.
        int writes = 0;
        for (; writes < MAX_KICK_RACE_WRITES && (writes < 100 || stolen.get() < 5); writes++) {
            final byte[] data = TestImage.pattern(4096, 200 + writes);
            final long sector = (writes % KICK_RACE_SLOTS) * 8L;
            raw.data(data);
            assertEquals(VirtioBlk.S_OK, raw.request(VirtioBlk.T_OUT, sector, raw.dataGpa, 4096, false).status(), "write " + writes);
            raw.data(new byte[4096]);
            assertEquals(VirtioBlk.S_OK, raw.request(VirtioBlk.T_IN, sector, raw.dataGpa, 4096, true).status(), "read " + writes);
            assertArrayEquals(data, raw.data(4096), "read back " + writes);
        }
        stopThief.run();
        assertFalse(thief.isAlive(), "the thief stopped");
        assertTrue(stolen.get() >= 1, "the front end took kicks from the engine: " + stolen.get() + " in " + writes + " writes");
        for (int i = Math.max(0, writes - KICK_RACE_SLOTS); i < writes; i++) { // the last write to each slot
            assertArrayEquals(TestImage.pattern(4096, 200 + i), TestImage.read(image, (i % KICK_RACE_SLOTS) * 8L * VirtioBlk.SECTOR_SIZE, 4096));
        }

        fe.close();
        fe = null;
        FrontEnds.assertEngineServesNewFrontEnd(socket, image, 4000);
    }

    // ---------------------------------------------------------------- item 14: guest memory that shrinks

    /** How much of the guest memory the front end cuts away after handing it over. */
    enum Shrink {
        /** All of it: the engine faults reading the avail index, before taking anything. */
        ALL,
        /**
         * From the used ring on, with the request's buffers in a second (sealed) region: the engine takes the request,
         * writes it, and faults publishing its completion, with the request in flight.
         */
        FROM_USED_RING
    }

    @ParameterizedTest(name = "shrinking {0} of the memory")
    @EnumSource(Shrink.class)
    void shouldSurviveFrontEndsThatShrinkTheirGuestMemoryWithoutLosingAThreadOrAnFd(final Shrink shrink) throws Exception {
        startEngine();
        FrontEnds.assertEngineServesNewFrontEnd(socket, image, 4000);
        final int baseline = fdsWithAnIdleFrontEnd();

        for (int round = 0; round < 3; round++) {
            final int errFd = LibC.eventfd(LibC.EFD_NONBLOCK);
            try (GuestRam second = GuestRam.create(1 << 20)) {
                fe = VhostUserFrontend.connect(socket, GuestRam.createUnsealed(FrontEnds.RAM_BYTES), FrontEnds.CONFIG);
                fe.setVringErr(0, errFd);
                final DriverQueue q = fe.queue(0);
                assertEquals(VirtioBlk.S_OK, FrontEnds.client(fe, 0).write(8, TestImage.pattern(4096, round)), "the queue runs");
                if (shrink == Shrink.ALL) {
                    LibC.ftruncate(fe.ram().fd(), 0);
                    EventFd.signal(q.kickFd()); // no ring access from here on: it would fault in this process too
                } else {
                    final long gpa = fe.ram().size();
                    assertEquals(0, MemoryMessages.addMemReg(fe, new Region(gpa, second.size(), second.userAddress(0), 0, second.fd())));
                    final MemorySegment h = second.segment(0, VirtioBlk.HEADER_SIZE);
                    h.set(JAVA_INT_UNALIGNED, VirtioBlk.HEADER_TYPE, VirtioBlk.T_OUT);
                    h.set(JAVA_INT_UNALIGNED, 4, 0);
                    h.set(JAVA_LONG_UNALIGNED, VirtioBlk.HEADER_SECTOR, 512 + round * 8L);
                    final byte[] data = TestImage.pattern(4096, 300 + round);
                    second.segment(4096, 4096).copyFrom(MemorySegment.ofArray(data));
                    second.memory().set(JAVA_BYTE, 64, (byte) RawChains.NO_STATUS);
                    // The request goes on the ring of a disabled queue, so the engine can only take it once restarted,
                    // in its first pass: no idle pass can touch the shrunk used ring before (and fault there instead).
                    fe.setVringEnable(0, false);
                    q.add(gpa, VirtioBlk.HEADER_SIZE, false).add(gpa + 4096, 4096, false).add(gpa + 64, 1, true);
                    assertTrue(q.submit() >= 0);
                    q.publish();
                    LibC.ftruncate(fe.ram().fd(), q.usedGpa()); // descriptors and avail ring stay, the used ring goes
                    fe.setVringEnable(0, true); // no ring access from here on: it would fault in this process too
                    Await.until("the engine wrote the request", FrontEnds.DEADLINE,
                        () -> Byte.toUnsignedInt(second.memory().get(JAVA_BYTE, 64)) == VirtioBlk.S_OK);
                    assertArrayEquals(data, TestImage.read(image, (512 + round * 8L) * VirtioBlk.SECTOR_SIZE, 4096));
                }

                Await.until("the engine reports the fault on the queue's err eventfd, or loses the queue's thread",
                    FrontEnds.DEADLINE, () -> readable(errFd) || !queueThreadAlive());
                assertTrue(queueThreadAlive(), "the queue's thread survived the fault");
                assertTrue(readable(errFd), "the engine signalled the queue's err eventfd");
                fe.close();
                fe = null;
            } finally {
                LibC.close(errFd);
            }
        }

        FrontEnds.assertEngineServesNewFrontEnd(socket, image, 4000);
        assertEquals(baseline, fdsWithAnIdleFrontEnd(), "the engine holds as many fds as before the shrinking front ends: "
            + openFds());
        assertFalse(queueThreadAlive(), "no queue thread is left once its front end is gone");
    }

    @Test
    void shouldServeAFrontEndWhoseMemfdIsSealedWhichCannotShrinkIt() throws IOException {
        startEngine();
        fe = VhostUserFrontend.connect(socket, GuestRam.create(FrontEnds.RAM_BYTES), FrontEnds.CONFIG);
        assertTrue(fe.ram().sealed());
        final BlkClient blk = FrontEnds.client(fe, 0);
        final byte[] data = TestImage.pattern(4096, 400);
        assertEquals(VirtioBlk.S_OK, blk.write(24, data));

        final NativeException refused = assertThrows(NativeException.class, () -> LibC.ftruncate(fe.ram().fd(), 0),
            "F_SEAL_SHRINK keeps even the front end from shrinking its memory");

        assertEquals(1, refused.errno(), "EPERM");
        assertArrayEquals(data, blk.read(24, 4096).data());
        fe.close();
        fe = null;
        FrontEnds.assertEngineServesNewFrontEnd(socket, image, 4000);
    }

    // ---------------------------------------------------------------- helpers

    private static void addToCounter(final int eventFd, final long value) {
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment w = a.allocate(JAVA_LONG);
            w.set(JAVA_LONG, 0, value);
            assertEquals(8, LibC.rawWrite(eventFd, w.address(), 8));
        }
    }

    private static boolean readable(final int fd) {
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment pfd = a.allocate(8, 4);
            pfd.set(JAVA_INT, 0, fd);
            pfd.set(JAVA_SHORT, 4, LibC.POLLIN);
            return LibC.rawPoll(pfd, 1, 0) > 0;
        }
    }

    /** The engine runs in this process: its first queue's agent thread is named vq-0. */
    private static boolean queueThreadAlive() {
        return Thread.getAllStackTraces().keySet().stream().anyMatch(t -> t.getName().equals("vq-0") && t.isAlive());
    }

    /**
     * This process's open fds while a front end is connected and has been answered once: the engine accepts a front
     * end only after it tore the previous one down, so this is the engine's resting count (plus the probe's own).
     */
    private int fdsWithAnIdleFrontEnd() throws IOException {
        try (VhostUserFrontend probe = VhostUserFrontend.open(socket, GuestRam.create(8192), FrontEnds.DEADLINE)) {
            probe.getFeatures();
            try (Stream<Path> fds = Files.list(Path.of("/proc/self/fd"))) {
                return (int) fds.count();
            }
        }
    }

    /** This process's fds other than its class path jars, as "fd->what" (for a failure message). */
    private static List<String> openFds() throws IOException {
        try (Stream<Path> fds = Files.list(Path.of("/proc/self/fd"))) {
            return fds.map(fd -> {
                try {
                    return fd.getFileName() + "->" + Files.readSymbolicLink(fd);
                } catch (final IOException e) {
                    return fd.getFileName() + "->?";
                }
            }).filter(d -> !d.endsWith(".jar")).toList();
        }
    }

    private static void joinQuietly(final Thread t) {
        joinQuietly(t, FrontEnds.DEADLINE.toMillis());
    }

    private static void joinQuietly(final Thread t, final long millis) {
        try {
            t.join(millis);
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
