package io.lazyblk.tools.frontend;

import io.lazyblk.sys.EventFd;
import io.lazyblk.sys.NativeException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static io.lazyblk.tools.frontend.VringLayout.VIRTQ_DESC_F_INDIRECT;
import static io.lazyblk.tools.frontend.VringLayout.VIRTQ_DESC_F_NEXT;
import static io.lazyblk.tools.frontend.VringLayout.VIRTQ_DESC_F_WRITE;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The driver side of the split ring, checked against a hand-written {@link FakeDevice} in the same guest RAM. */
class DriverQueueTest {
    private GuestRam ram;
    private DriverQueue q;
    private FakeDevice dev;

    private void setUp(final int size, final boolean eventIdx, final int indirectEntries, final int base) throws NativeException {
        ram = GuestRam.create(4L << 20);
        q = DriverQueue.create(ram, 0, size, eventIdx, indirectEntries, base);
        dev = new FakeDevice(ram, q, base);
    }

    @AfterEach
    void close() {
        if (q != null) {
            q.close();
        }
        if (ram != null) {
            ram.close();
        }
    }

    @Test
    void shouldLayOutRingsAtSpecAlignmentInsideGuestRam() throws NativeException {
        setUp(256, true, 0, 0);

        assertEquals(0, q.descGpa() % 16);
        assertEquals(0, q.availGpa() % 2);
        assertEquals(0, q.usedGpa() % 4);
        assertTrue(q.usedGpa() + VringLayout.usedBytes(256) <= ram.size());
    }

    @Test
    void shouldWriteDirectChainWithNextLinksAndDeviceWritableFlags() throws NativeException {
        setUp(8, true, 0, 0);

        final int head = q.add(0x1000, 16, false).add(0x2000, 4096, true).add(0x3000, 1, true).submit();
        q.publish();

        assertEquals(1, dev.pending());
        assertEquals(head, dev.pop());
        assertEquals(List.of(new FakeDevice.Buffer(0x1000, 16, VIRTQ_DESC_F_NEXT),
            new FakeDevice.Buffer(0x2000, 4096, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE),
            new FakeDevice.Buffer(0x3000, 1, VIRTQ_DESC_F_WRITE)), dev.chain(head));
    }

    @Test
    void shouldHideSubmittedChainUntilPublished() throws NativeException {
        setUp(8, true, 0, 0);

        q.add(0x1000, 16, false).submit();

        assertEquals(0, dev.pending(), "avail->idx moves only in publish()");
        q.publish();
        assertEquals(1, dev.pending());
    }

    @Test
    void shouldPutIndirectChainBehindOneRingDescriptor() throws NativeException {
        setUp(8, true, 16, 0);

        final int head = q.add(0x1000, 16, false).add(0x2000, 512, false).add(0x3000, 1, true).submitIndirect();
        q.publish();

        assertEquals(7, q.freeDescriptors(), "one ring descriptor for a three-buffer chain");
        assertEquals(head, dev.pop());
        assertEquals(List.of(new FakeDevice.Buffer(0x1000, 16, VIRTQ_DESC_F_NEXT),
            new FakeDevice.Buffer(0x2000, 512, VIRTQ_DESC_F_NEXT),
            new FakeDevice.Buffer(0x3000, 1, VIRTQ_DESC_F_WRITE)), dev.chain(head));
    }

    @Test
    void shouldRefuseChainWhenDescriptorsRunOutAndRecycleThemOnCompletion() throws NativeException {
        setUp(8, true, 0, 0);
        final int a = q.add(0x1000, 1, false).add(0x1000, 1, false).add(0x1000, 1, false).submit();
        final int b = q.add(0x1000, 1, false).add(0x1000, 1, false).add(0x1000, 1, false).submit();
        q.add(0x1000, 1, false).add(0x1000, 1, false).add(0x1000, 1, false);

        assertEquals(-1, q.submit(), "2 descriptors left for a 3-descriptor chain");

        q.publish();
        dev.pop();
        dev.pop();
        dev.complete(b, 7);
        assertEquals(b, q.reap());
        assertEquals(7, q.lastLength());
        assertTrue(q.submit() >= 0, "the retried chain fits once b's descriptors are back");
        dev.complete(a, 0);
        assertEquals(a, q.reap());
        assertEquals(-1, q.reap());
        assertEquals(1, q.inFlight());
    }

