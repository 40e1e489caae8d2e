package io.lazyblk.pull.tcp;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicReference;

import static io.lazyblk.pull.provider.ProviderProtocol.CONTROL_MARKER;
import static io.lazyblk.pull.provider.ProviderProtocol.MAX_MESSAGE_BYTES;
import static io.lazyblk.pull.provider.ProviderProtocol.MAX_PROFILE_ANSWER_BYTES;
import static io.lazyblk.pull.provider.ProviderProtocol.OP_PROFILE;
import static io.lazyblk.pull.provider.ProviderProtocol.RESPONSE_PROFILE;

/**
 * The boot profile request of a {@link TcpTransportAgent}'s connection ({@code OP_PROFILE}): asked from any thread,
 * put on the wire by the connection's owner ahead of the fetches it writes next, and its answer picked out of the
 * responses by its id (negative, so never a fetch's: the scheduler's ids are positive). At most one on the wire; a
 * newer ask replaces one not yet sent. Rare: once per engine start.
 */
final class ProfileRequest {
    /** Bytes one request takes in the request buffer: the 16-byte head, op and payload length. */
    static final int BYTES = io.lazyblk.pull.provider.ProviderProtocol.REQUEST_BYTES + io.lazyblk.pull.provider.ProviderProtocol.CONTROL_TAIL_BYTES;

    /** One ask: its id (set when it goes on the wire), the answer's payload, the caller's future. */
    private static final class Ask {
        final CompletableFuture<ByteBuffer> result = new CompletableFuture<>();
        long id;
        ByteBuffer payload;
        /** The answer carried another status than RESPONSE_PROFILE: its payload is read and dropped. */
        boolean declined;
    }

    /** Asked and not yet on the wire; set by any thread, taken by the owner. */
    private final AtomicReference<Ask> queued = new AtomicReference<>();
    /** On the wire, its answer expected among the responses; the connection's owner only. */
    private Ask onWire;
    private long ids = Long.MIN_VALUE;

    /**
     * Any thread: a request to send once connected. The future completes with the answer's payload (unchecked), null
     * if the provider answered with another status (it has none to give), or exceptionally if the connection dropped
     * with it on the wire or the source closed.
     */
    CompletableFuture<ByteBuffer> ask() {
        final Ask ask = new Ask();
        // getAndSet (volatile): publishes the ask to the owner's getAndSet in put(), which takes it.
        final Ask older = queued.getAndSet(ask);
        if (older != null) {
            older.result.complete(null);
        }
        return ask.result;
    }

    /** Any thread: whether a request waits to be sent. */
    boolean waiting() {
        return queued.get() != null;
    }

    /** Owner: writes the waiting request into {@code requests} (room for {@link #BYTES}) unless one is on the wire. */
    boolean put(final ByteBuffer requests) {
        if (onWire != null || queued.get() == null) {
            return false;
        }
        final Ask ask = queued.getAndSet(null);
        if (ask == null) {
            return false;
        }
        ask.id = ++ids;
        requests.putLong(ask.id).putInt(CONTROL_MARKER).putInt(0).putInt(OP_PROFILE).putInt(0);
        onWire = ask;
        return true;
    }

    /** Owner: whether the response with {@code id} answers the request on the wire. */
    boolean answers(final long id) {
        return onWire != null && id == onWire.id;
    }

    /** Owner: the answer's header is in; where its payload goes. A length past what any answer holds is a protocol error. */
    ByteBuffer body(final int status, final int length) throws IOException {
        final boolean profile = status == RESPONSE_PROFILE;
        if (length < 0 || length > (profile ? MAX_PROFILE_ANSWER_BYTES : MAX_MESSAGE_BYTES)) {
            throw new IOException("provider answered the boot profile request with status " + status + " and "
                + Integer.toUnsignedString(length) + " bytes (protocol error)");
        }
        onWire.declined = !profile;
        onWire.payload = ByteBuffer.allocate(length); // once per engine start, up to 256 KiB
        return onWire.payload;
    }

    /** Owner: the payload is in; hands it to the asker (checked there, off the transport thread). */
    void finish() {
        final Ask ask = onWire;
        onWire = null;
        ask.result.complete(ask.declined ? null : ask.payload.flip());
    }

    /** Owner: the connection dropped with the request on the wire. */
    void fail(final String reason) {
        if (onWire != null) {
            onWire.result.completeExceptionally(new IOException(reason));
            onWire = null;
        }
    }

    /** Owner: a new connection; nothing of the old one is on the wire (fail() ran when it dropped). */
    void reset() {
        onWire = null;
    }

    /** Owner, closing: every request, sent or not, fails. */
    void failAll(final String reason) {
        fail(reason);
        final Ask ask = queued.getAndSet(null);
        if (ask != null) {
            ask.result.completeExceptionally(new IOException(reason));
        }
    }
}
