package io.lazyblk.vhost;

import io.lazyblk.sys.LibC;
import io.lazyblk.sys.NativeException;
import io.lazyblk.vhost.proto.Request;

/** The eventfds a front end passes for a ring (SET_VRING_KICK, CALL, ERR): what they must be, and how they are kept. */
final class RingEventFds {
    private RingEventFds() {
    }

    /**
     * Accepts {@code fd} (still the message's, not yet taken) as {@code r}'s eventfd, or refuses it. Only an eventfd:
     * a pipe or socket here could block a queue agent on a write. Made non-blocking: a blocking call fd whose counter
     * the front end holds at its maximum would block the agent in write(2), and a blocking kick fd the front end also
     * reads can be emptied between the agent's poll(2) and its read(2); either way the stop that follows waits for that
     * thread forever. O_NONBLOCK belongs to the open file description, which the front end shares, so this changes its
     * view too. That is safe for QEMU, whose event notifiers are created with EFD_NONBLOCK (and KVM's ioeventfd and
     * irqfd signal and consume them in the kernel, where the flag does not apply); a front end that blocks in read(2)
     * on its own call fd instead of polling it would now see EAGAIN, and must poll as QEMU does.
     */
    static void check(final Request r, final int fd) throws ProtocolException {
        final String what = LibC.describeFd(fd);
        if (!what.equals("anon_inode:[eventfd]")) {
            throw new ProtocolException(r + " passed " + what + ", not an eventfd");
        }
        try {
            LibC.setNonBlocking(fd);
        } catch (final NativeException e) {
            throw new ProtocolException(r + ": cannot make its eventfd non-blocking: " + e.getMessage());
        }
    }
}