    @Test
    void shouldSurviveManyRoundsAcrossSixteenBitWrap() throws NativeException {
        setUp(4, true, 0, 0xfffd);

        for (int i = 0; i < 20; i++) {
            final int head = q.add(0x1000 + i, 16, false).add(0x2000, 1, true).submit();
            q.publish();
            assertEquals(head, dev.pop());
            assertEquals(0x1000 + i, dev.chain(head).get(0).addr());
            dev.complete(head, 1);
            assertEquals(head, q.reap());
        }
        assertEquals((0xfffd + 20) & 0xffff, q.usedIdx());
        assertEquals(4, q.freeDescriptors());
    }

    @Test
    void shouldKickOnlyWhenPublishCrossesAvailEvent() throws NativeException {
        setUp(16, true, 0, 0);
        dev.setAvailEvent(0); // device wants a kick when entry 0 becomes available

        q.add(0x1000, 1, false).submit();
        assertTrue(q.publish(), "idx 0 -> 1 crosses avail_event 0");
        q.add(0x1000, 1, false).submit();
        assertFalse(q.publish(), "idx 1 -> 2 does not cross avail_event 0");
        dev.setAvailEvent(4);
        q.add(0x1000, 1, false).submit();
        q.add(0x1000, 1, false).submit();
        assertFalse(q.publish(), "2 -> 4 stops short of avail_event 4");
        for (int i = 0; i < 3; i++) {
            q.add(0x1000, 1, false).submit();
        }
        assertTrue(q.publish(), "4 -> 7 passes avail_event 4: one kick for the batch");

        assertEquals(2, q.kicks());
        assertEquals(2, EventFd.drain(q.kickFd()), "the kick eventfd counted exactly the kicks");
    }

    @Test
    void shouldHonourNoNotifyWithoutEventIdx() throws NativeException {
        setUp(16, false, 0, 0);

        dev.setUsedFlags(VringLayout.VIRTQ_USED_F_NO_NOTIFY);
        q.add(0x1000, 1, false).submit();
        assertFalse(q.publish());
        dev.setUsedFlags(0);
        q.add(0x1000, 1, false).submit();
        assertTrue(q.publish());
    }

    @Test
    void shouldKeepUsedEventOutOfDeviceReachWhilePolling() throws NativeException {
        setUp(16, true, 0, 0);
        for (int round = 0; round < 5; round++) {
            for (int i = 0; i < 16; i++) {
                q.add(0x1000, 1, false).submit();
            }
            q.publish();
            final int before = dev.usedIdx();
            for (int i = 0; i < 16; i++) {
                dev.complete(dev.pop(), 0);
            }
            // Whatever range of used indices the device publishes next, it never passes used_event: no signal.
            assertFalse(VringLayout.needEvent(dev.usedEvent(), dev.usedIdx(), before), "round " + round);
            while (q.reap() >= 0) {
                // drain
            }
        }
    }

    @Test
    void shouldSuppressSignalsWithNoInterruptFlagWithoutEventIdx() throws NativeException {
        setUp(16, false, 0, 0);

        assertEquals(VringLayout.VIRTQ_AVAIL_F_NO_INTERRUPT, dev.availFlags());
    }

    @Test
    void shouldWakeFromBlockingWaitWhenDeviceSignalsCallEventfd() throws Exception {
        setUp(16, true, 0, 0);
        final int head = q.add(0x1000, 1, false).submit();
        q.publish();
        final CompletableFuture<Void> device = CompletableFuture.runAsync(() -> {
            final int h = dev.pop();
            // What a device does: wait until the driver asked for a signal (used_event at the next index)...
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (!VringLayout.needEvent(dev.usedEvent(), 1, 0) && System.nanoTime() < deadline) {
                Thread.onSpinWait();
            }
            // ...then complete, and signal because the move 0 -> 1 crosses used_event.
            dev.complete(h, 3);
            if (VringLayout.needEvent(dev.usedEvent(), 1, 0)) {
                EventFd.signal(q.callFd());
            }
        });

        assertTrue(q.awaitUsed(TimeUnit.SECONDS.toNanos(10)));

        device.get(10, TimeUnit.SECONDS);
        assertEquals(head, q.reap());
        assertFalse(VringLayout.needEvent(dev.usedEvent(), 2, 1), "signals suppressed again after the wait");
    }

