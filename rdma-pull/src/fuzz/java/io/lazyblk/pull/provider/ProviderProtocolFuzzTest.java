package io.lazyblk.pull.provider;

import com.code_intelligence.jazzer.junit.FuzzTest;
import io.lazyblk.pagemap.Manifest;
import io.lazyblk.sys.fuzz.FuzzBytes;

import java.io.EOFException;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The provider protocol's parsing functions on hostile bytes: the client's readAnswer (hello answer and manifest),
 * RdmaOffer.decode (the client reads the provider's RDMA offer) and decodeClaim (the server reads a client's claim).
 *
 * <p>Input: one byte choosing the parser, then its bytes (for an offer: the image length the client expects, u64,
 * first). Properties: readAnswer throws only IOException (a refusal as ProviderRefusedException with the status
 * sent), reads no byte past what the answer announces, and a manifest it returns re-encodes to the bytes sent; an
 * offer or a claim is refused with IllegalArgumentException or re-encodes to exactly its input, and an accepted offer
 * keeps its promise: a read of up to {@link RdmaOffer#maxReadBytes()} from any offset lies inside one region.
 * The server's side of the hello and the requests is ImageServerFuzzTest.
 */
class ProviderProtocolFuzzTest {
    private static final int ANSWER = 0;
    private static final int OFFER = 1;
    private static final int CLAIM = 2;

    @FuzzTest
    void parse(final byte[] input) {
        final FuzzBytes in = new FuzzBytes(input);
        switch (in.pick(3)) {
            case ANSWER -> answer(in.rest());
            case OFFER -> offer(in.u64(), in.rest());
            default -> claim(in.rest());
        }
    }

    private static void answer(final byte[] bytes) {
        final int[] consumed = {0};
        final ProviderProtocol.ExactReader reader = n -> {
            if (n < 0 || n > bytes.length - consumed[0]) {
                throw new EOFException("wanted " + n + " bytes, " + (bytes.length - consumed[0]) + " left");
            }
            final ByteBuffer b = ByteBuffer.wrap(Arrays.copyOfRange(bytes, consumed[0], consumed[0] + n)).order(ByteOrder.LITTLE_ENDIAN);
            consumed[0] += n;
            return b;
        };
        final Manifest m;
        try {
            m = ProviderProtocol.readAnswer(reader, "fuzz", "image");
        } catch (final ProviderRefusedException refused) {
            final int code = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).getInt(0);
            assertEquals(code, refused.status().code, "a refusal with another status than the one sent");
            assertTrue(refused.status() != ProviderProtocol.HelloStatus.OK);
            return;
        } catch (final IOException refused) {
            return;
        }
        final ByteBuffer b = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        final int messageLength = Short.toUnsignedInt(b.getShort(ProviderProtocol.ANSWER_MESSAGE_LENGTH_OFFSET));
        final int manifestAt = ProviderProtocol.ANSWER_MESSAGE_OFFSET + messageLength + ProviderProtocol.ANSWER_MANIFEST_LENGTH_BYTES;
        final int manifestLength = b.getInt(manifestAt - ProviderProtocol.ANSWER_MANIFEST_LENGTH_BYTES);
        assertEquals(manifestAt + manifestLength, consumed[0], "readAnswer read another amount than the answer announced");
        assertArrayEquals(Arrays.copyOfRange(bytes, manifestAt, consumed[0]), bytes(m.encode()), "the manifest re-encodes differently");
    }

    private static void offer(final long expectedLength, final byte[] bytes) {
        final RdmaOffer o;
        try {
            o = RdmaOffer.decode(ByteBuffer.wrap(bytes), expectedLength);
        } catch (final IllegalArgumentException refused) {
            return;
        }
        assertArrayEquals(bytes, bytes(o.encode()), "the offer re-encodes differently");
        assertEquals(expectedLength, o.imageLength());
        final long maxRead = o.maxReadBytes();
        assertTrue(maxRead >= 1 && maxRead <= o.imageLength(), "max read " + maxRead);
        for (final long offset : new long[] {0, o.imageLength() - maxRead, (o.imageLength() - maxRead) / 2, o.imageLength() - 1}) {
            final int r = o.region(offset);
            assertTrue(r >= 0 && r < o.regionCount(), "offset " + offset + " falls in region " + r + " of " + o.regionCount());
            final long regionStart = r * o.stride();
            final long end = Math.min(offset + maxRead, o.imageLength());
            assertTrue(offset >= regionStart && end <= regionStart + o.regionBytes(r),
                "a read of " + maxRead + " bytes at " + offset + " leaves region " + r + " (" + o + ")");
        }
    }

    private static void claim(final byte[] bytes) {
        final InetSocketAddress a;
        try {
            a = ProviderProtocol.decodeClaim(ByteBuffer.wrap(bytes));
        } catch (final IllegalArgumentException refused) {
            return;
        }
        assertArrayEquals(bytes, ProviderProtocol.encodeClaim(a), "the claim re-encodes differently");
    }

    private static byte[] bytes(final ByteBuffer b) {
        return io.lazyblk.sys.fuzz.FuzzBytes.toArray(b);
    }

    /** Writes the seed corpus into directory {@code args[0]} (tools/fuzz provider-protocol --write-seeds). */
    public static void main(final String[] args) throws IOException {
        final Path dir = Path.of(args[0]);
        Files.createDirectories(dir);
        final Manifest m = Manifest.of(new byte[3 * 4096 + 512], 4096);
        seed(dir, "answer-ok", new FuzzBytes.Writer().u8(ANSWER).bytes(bytes(ProviderProtocol.encodeAnswer(
            ProviderProtocol.HelloStatus.OK, "serving 'golden'", m))));
        seed(dir, "answer-refused", new FuzzBytes.Writer().u8(ANSWER).bytes(bytes(ProviderProtocol.encodeAnswer(
            ProviderProtocol.HelloStatus.EXPIRED_TOKEN, "expired", null))));
        seed(dir, "answer-huge-manifest", new FuzzBytes.Writer().u8(ANSWER).u32(0).u16(0).u32(-1));
        final InetSocketAddress cm = new InetSocketAddress(InetAddress.getByAddress(new byte[] {10, 0, 0, 5}), 7701);
        final long length = 5L << 30;
        final long stride = 1L << 30;
        final int[] rkeys = new int[RdmaOffer.regionCount(length, stride)];
        Arrays.fill(rkeys, 0x1234);
        seed(dir, "offer-5-regions", new FuzzBytes.Writer().u8(OFFER).u64(length)
            .bytes(bytes(new RdmaOffer(cm, length, 0x7f00_0000_0000L, stride, (int) (stride + (64 << 20)), rkeys).encode())));
        seed(dir, "offer-one-region", new FuzzBytes.Writer().u8(OFFER).u64(4096)
            .bytes(bytes(new RdmaOffer(cm, 4096, 0x1000, 4096, 4096, new int[] {7}).encode())));
        seed(dir, "claim", new FuzzBytes.Writer().u8(CLAIM).bytes(ProviderProtocol.encodeClaim(cm)));
        seed(dir, "claim-port-0", new FuzzBytes.Writer().u8(CLAIM).bytes(new byte[] {127, 0, 0, 1, 0, 0}));
        seed(dir, "name", new FuzzBytes.Writer().u8(ANSWER).bytes("LZBP".getBytes(StandardCharsets.US_ASCII)));
    }

    private static void seed(final Path dir, final String name, final FuzzBytes.Writer w) throws IOException {
        Files.write(dir.resolve(name), w.toByteArray());
    }
}
