package io.lazyblk.pull.rdma;

import io.lazyblk.pull.provider.ProviderProtocol;
import io.lazyblk.pull.provider.RdmaOffer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.function.Function;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The client's control exchange against a scripted provider: good answers decoded, every hostile one refused clearly. */
class RdmaControlTest {
    private static final long SIZE = 1 << 20;
    private ServerSocket listener;
    private SocketChannel client;

    /** A provider that reads one control request (24 bytes + payload) and answers with what {@code answer} makes of its id. */
    private RdmaControl scripted(final Function<Long, ByteBuffer> answer, final int payloadBytes) throws IOException {
        listener = new ServerSocket(0, 1, InetAddress.getLoopbackAddress());
        Thread.ofVirtual().start(() -> {
            try (Socket s = listener.accept()) {
                final InputStream in = s.getInputStream();
                final ByteBuffer head = ByteBuffer.wrap(in.readNBytes(24 + payloadBytes)).order(ByteOrder.LITTLE_ENDIAN);
                final ByteBuffer a = answer.apply(head.getLong(0));
                s.getOutputStream().write(a.array(), a.position(), a.remaining());
                s.getOutputStream().flush();
                if (a.capacity() > 0) {
                    in.read(); // hold the connection until the client closes it; an empty answer hangs up at once
                }
            } catch (final IOException e) {
                // the client went away
            }
        });
        client = SocketChannel.open(new InetSocketAddress(InetAddress.getLoopbackAddress(), listener.getLocalPort()));
        client.socket().setSoTimeout(5000);
        return new RdmaControl(client, "scripted");
    }

    @AfterEach
    void close() throws IOException {
        if (client != null) {
            client.close();
        }
        listener.close();
    }

    private static RdmaOffer offer() throws IOException {
        return new RdmaOffer(new InetSocketAddress(InetAddress.getByName("10.0.0.7"), 7000), SIZE, 0x1000, SIZE, (int) SIZE, new int[] {42});
    }

    private static byte[] bytes(final ByteBuffer b) {
        final byte[] a = new byte[b.remaining()];
        b.get(a);
        return a;
    }

    @Test
    void shouldDecodeAnOfferAndARefusal() throws IOException {
        final RdmaControl c = scripted(id -> ProviderProtocol.encodeControlAnswer(id, ProviderProtocol.RESPONSE_RDMA_OFFER, bytesOf()), 0);
        final RdmaControl.Answer a = c.requestOffer(SIZE);
        assertEquals(offer(), assertInstanceOf(RdmaControl.Offered.class, a).offer());
        close();
        final RdmaControl r = scripted(id -> ProviderProtocol.encodeControlAnswer(id, ProviderProtocol.RESPONSE_RDMA_UNAVAILABLE,
            "no device\u0007here".getBytes(StandardCharsets.UTF_8)), 0);
        assertEquals("no device?here", assertInstanceOf(RdmaControl.Refused.class, r.requestOffer(SIZE)).reason(),
            "control characters from the network are not logged as such");
    }

    private static byte[] bytesOf() {
        try {
            return bytes(offer().encode());
        } catch (final IOException e) {
            throw new AssertionError(e);
        }
    }

    @Test
    void shouldRefuseHostileAnswersWithAClearError() throws IOException {
        record Case(String says, Function<Long, ByteBuffer> answer) {
        }
        final Case[] cases = {
            new Case("with id", id -> ProviderProtocol.encodeControlAnswer(id + 1, ProviderProtocol.RESPONSE_RDMA_OFFER, bytesOf())),
            new Case("with status 99", id -> ProviderProtocol.encodeControlAnswer(id, 99, new byte[0])),
            new Case("RDMA offer of", id -> ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(id)
                .putInt(ProviderProtocol.RESPONSE_RDMA_OFFER).putInt(-1).flip()),
            new Case("reason of", id -> ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(id)
                .putInt(ProviderProtocol.RESPONSE_RDMA_UNAVAILABLE).putInt(1 << 20).flip()),
            new Case("bad RDMA offer", id -> ProviderProtocol.encodeControlAnswer(id, ProviderProtocol.RESPONSE_RDMA_OFFER, new byte[7])),
            new Case("closed the connection", id -> ByteBuffer.allocate(0)),
        };
        for (final Case k : cases) {
            final RdmaControl c = scripted(k.answer(), 0);
            final IOException e = assertThrows(IOException.class, () -> c.requestOffer(SIZE), k.says());
            assertTrue(e.getMessage().contains(k.says()) && e.getMessage().contains("scripted"), e.getMessage());
            close();
        }
    }

    @Test
    void shouldSendTheClaimAndThrowTheProvidersReasonWhenRefused() throws IOException {
        final InetSocketAddress from = new InetSocketAddress(InetAddress.getByName("10.0.0.8"), 33333);
        final RdmaControl ok = scripted(id -> ProviderProtocol.encodeControlAnswer(id, ProviderProtocol.RESPONSE_RDMA_CLAIMED, new byte[0]),
            ProviderProtocol.CLAIM_PAYLOAD_BYTES);
        ok.claim(from);
        close();
        final RdmaControl refused = scripted(id -> ProviderProtocol.encodeControlAnswer(id, ProviderProtocol.RESPONSE_RDMA_UNAVAILABLE,
            "10.0.0.8:33333 is claimed by another client".getBytes(StandardCharsets.UTF_8)), ProviderProtocol.CLAIM_PAYLOAD_BYTES);
        assertTrue(assertThrows(IOException.class, () -> refused.claim(from)).getMessage().contains("claimed by another client"));
    }
}