    /** Without EVENT_IDX the wait clears VIRTQ_AVAIL_F_NO_INTERRUPT, and sets it again once woken. */
    @Test
    void shouldWakeFromBlockingWaitWithNoInterruptFlagClearedWithoutEventIdx() throws Exception {
        setUp(16, false, 0, 0);
        final int head = q.add(0x1000, 1, false).submit();
        q.publish();
        final CompletableFuture<Void> device = CompletableFuture.runAsync(() -> {
            final int h = dev.pop();
            // What a device does without EVENT_IDX: signal only while the driver leaves NO_INTERRUPT clear.
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while ((dev.availFlags() & VringLayout.VIRTQ_AVAIL_F_NO_INTERRUPT) != 0 && System.nanoTime() < deadline) {
                Thread.onSpinWait();
            }
            dev.complete(h, 3);
            if ((dev.availFlags() & VringLayout.VIRTQ_AVAIL_F_NO_INTERRUPT) == 0) {
                EventFd.signal(q.callFd());
            }
        });

        assertTrue(q.awaitUsed(TimeUnit.SECONDS.toNanos(10)));

        device.get(10, TimeUnit.SECONDS);
        assertEquals(head, q.reap());
        assertEquals(VringLayout.VIRTQ_AVAIL_F_NO_INTERRUPT, dev.availFlags(), "signals suppressed again after the wait");
    }

    /** sleeps() counts each poll(2) of a wait, wakeups() those the call eventfd ended; a signal left over ends one at once. */
    @Test
    void shouldCountSleepsAndWakeupsOfBlockingWaits() throws NativeException {
        setUp(16, true, 0, 0);
        q.add(0x1000, 1, false).submit();
        q.publish();

        assertFalse(q.awaitUsed(TimeUnit.MILLISECONDS.toNanos(20)));
        assertEquals(1, q.sleeps(), "one poll(2) that ran to its timeout");
        assertEquals(0, q.wakeups());

        EventFd.signal(q.callFd()); // a spurious signal: the wait wakes, drains it, finds nothing, and sleeps again
        assertFalse(q.awaitUsed(TimeUnit.MILLISECONDS.toNanos(20)));
        assertEquals(3, q.sleeps());
        assertEquals(1, q.wakeups());

        dev.complete(dev.pop(), 0);
        assertTrue(q.awaitUsed(TimeUnit.SECONDS.toNanos(10)));
        assertEquals(3, q.sleeps(), "an entry already published is seen without sleeping");
    }

    @Test
    void shouldGiveUpBlockingWaitAtDeadline() throws NativeException {
        setUp(16, true, 0, 0);
        q.add(0x1000, 1, false).submit();
        q.publish();

        final long start = System.nanoTime();
        assertFalse(q.awaitUsed(TimeUnit.MILLISECONDS.toNanos(50)));
        assertTrue(System.nanoTime() - start >= TimeUnit.MILLISECONDS.toNanos(50));
    }

    @Test
    void shouldRejectUsedIdThatIsNotInFlight() throws NativeException {
        setUp(16, true, 0, 0);
        q.add(0x1000, 1, false).submit();
        q.publish();

        dev.complete(9, 0);

        final IllegalStateException e = assertThrows(IllegalStateException.class, q::reap);
        assertTrue(e.getMessage().contains("used id 9"), e.getMessage());
    }

    @Test
    void shouldRejectUsedIdxMovedFurtherThanQueueSize() throws NativeException {
        setUp(16, true, 0, 0);

        dev.publishUsedIdx(17);

        assertThrows(IllegalStateException.class, q::reap);
    }

    @Test
    void shouldWriteAnyRawDescriptorAndHeadForHostileTests() throws NativeException {
        setUp(8, true, 0, 0);

        q.rawDescriptor(3, 0xdead_beefL, -1, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT, 3); // loops on itself
        q.rawAvail(3);
        q.rawAvail(0xffff); // out of range head
        q.rawPublishAndKick();

        assertEquals(2, dev.pending());
        assertEquals(3, dev.pop());
        assertEquals(0xffff, dev.pop());
        assertEquals(1, EventFd.drain(q.kickFd()));
        q.rawAvailIdx(0x1234);
        assertEquals(0x1234, dev.availIdx());
    }

    @Test
    void shouldReturnRawUsedEntryWithoutValidation() throws NativeException {
        setUp(8, true, 0, 0);

        dev.complete(0xabcd, 42);

        assertTrue(q.hasUsed());
        assertEquals(0xabcd, q.reapRaw());
        assertEquals(42, q.lastLength());
    }
}
