package io.lazyblk.pull.rdma;

import io.lazyblk.pull.provider.ProviderProtocol;
import io.lazyblk.pull.provider.RdmaOffer;

import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;

/**
 * The client's half of the RDMA control exchange ({@link ProviderProtocol} control requests) on a greeted provider
 * connection in blocking mode, whose socket timeout bounds every read. Every answer is checked before use: a wrong
 * id, status or length is an IOException naming the provider. Not thread-safe: one set-up at a time.
 */
final class RdmaControl {
    /** The provider's answer to an offer request: an offer, or why not. */
    sealed interface Answer permits Offered, Refused {
    }

    record Offered(RdmaOffer offer) implements Answer {
    }

    record Refused(String reason) implements Answer {
    }

    private final SocketChannel channel;
    private final DataInputStream in;
    private final String provider;
    private long nextId = 1;

    RdmaControl(final SocketChannel channel, final String provider) throws IOException {
        this.channel = channel;
        this.in = new DataInputStream(channel.socket().getInputStream());
        this.provider = provider;
    }

    /** Asks for RDMA access to the greeted image of {@code imageLength} bytes. */
    Answer requestOffer(final long imageLength) throws IOException {
        final long id = nextId++;
        send(ProviderProtocol.encodeControl(id, ProviderProtocol.OP_RDMA_OFFER, new byte[0]));
        final ByteBuffer head = answerHead(id, "offer request");
        final int status = head.getInt(ProviderProtocol.RESPONSE_STATUS_OFFSET);
        final long length = Integer.toUnsignedLong(head.getInt(ProviderProtocol.RESPONSE_LENGTH_OFFSET));
        if (status == ProviderProtocol.RESPONSE_RDMA_UNAVAILABLE) {
            return new Refused(reason(length));
        }
        if (status != ProviderProtocol.RESPONSE_RDMA_OFFER) {
            throw broken("answered the RDMA offer request with status " + status);
        }
        if (length > RdmaOffer.MAX_BYTES) {
            throw broken("sent an RDMA offer of " + length + " bytes (at most " + RdmaOffer.MAX_BYTES + ")");
        }
        try {
            return new Offered(RdmaOffer.decode(read((int) length), imageLength));
        } catch (final IllegalArgumentException e) {
            throw broken("sent a bad RDMA offer: " + e.getMessage());
        }
    }

    /** Tells the provider our CM connection comes from {@code source}; throws with its reason if it refuses. */
    void claim(final InetSocketAddress source) throws IOException {
        final long id = nextId++;
        send(ProviderProtocol.encodeControl(id, ProviderProtocol.OP_RDMA_CLAIM, ProviderProtocol.encodeClaim(source)));
        final ByteBuffer head = answerHead(id, "claim");
        final int status = head.getInt(ProviderProtocol.RESPONSE_STATUS_OFFSET);
        final long length = Integer.toUnsignedLong(head.getInt(ProviderProtocol.RESPONSE_LENGTH_OFFSET));
        if (status == ProviderProtocol.RESPONSE_RDMA_UNAVAILABLE) {
            throw new IOException("provider " + provider + " refused the RDMA claim: " + reason(length));
        }
        if (status != ProviderProtocol.RESPONSE_RDMA_CLAIMED || length != 0) {
            throw broken("answered the RDMA claim with status " + status + " and " + length + " bytes");
        }
    }

    private ByteBuffer answerHead(final long id, final String what) throws IOException {
        final ByteBuffer head;
        try {
            head = read(ProviderProtocol.RESPONSE_HEADER_BYTES);
        } catch (final EOFException e) {
            throw new IOException("provider " + provider + " closed the connection at the RDMA " + what
                + " (an image-server without RDMA support?)", e);
        }
        final long echoed = head.getLong(ProviderProtocol.RESPONSE_ID_OFFSET);
        if (echoed != id) {
            throw broken("answered the RDMA " + what + " " + id + " with id " + echoed);
        }
        return head;
    }

    private String reason(final long length) throws IOException {
        if (length > ProviderProtocol.MAX_MESSAGE_BYTES) {
            throw broken("gave a reason of " + length + " bytes (at most " + ProviderProtocol.MAX_MESSAGE_BYTES + ")");
        }
        final ByteBuffer b = read((int) length);
        return new String(b.array(), 0, (int) length, StandardCharsets.UTF_8).replaceAll("\\p{Cntrl}", "?");
    }

    private IOException broken(final String what) {
        return new IOException("provider " + provider + " " + what + ": not a lazyblk provider, or another protocol version");
    }

    private void send(final ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            channel.write(b);
        }
    }

    private ByteBuffer read(final int n) throws IOException {
        final byte[] b = new byte[n];
        try {
            in.readFully(b);
        } catch (final SocketTimeoutException e) {
            throw new IOException("provider " + provider + " did not answer the RDMA set-up in time", e);
        }
        return ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN);
    }
}
