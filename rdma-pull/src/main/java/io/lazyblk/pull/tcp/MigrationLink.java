package io.lazyblk.pull.tcp;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pull.provider.ProviderProtocol;
import io.lazyblk.pull.token.TokenSource;

import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.time.Duration;

import static io.lazyblk.pull.provider.ProviderProtocol.*;

/**
 * The destination's side of a live migration without shared storage ({@link ProviderProtocol}'s class comment): a
 * TCP connection of its own to the source engine's export, apart from the page sources', on which it waits for the
 * final set of changed pages ({@link #awaitFinal}), which brings the guest's write-cache mode with it
 * ({@link #guestWriteback}), and says when its copy is complete ({@link #complete}).
 *
 * <p>Everything the source sends is hostile input: every answer is checked (the id it echoes, its status, its length,
 * its flags, every page number) and a bad one is an IOException naming the problem, after which the link is closed. Every read
 * is bounded by a deadline, so a source that dies (or never answers) costs at most the bound given.
 *
 * <p>Not thread-safe: one thread calls {@link #awaitFinal} and {@link #complete}; {@link #close()} may come from any
 * thread, and ends a wait at once (with an IOException).
 */
public final class MigrationLink implements AutoCloseable {
    /** Bytes of the final set read at a time: it may be 64 MiB, and is read through one small buffer. */
    private static final int CHUNK_BYTES = 64 << 10;

