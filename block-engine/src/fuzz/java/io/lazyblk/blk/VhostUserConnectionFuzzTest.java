package io.lazyblk.blk;

import com.code_intelligence.jazzer.junit.FuzzTest;
import io.lazyblk.sys.LibC;
import io.lazyblk.sys.NativeException;
import io.lazyblk.sys.UnixSocket;
import io.lazyblk.sys.fuzz.FuzzBytes;
import io.lazyblk.sys.fuzz.LiveThreads;
import io.lazyblk.sys.fuzz.OpenFds;
import io.lazyblk.sys.fuzz.RecordingLogs;
import io.lazyblk.vhost.VhostUserConnection;
import io.lazyblk.vhost.proto.Protocol;
import io.lazyblk.vhost.proto.Request;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Set;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * vhost-user messages with their fds, from a hostile front end: VhostUserConnection (public constructor and run()) on
 * a real socketpair, serving a real VirtioBlkDevice over a NullBackend, with real eventfds and memfds passed by
 * SCM_RIGHTS.
 *
 * <p>Input: messages until it ends, each a request (one of the known codes, or a raw one), flags (version 1, with
 * NEED_REPLY, with REPLY, or raw), a payload size (the request's own, or any up to 4200) and that many payload bytes,
 * then up to 9 fds, each an eventfd, a memfd (4 KiB..1 MiB, its first bytes from the input: rings and requests for
 * a queue that starts) or /dev/null. After the messages the front end asks GET_QUEUE_NUM, half-closes, and reads every
 * reply until the back end closes. Properties: the connection ends within 20 s once the front end is done (so nothing
 * hangs it), logs no internal error (RuntimeException caught in run(), a failed queue agent), every reply is a
 * well-formed reply to a request that was sent, and once it is over no fd (socket, eventfd, memfd) and no thread it
 * made is left.
 */
class VhostUserConnectionFuzzTest {
    private static final Request[] KNOWN = Request.values();
    private static final int MAX_SENT_PAYLOAD = 4200;
    private static final long END_MILLIS = 20_000;
    private static final int FD_EVENT = 0;
    private static final int FD_MEMFD = 1;
    private static final int ECONNRESET = 104;

    @FuzzTest
    void messages(final byte[] input) throws Exception {
        RecordingLogs.requireActive();
        RecordingLogs.drainErrors();
        final Map<Integer, String> fdsBefore = OpenFds.snapshot(null);
        final Set<Long> threadsBefore = LiveThreads.ids();
        final FuzzBytes in = new FuzzBytes(input);
        final Set<Integer> sent = java.util.concurrent.ConcurrentHashMap.newKeySet(); // the reader checks replies against it
        final List<String> replies = java.util.Collections.synchronizedList(new ArrayList<>());
        final UnixSocket[] pair = UnixSocket.pair();
        final UnixSocket front = pair[0];
        final VirtioBlkDevice device = new VirtioBlkDevice(new NullBackend(1 << 20), 2, 0, "fuzz");
        final VhostUserConnection conn = new VhostUserConnection(pair[1], device, 0);
        final Thread served = Thread.ofPlatform().name("fuzz-vhost-connection").start(conn::run);
        // Replies are read while messages go out, as QEMU does: a front end that never reads would block the back end.
        final Throwable[] readFailure = new Throwable[1];
        final Thread reader = Thread.ofPlatform().name("fuzz-vhost-replies").start(() -> {
            try (Arena arena = Arena.ofConfined()) {
                readReplies(front, arena, sent, replies);
            } catch (final Throwable t) {
                readFailure[0] = t;
            }
        });
        try (Arena arena = Arena.ofConfined()) {
            final MemorySegment msg = arena.allocate(Protocol.HEADER_SIZE + MAX_SENT_PAYLOAD, 8);
            boolean open = true;
            while (open && in.more()) {
                open = sendOne(in, front, msg, sent);
            }
            if (open) {
                sent.add(Request.GET_QUEUE_NUM.code);
                sendRaw(front, msg, Request.GET_QUEUE_NUM.code, Protocol.VERSION, 0, new int[0], 0); // still serving?
            }
            front.shutdownOutput();
            served.join(END_MILLIS);
            if (served.isAlive()) {
                fail("the connection did not end within " + END_MILLIS + " ms of the front end's half-close:\n"
                    + stack(served));
            }
            reader.join(END_MILLIS);
            if (reader.isAlive()) {
                fail("the back end ended but its socket did not reach end of stream");
            }
            if (readFailure[0] instanceof AssertionError a) {
                throw a;
            }
            if (readFailure[0] != null) {
                throw new AssertionError("reading the replies failed", readFailure[0]);
            }
        } finally {
            if (served.isAlive()) {
                conn.close();
                served.join();
            }
            front.shutdown(); // wakes the reader if it still waits
            reader.join();
            front.close();
        }
        final List<String> errors = RecordingLogs.drainErrors();
        if (!errors.isEmpty()) {
            fail("the connection logged an internal error:\n" + String.join("\n", errors));
        }
        final Map<Integer, String> leaked = OpenFds.added(fdsBefore, OpenFds.snapshot(null));
        assertTrue(leaked.isEmpty(), "fds left open after the connection ended: " + leaked);
        assertEquals(List.of(), LiveThreads.addedAfter(threadsBefore, 5_000), "threads left after the connection ended");
    }

    /** Sends one message the input describes; false once the back end has closed the connection. */
    private static boolean sendOne(final FuzzBytes in, final UnixSocket front, final MemorySegment msg, final Set<Integer> sent)
        throws NativeException {
        final int choice = in.pick(KNOWN.length + 1);
        final Request known = choice < KNOWN.length ? KNOWN[choice] : null;
        final int code = known != null ? known.code : in.u32();
        final int flags = switch (in.pick(4)) {
            case 0 -> Protocol.VERSION;
            case 1 -> Protocol.VERSION | Protocol.FLAG_NEED_REPLY;
            case 2 -> Protocol.VERSION | Protocol.FLAG_REPLY;
            default -> in.u32();
        };
        final int size = known != null && known.payloadSize >= 0 && in.pick(2) == 0 ? known.payloadSize : in.u16() % (MAX_SENT_PAYLOAD + 1);
        final byte[] payload = Arrays.copyOf(in.bytes(size), size);
        MemorySegment.copy(payload, 0, msg, JAVA_BYTE, Protocol.HEADER_SIZE, size);
        final int nfds = in.pick(10);
        final int[] fds = new int[nfds];
        try {
            for (int i = 0; i < nfds; i++) {
                fds[i] = makeFd(in);
            }
            sent.add(code);
            return sendRaw(front, msg, code, flags, size, fds, nfds);
        } finally {
            for (final int fd : fds) {
                if (fd > 0) {
                    LibC.close(fd); // the back end has its own copy
                }
            }
        }
    }

    private static int makeFd(final FuzzBytes in) throws NativeException {
        switch (in.pick(3)) {
            case FD_EVENT -> {
                return LibC.eventfd(LibC.EFD_CLOEXEC);
            }
            case FD_MEMFD -> {
                final long size = 4096L << in.pick(9);
                final int fd = LibC.memfdCreate("fuzz-guest");
                try {
                    LibC.ftruncate(fd, size);
                    final byte[] content = in.bytes(8 * in.u8());
                    if (content.length > 0) {
                        try (Arena a = Arena.ofConfined()) {
                            final MemorySegment c = a.allocateFrom(JAVA_BYTE, content);
                            LibC.rawWrite(fd, c.address(), content.length); // at offset 0: the region's first bytes
                        }
                    }
                    return fd;
                } catch (final NativeException e) {
                    LibC.close(fd);
                    throw e;
                }
            }
            default -> {
                return LibC.openReadOnly("/dev/null");
            }
        }
    }

    private static boolean sendRaw(final UnixSocket front, final MemorySegment msg, final int code, final int flags, final int size,
                                   final int[] fds, final int nfds) {
        msg.set(JAVA_INT_UNALIGNED, Protocol.HDR_REQUEST, code);
        msg.set(JAVA_INT_UNALIGNED, Protocol.HDR_FLAGS, flags);
        msg.set(JAVA_INT_UNALIGNED, Protocol.HDR_SIZE, size);
        try {
            front.send(msg, Protocol.HEADER_SIZE + size, fds, nfds);
            return true;
        } catch (final IOException e) {
            return false; // the back end closed the connection (EPIPE): it refused something, as it may
        }
    }

    /**
     * Reads replies until the back end's close; each must be a reply header to a sent request, its payload in bounds.
     * Plain read(2) on the fd: the UnixSocket object belongs to the sending thread (its scratch is single-threaded).
     */
    private static void readReplies(final UnixSocket front, final Arena arena, final Set<Integer> sent, final List<String> replies) {
        final MemorySegment head = arena.allocate(Protocol.HEADER_SIZE);
        final MemorySegment body = arena.allocate(Protocol.MAX_PAYLOAD);
        while (readExactly(front.fd(), head, Protocol.HEADER_SIZE)) {
            final int code = head.get(JAVA_INT_UNALIGNED, Protocol.HDR_REQUEST);
            final int flags = head.get(JAVA_INT_UNALIGNED, Protocol.HDR_FLAGS);
            final int size = head.get(JAVA_INT_UNALIGNED, Protocol.HDR_SIZE);
            assertEquals(Protocol.VERSION | Protocol.FLAG_REPLY, flags, "reply flags");
            assertTrue(sent.contains(code), "a reply to request " + code + ", which was never sent");
            assertTrue(size >= 0 && size <= Protocol.MAX_PAYLOAD, "a reply of " + size + " bytes");
            if (size > 0 && !readExactly(front.fd(), body, size)) {
                fail("a reply's payload cut short");
            }
            if (code == Request.GET_QUEUE_NUM.code) {
                assertEquals(8, size);
                assertEquals(2, body.get(JAVA_LONG_UNALIGNED, 0), "GET_QUEUE_NUM answered with another queue count");
            }
            replies.add(code + ":" + size);
        }
    }

    /**
     * Reads {@code n} bytes; false at the end of the stream before the first one (or a reset: the back end closed
     * with messages of ours unread, after its replies). Fails on an end in the middle.
     */
    private static boolean readExactly(final int fd, final MemorySegment buf, final int n) {
        int done = 0;
        while (done < n) {
            final long got = LibC.rawRead(fd, buf.address() + done, n - done);
            if (got == -LibC.EINTR) {
                continue;
            }
            if (got == 0 || got == -ECONNRESET) {
                if (done == 0) {
                    return false;
                }
                fail("a reply cut short after " + done + " of " + n + " bytes");
            }
            assertTrue(got > 0, "read(2) of the replies failed: errno " + -got);
            done += (int) got;
        }
        return true;
    }

    private static String stack(final Thread t) {
        final StringBuilder b = new StringBuilder();
        for (final StackTraceElement e : t.getStackTrace()) {
            b.append("\tat ").append(e).append('\n');
        }
        return b.toString();
    }

    /** Writes the seed corpus into directory {@code args[0]} (tools/fuzz vhost-user-connection --write-seeds). */
    public static void main(final String[] args) throws IOException {
        final Path dir = Path.of(args[0]);
        Files.createDirectories(dir);
        final long uva = 0x7f00_0000_0000L;
        final long features = new VirtioBlkDevice(new NullBackend(1 << 20), 2, 0, "seed").features() | (1L << Protocol.F_PROTOCOL_FEATURES);
        final long protocol = (1L << Protocol.PF_MQ) | (1L << Protocol.PF_REPLY_ACK) | (1L << Protocol.PF_CONFIG)
            | (1L << Protocol.PF_RESET_DEVICE) | (1L << Protocol.PF_CONFIGURE_MEM_SLOTS);
        // A 64 KiB guest region (memfd, 4096 << 4) whose first bytes hold queue 0's rings and one 512-byte read:
        // descriptors at 0 (header 0x400, data 0x500, status 0x7f0), avail at 0x100 (idx 1, ring[0] = 0), used at 0x200.
        final java.nio.ByteBuffer g = java.nio.ByteBuffer.allocate(0x7f8).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        g.putLong(0, 0x400).putInt(8, 16).putShort(12, (short) 1).putShort(14, (short) 1);
        g.putLong(16, 0x500).putInt(24, 512).putShort(28, (short) 3).putShort(30, (short) 2);
        g.putLong(32, 0x7f0).putInt(40, 1).putShort(44, (short) 2);
        g.putShort(0x102, (short) 1).putShort(0x104, (short) 0);
        g.putInt(0x400, VirtioBlk.T_IN).putLong(0x408, 3);
        final byte[] guest = g.array();

        final Seq handshake = new Seq()
            .msg(Request.GET_FEATURES, 0, new byte[0])
            .msg(Request.GET_PROTOCOL_FEATURES, 0, new byte[0])
            .msg(Request.SET_PROTOCOL_FEATURES, 0, u64(protocol))
            .msg(Request.GET_QUEUE_NUM, 0, new byte[0])
            .msg(Request.GET_MAX_MEM_SLOTS, 0, new byte[0])
            .msg(Request.SET_OWNER, 0, new byte[0])
            .msg(Request.GET_CONFIG, 0, le(0, 60, 0, new byte[60]))
            .msg(Request.SET_FEATURES, 0, u64(features));
        write(dir, "handshake", handshake);
        final Seq memory = handshake.copy()
            .msg(Request.SET_MEM_TABLE, Protocol.FLAG_NEED_REPLY, region(1, 0, 64 << 10, uva, 0)).memfd(4, guest);
        write(dir, "memory-table", memory);
        final Seq queue = memory.copy()
            .msg(Request.SET_VRING_NUM, 0, le2(0, 16))
            .msg(Request.SET_VRING_ADDR, 0, vringAddr(0, uva, uva + 0x200, uva + 0x100))
            .msg(Request.SET_VRING_BASE, 0, le2(0, 0))
            .msg(Request.SET_VRING_CALL, 0, u64(0)).eventfd()
            .msg(Request.SET_VRING_KICK, 0, u64(0)).eventfd()
            .msg(Request.SET_VRING_ENABLE, Protocol.FLAG_NEED_REPLY, le2(0, 1));
        write(dir, "queue-serves-a-read", queue.copy().msg(Request.GET_VRING_BASE, 0, le2(0, 0)));
        write(dir, "memory-change-under-a-running-queue", queue.copy()
            .msg(Request.ADD_MEM_REG, Protocol.FLAG_NEED_REPLY, java.util.Arrays.copyOfRange(region(1, 1 << 20, 4096, uva + (1 << 20), 0), 0, 40)).memfd(0, new byte[0])
            .msg(Request.REM_MEM_REG, Protocol.FLAG_NEED_REPLY, java.util.Arrays.copyOfRange(region(1, 1 << 20, 4096, uva + (1 << 20), 0), 0, 40))
            .msg(Request.SET_CONFIG, Protocol.FLAG_NEED_REPLY, le(VirtioBlk.CFG_WRITEBACK, 1, 0, new byte[] {0}))
            .msg(Request.RESET_DEVICE, 0, new byte[0]));
        write(dir, "kick-with-a-non-eventfd", memory.copy().msg(Request.SET_VRING_KICK, 0, u64(0)).devnull());
        write(dir, "too-many-fds", new Seq().msg(Request.SET_MEM_TABLE, 0, region(1, 0, 4096, uva, 0))
            .eventfd().eventfd().eventfd().eventfd().eventfd().eventfd().eventfd().eventfd().eventfd());
        write(dir, "region-past-its-fd", handshake.copy().msg(Request.SET_MEM_TABLE, 0, region(1, 0, 1 << 20, uva, 4096)).memfd(0, new byte[0]));
    }

    private static byte[] u64(final long v) {
        return java.nio.ByteBuffer.allocate(8).order(java.nio.ByteOrder.LITTLE_ENDIAN).putLong(v).array();
    }

    private static byte[] le2(final int a, final int b) {
        return java.nio.ByteBuffer.allocate(8).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(a).putInt(b).array();
    }

    private static byte[] le(final int offset, final int size, final int flags, final byte[] data) {
        return java.nio.ByteBuffer.allocate(12 + data.length).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(offset).putInt(size)
            .putInt(flags).put(data).array();
    }

    private static byte[] region(final int count, final long gpa, final long size, final long uva, final long offset) {
        final java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(8 + 32).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        return b.putInt(count).putInt(0).putLong(gpa).putLong(size).putLong(uva).putLong(offset).array();
    }

    private static byte[] vringAddr(final int index, final long desc, final long used, final long avail) {
        return java.nio.ByteBuffer.allocate(40).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(index).putInt(0).putLong(desc)
            .putLong(used).putLong(avail).putLong(0).array();
    }

    private static void write(final Path dir, final String name, final Seq s) throws IOException {
        Files.write(dir.resolve(name), s.bytes());
    }

    /** A message sequence in the input's encoding: each message's fields, then its fd count and fds. */
    private static final class Seq {
        private final List<byte[]> messages = new ArrayList<>();
        private final List<List<byte[]>> fds = new ArrayList<>();

        Seq msg(final Request r, final int extraFlags, final byte[] payload) {
            final int choice = java.util.Arrays.asList(KNOWN).indexOf(r);
            final FuzzBytes.Writer w = new FuzzBytes.Writer().u8(choice);
            w.u8(extraFlags == Protocol.FLAG_NEED_REPLY ? 1 : 0);
            if (r.payloadSize >= 0 && r.payloadSize == payload.length) {
                w.u8(0);
            } else {
                if (r.payloadSize >= 0) {
                    w.u8(1);
                }
                w.u16(payload.length);
            }
            messages.add(w.bytes(payload).toByteArray());
            fds.add(new ArrayList<>());
            return this;
        }

        Seq eventfd() {
            fds.get(fds.size() - 1).add(new byte[] {FD_EVENT});
            return this;
        }

        Seq devnull() {
            fds.get(fds.size() - 1).add(new byte[] {2});
            return this;
        }

        Seq memfd(final int sizeExp, final byte[] content) {
            final byte[] padded = java.util.Arrays.copyOf(content, (content.length + 7) / 8 * 8);
            fds.get(fds.size() - 1).add(new FuzzBytes.Writer().u8(FD_MEMFD).u8(sizeExp).u8(padded.length / 8).bytes(padded).toByteArray());
            return this;
        }

        Seq copy() {
            final Seq c = new Seq();
            c.messages.addAll(messages);
            for (final List<byte[]> f : fds) {
                c.fds.add(new ArrayList<>(f));
            }
            return c;
        }

        byte[] bytes() {
            final FuzzBytes.Writer w = new FuzzBytes.Writer();
            for (int i = 0; i < messages.size(); i++) {
                w.bytes(messages.get(i)).u8(fds.get(i).size());
                fds.get(i).forEach(w::bytes);
            }
            return w.toByteArray();
        }
    }
}
