package io.lazyblk.pull.s3;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;
import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.time.Duration;
import java.util.Arrays;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The S3 client's TLS path (SSLEngine over its socket channel) against a local TLS server with a self-signed
 * certificate for "localhost" made by keytool: bodies land exactly (records unwrapped straight into the destination
 * and, for the tail, through the connection's buffer), the connection is kept alive, the server's name is checked,
 * and a server the client does not trust is refused.
 */
class S3TlsTest {
    private static final char[] PASS = "changeit".toCharArray();
    private static SSLContext serverContext;
    private static SSLContext clientContext;

    @BeforeAll
    static void makeCertificate(@TempDir final Path dir) throws Exception {
        final Path ks = dir.resolve("server.p12");
        final Process p = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "keytool").toString(),
            "-genkeypair", "-alias", "s3", "-keyalg", "EC", "-groupname", "secp256r1", "-dname", "CN=localhost",
            "-ext", "SAN=dns:localhost", "-validity", "2", "-keystore", ks.toString(), "-storetype", "PKCS12",
            "-storepass", new String(PASS), "-keypass", new String(PASS)).redirectErrorStream(true).start();
        final String out = new String(p.getInputStream().readAllBytes());
        assertTrue(p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0, "keytool failed: " + out);
        final KeyStore keys = KeyStore.getInstance("PKCS12");
        try (InputStream in = Files.newInputStream(ks)) {
            keys.load(in, PASS);
        }
        final KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(keys, PASS);
        serverContext = SSLContext.getInstance("TLS");
        serverContext.init(kmf.getKeyManagers(), null, null);
        final KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        trust.setCertificateEntry("s3", keys.getCertificate("s3"));
        final TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        clientContext = SSLContext.getInstance("TLS");
        clientContext.init(null, tmf.getTrustManagers(), null);
    }

    private static S3Client client(final java.net.URI endpoint, final SSLContext ctx) {
        return new S3Client(new S3Config("AKIDEXAMPLE", "secret", null, "us-east-1", endpoint), 2, Duration.ofSeconds(10), ctx);
    }

    private static CannedHttpServer serve(final byte[] body) throws IOException {
        final CannedHttpServer[] self = new CannedHttpServer[1];
        self[0] = CannedHttpServer.startTls(serverContext, (n, sock, in, out) -> {
            String head;
            while ((head = self[0].readHead(in)) != null) {
                // Range: bytes=A-B, as the client asked: the body is the object's bytes there.
                final int r = head.indexOf("range: bytes=");
                final int dash = head.indexOf('-', r);
                final int from = Integer.parseInt(head.substring(r + 13, dash));
                final int to = Integer.parseInt(head.substring(dash + 1, head.indexOf('\r', dash)));
                out.write(("HTTP/1.1 206 Partial Content\r\nETag: \"e\"\r\nContent-Range: bytes " + from + "-" + to + "/" + body.length
                    + "\r\nContent-Length: " + (to - from + 1) + "\r\n\r\n").getBytes(java.nio.charset.StandardCharsets.ISO_8859_1));
                out.write(body, from, to - from + 1);
                out.flush();
            }
        });
        return self[0];
    }

    @Test
    void shouldReadBodiesOverTlsExactlyOnOneKeptAliveConnection() throws Exception {
        final byte[] body = S3HttpTest.bytes((2 << 20) + 123, 11);
        final S3Location loc = new S3Location("bkt", "k");
        try (CannedHttpServer s = serve(body); S3Client c = client(s.endpoint("localhost"), clientContext);
             Arena arena = Arena.ofConfined()) {
            final MemorySegment dst = arena.allocate(body.length);
            for (final int[] range : new int[][] {{0, body.length}, {1, 100}, {12345, (1 << 20) + 7}, {body.length - 5000, 5000}}) {
                dst.fill((byte) 0);
                c.getRange(loc, range[0], range[1], dst, 0, null);
                assertArrayEquals(Arrays.copyOfRange(body, range[0], range[0] + range[1]),
                    dst.asSlice(0, range[1]).toArray(ValueLayout.JAVA_BYTE), "range at " + range[0]);
            }
            final byte[] heap = new byte[4096];
            c.getRange(loc, 7, 4096, MemorySegment.ofArray(heap), 0, null);
            assertArrayEquals(Arrays.copyOfRange(body, 7, 7 + 4096), heap, "into a heap segment");
            assertEquals(body.length, c.probe(loc).size());
            assertEquals(1, s.connections(), "one TLS connection for every GET");
        }
    }

    @Test
    void shouldRefuseAServerWhoseCertificateDoesNotNameTheHost() throws Exception {
        try (CannedHttpServer s = serve(new byte[10]); S3Client c = client(s.endpoint("127.0.0.1"), clientContext);
             Arena arena = Arena.ofConfined()) {
            final IOException e = assertThrows(IOException.class, () -> c.getRange(new S3Location("bkt", "k"), 0, 10, arena.allocate(10), 0, null));
            assertTrue(e.toString().contains("127.0.0.1"), e.toString());
            assertEquals(0, c.connectionsOpen());
        }
    }

    @Test
    void shouldRefuseAServerTheDefaultTrustStoreDoesNotTrust() throws Exception {
        try (CannedHttpServer s = serve(new byte[10]); S3Client c = client(s.endpoint("localhost"), null);
             Arena arena = Arena.ofConfined()) {
            final IOException e = assertThrows(IOException.class, () -> c.getRange(new S3Location("bkt", "k"), 0, 10, arena.allocate(10), 0, null));
            assertTrue(e instanceof javax.net.ssl.SSLHandshakeException || e.getCause() instanceof javax.net.ssl.SSLException
                || e.toString().contains("PKIX"), e.toString());
            assertEquals(0, c.connectionsOpen());
        }
    }
}