    private final SocketChannel channel;
    /** The socket adaptor's stream: unlike the channel, it honours SO_TIMEOUT, which bounds every read. */
    private final InputStream in;
    private final Manifest manifest;
    private final String provider;
    private final String image;
    private final Duration timeout;
    private final ByteBuffer header = ByteBuffer.allocate(RESPONSE_HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
    private long nextId = 1;
    /**
     * The id of a {@link ProviderProtocol#OP_MIGRATION_FINAL} sent and not answered yet, or -1: after an
     * {@link #awaitFinal} whose bound passed before any byte of the answer came, the next call waits for that answer.
     */
    private long outstanding = -1;
    private volatile boolean closed;
    /**
     * The guest's write-cache mode from the last final answer: 1 writeback, 0 write-through, -1 none received yet.
     * Plain: read and written by the one thread that calls {@link #awaitFinal} (the class is not thread-safe).
     */
    private int writeback = -1;

    private MigrationLink(final ProviderHandshake.Connected c, final String provider, final String image, final Duration timeout)
        throws IOException {
        this.channel = c.channel();
        this.in = channel.socket().getInputStream();
        this.manifest = c.manifest();
        this.provider = provider;
        this.image = image;
        this.timeout = timeout;
    }

    /**
     * Connects to the source's export {@code image} at {@code provider} and greets it with the token {@code token}
     * holds now, each step within {@code timeout} (also the bound on {@link #complete}'s answer).
     *
     * @throws io.lazyblk.pull.provider.ProviderRefusedException if the provider refused, with its explanation
     * @throws IOException if it cannot connect, or the provider breaks the protocol
     */
    public static MigrationLink connect(final InetSocketAddress provider, final String image, final TokenSource token,
                                        final Duration timeout) throws IOException {
        if (timeout.isNegative() || timeout.isZero()) {
            throw new IllegalArgumentException("timeout " + timeout + ": positive");
        }
        final ProviderHandshake.Connected c = ProviderHandshake.connect(provider, image, token, timeout, ch -> { });
        try {
            return new MigrationLink(c, String.valueOf(provider), image, timeout);
        } catch (final IOException | RuntimeException e) {
            c.channel().close();
            throw e;
        }
    }

    /** The export's manifest, from the hello: a {@link Manifest#isLive live} one for a migrating engine's disk. */
    public Manifest manifest() {
        return manifest;
    }

    /**
     * Waits for the source's switchover and returns the final set of pages the guest changed there after they may have
     * been fetched: export page numbers (pages of {@link #manifest()}), each below its page count, none twice. Asks
     * again each time the source answers "not yet", until {@code bound} passes. Once it returns, {@link #guestWriteback}
     * holds the guest's write-cache mode that came with the set.
     *
     * @throws IOException if {@code bound} passes first (the source engine has not reached its switchover; the question
     *     stays asked, and the next call waits for its answer); if the export is no migrating engine's (naming the
     *     source's reason); if the source breaks the protocol or the connection drops (the link is then closed)
     */
    public int[] awaitFinal(final Duration bound) throws IOException {
        ensureOpen();
        final long deadline = System.nanoTime() + Math.max(0, bound.toNanos());
        while (true) {
            if (outstanding < 0) {
                outstanding = send(OP_MIGRATION_FINAL);
            }
            if (!awaitHeader(deadline)) {
                throw new IOException("the source engine of '" + image + "' at " + provider + " has not reached its switchover within "
                    + bound.toMillis() + " ms (still asked: the next wait picks up its answer)");
            }
            final long id = outstanding;
            outstanding = -1;
            final int status = checkHeader(id, "migration final");
            final int length = header.getInt(RESPONSE_LENGTH_OFFSET);
            switch (status) {
                case RESPONSE_MIGRATION_PENDING -> {
                    expectEmpty(length, "a pending answer");
                    if (System.nanoTime() - deadline >= 0) {
                        throw new IOException("the source engine of '" + image + "' at " + provider + " has not reached its switchover"
                            + " within " + bound.toMillis() + " ms");
                    }
                }
                case RESPONSE_MIGRATION_FINAL -> {
                    return readFinal(length, deadline);
                }
                case RESPONSE_MIGRATION_UNAVAILABLE -> throw unavailable(length, deadline);
                default -> throw broken("answered a migration final request with status " + Integer.toUnsignedString(status));
            }
        }
    }

    /**
     * The guest's write-cache mode the source sent with the last final set ({@link #awaitFinal}): true if the guest
     * chose writeback (virtio-blk CONFIG_WCE on), false for write-through, as at the source's switchover. The
     * destination's device must take it on: QEMU does not set it there again.
     *
     * @throws IllegalStateException if no final set has been received yet
     */
    public boolean guestWriteback() {
        if (writeback < 0) {
            throw new IllegalStateException("no final set received yet: the guest's write-cache mode comes with it (awaitFinal)");
        }
        return writeback == 1;
    }

    /**
     * Tells the source the destination's copy is complete, and waits (up to the connect timeout) for it to say it
     * recorded that.
     *
     * @throws IllegalStateException while an {@link #awaitFinal} question is still unanswered
     * @throws IOException if the source does not answer in time, is no migrating engine (naming its reason), or breaks
     *     the protocol (the link is then closed)
     */
    public void complete() throws IOException {
        ensureOpen();
        if (outstanding >= 0) {
            throw new IllegalStateException("the final set of changed pages has not come yet: complete() after awaitFinal returns");
        }
        final long deadline = System.nanoTime() + timeout.toNanos();
        final long id = send(OP_MIGRATION_DONE);
        if (!awaitHeader(deadline)) {
            throw broken("did not answer the migration done request within " + timeout.toMillis() + " ms");
        }
        final int status = checkHeader(id, "migration done");
        final int length = header.getInt(RESPONSE_LENGTH_OFFSET);
        switch (status) {
            case RESPONSE_MIGRATION_DONE -> expectEmpty(length, "a done answer");
            case RESPONSE_MIGRATION_UNAVAILABLE -> throw unavailable(length, deadline);
            default -> throw broken("answered a migration done request with status " + Integer.toUnsignedString(status));
        }
    }

    private void ensureOpen() throws IOException {
        if (closed) {
            throw new IOException("the migration link to '" + image + "' at " + provider + " is closed");
        }
    }

    private long send(final int op) throws IOException {
        final long id = nextId++;
        final ByteBuffer b = ProviderProtocol.encodeControl(id, op, new byte[0]);
        try {
            // 24 bytes into an empty socket buffer (nothing is outstanding when a request is sent): never blocks for long.
            while (b.hasRemaining()) {
                channel.write(b);
            }
        } catch (final IOException e) {
            throw broken("dropped the connection (" + e.getMessage() + ")", e);
        }
        return id;
    }

    /**
     * Reads an answer's header by {@code deadline}. False if the deadline passed before its first byte came (the
     * question is still open, the link still usable); once a byte came, the rest must come by the deadline too.
     */
    private boolean awaitHeader(final long deadline) throws IOException {
        header.clear();
        if (!read(header, deadline, true)) {
            return false;
        }
        header.flip();
        return true;
    }

    /** Checks the header's echoed id against {@code id}; returns its status. */
    private int checkHeader(final long id, final String what) throws IOException {
        final long echoed = header.getLong(RESPONSE_ID_OFFSET);
        if (echoed != id) {
            throw broken("answered request " + echoed + " to a " + what + " request " + id);
        }
        return header.getInt(RESPONSE_STATUS_OFFSET);
    }

    private void expectEmpty(final int length, final String what) throws IOException {
        if (length != 0) {
            throw broken("sent " + what + " with a " + Integer.toUnsignedString(length) + "-byte payload (none expected)");
        }
    }

    private IOException unavailable(final int length, final long deadline) throws IOException {
        if (length < 0 || length > MAX_MESSAGE_BYTES) {
            return broken("sent an unavailable answer with a " + Integer.toUnsignedString(length) + "-byte reason (at most "
                + MAX_MESSAGE_BYTES + ")");
        }
        final ByteBuffer reason = ByteBuffer.allocate(length);
        read(reason, deadline, false);
        return new IOException("provider " + provider + " does not serve '" + image + "' as a live migration's source: "
            + new String(reason.array(), StandardCharsets.UTF_8).replaceAll("\\p{Cntrl}", "?"));
    }

    /**
     * Reads and checks a final answer's {@code length} bytes: the flags u32 (no bit but the guest's write cache), then
     * the final set, u32 pages, each in the export, none twice. Records the write-cache mode only once all is read.
     */
    private int[] readFinal(final int length, final long deadline) throws IOException {
        final int pageCount = manifest.pageCount();
        // length is a u32: negative as an int means past 2 GiB, far beyond 4 + 4 x Manifest.MAX_PAGES.
        if (length < FINAL_FLAGS_BYTES || (length - FINAL_FLAGS_BYTES) % 4 != 0 || (length - FINAL_FLAGS_BYTES) / 4 > pageCount) {
            throw broken("announced a final answer of " + Integer.toUnsignedString(length) + " bytes (a u32 of flags, then"
                + " whole u32 pages, at most " + pageCount + " of them: the export's page count)");
        }
        final ByteBuffer flagsWord = ByteBuffer.allocate(FINAL_FLAGS_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        read(flagsWord, deadline, false);
        final int flags = flagsWord.getInt(0);
        if ((flags & ~FINAL_KNOWN_FLAGS) != 0) {
            throw broken("sent a final answer with unknown flags 0x" + Integer.toHexString(flags & ~FINAL_KNOWN_FLAGS)
                + " (only bit 0, the guest's write cache, is defined)");
        }
        final int[] pages = readPages(length - FINAL_FLAGS_BYTES, pageCount, deadline);
        writeback = (flags & FINAL_FLAG_GUEST_WRITEBACK) != 0 ? 1 : 0;
        return pages;
    }

    /** Reads and checks the final set: {@code bytes} (checked: whole pages, at most {@code pageCount}) of u32 pages. */
    private int[] readPages(final int bytes, final int pageCount, final long deadline) throws IOException {
        final int[] pages = new int[bytes / 4];
        final long[] seen = new long[(pageCount + 63) >>> 6];
        final ByteBuffer chunk = ByteBuffer.allocate(Math.min(CHUNK_BYTES, bytes)).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < pages.length; ) {
            chunk.clear().limit(Math.min(chunk.capacity(), 4 * (pages.length - i)));
            read(chunk, deadline, false);
            chunk.flip();
            while (chunk.hasRemaining()) {
                final int p = chunk.getInt();
                if (p < 0 || p >= pageCount) {
                    throw broken("sent page " + Integer.toUnsignedString(p) + " in the final set, outside the export's " + pageCount
                        + " pages");
                }
                if ((seen[p >>> 6] & (1L << p)) != 0) {
                    throw broken("sent page " + p + " twice in the final set");
                }
                seen[p >>> 6] |= 1L << p;
                pages[i++] = p;
            }
        }
        return pages;
    }

    /**
     * Fills {@code b} by {@code deadline}. If {@code mayGiveUp} and the deadline passes before the first byte, returns
     * false; any other timeout, an EOF or a failed read closes the link and throws.
     */
    private boolean read(final ByteBuffer b, final long deadline, final boolean mayGiveUp) throws IOException {
        final boolean fresh = b.position() == 0;
        while (b.hasRemaining()) {
            final long left = deadline - System.nanoTime();
            if (left <= 0) {
                if (mayGiveUp && fresh && b.position() == 0) {
                    return false;
                }
                throw broken("stopped in the middle of an answer (its deadline passed)");
            }
            final int n;
            try {
                // At least 1 ms (0 would mean no timeout), at most what is left of the deadline.
                channel.socket().setSoTimeout((int) Math.max(1, Math.min(Integer.MAX_VALUE, left / 1_000_000L)));
                n = in.read(b.array(), b.arrayOffset() + b.position(), b.remaining());
            } catch (final SocketTimeoutException e) {
                continue; // the loop decides: past the deadline now
            } catch (final IOException e) {
                if (closed) {
                    throw new IOException("the migration link to '" + image + "' at " + provider + " was closed", e);
                }
                throw broken("dropped the connection (" + e.getMessage() + ")", e);
            }
            if (n < 0) {
                throw broken("closed the connection", new EOFException());
            }
            b.position(b.position() + n);
        }
        return true;
    }

    private IOException broken(final String what) {
        return broken(what, null);
    }

    /** Closes the link (what follows on the connection cannot be trusted) and says what the source did. */
    private IOException broken(final String what, final Throwable cause) {
        close();
        return new IOException("the source engine of '" + image + "' at " + provider + " " + what
            + (what.startsWith("closed") || what.startsWith("dropped")
            ? " (a provider that does not know migration requests closes on them: is it a lazyblk migrate-export?)" : ""), cause);
    }

    @Override
    public void close() {
        closed = true;
        try {
            channel.close();
        } catch (final IOException e) {
            // closing a socket: nothing more to do
        }
    }
}
