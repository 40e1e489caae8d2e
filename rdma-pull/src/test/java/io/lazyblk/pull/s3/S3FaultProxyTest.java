package io.lazyblk.pull.s3;

import io.lazyblk.pagemap.Await;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * S3FaultProxy in front of a real S3 server (S3TestServer), with curl as the client: signed requests pass unchanged,
 * and the scripted faults reach the client as a real S3 failure would.
 */
class S3FaultProxyTest {
    private static final String BUCKET = "images";
    private static final Duration WAIT = Duration.ofSeconds(10);

    @TempDir
    static Path tmp;
    private static S3TestServer server;
    private static Curl curl;
    private S3FaultProxy proxy;
    /** curl -v's account of the last statuses() run: which connections it opened, reused and closed. */
    private String lastStderr = "";

    @BeforeAll
    static void startServer() throws Exception {
        server = S3TestServer.start(tmp.resolve("s3"));
        server.createBucket(BUCKET);
        curl = new Curl(tmp, server.accessKey(), server.secretKey(), server.region());
    }

    @AfterAll
    static void stopServer() throws Exception {
        if (server != null) {
            server.close();
        }
    }

    @BeforeEach
    void startProxy() throws Exception {
        proxy = S3FaultProxy.start(server.endpoint());
    }

    @AfterEach
    void stopProxy() throws Exception {
        proxy.close();
    }

    private String url(final String key) {
        return proxy.endpoint() + "/" + BUCKET + "/" + key;
    }

    private static byte[] random(final int n, final long seed) {
        final byte[] b = new byte[n];
        new Random(seed).nextBytes(b);
        return b;
    }

    /** One curl run of several transfers, {@code --next} between them: curl keeps one connection for all. */
    private List<Integer> statuses(final List<List<String>> transfers) throws Exception {
        final List<String> cmd = new ArrayList<>(List.of("/usr/bin/curl", "--max-time", "30"));
        for (int i = 0; i < transfers.size(); i++) {
            if (i > 0) {
                cmd.add("--next");
            }
            cmd.addAll(List.of("-sSv", "-o", "/dev/null", "-w", "%{http_code}\\n"));
            cmd.addAll(curl.auth());
            cmd.addAll(transfers.get(i));
        }
        final Curl.Raw r = curl.exec(cmd);
        lastStderr = r.stderr();
        assertEquals(0, r.exit(), r.stderr());
        return r.stdout().lines().map(Integer::valueOf).toList();
    }

    @Test
    void signedRequestsPassUnchangedAndAreCounted() throws Exception {
        final byte[] content = random(3 * 1024 * 1024 + 5, 1); // an upload curl sends after a 100 Continue
        final Curl.Result put = curl.put(url("disk.img"), content);
        assertEquals(200, put.status(), put.bodyText() + put.stderr());
        assertArrayEquals(content, server.getObject(BUCKET, "disk.img"));

        final Curl.Result whole = curl.get(url("disk.img"));
        assertEquals(200, whole.status());
        assertArrayEquals(content, whole.body());

        final Curl.Result range = curl.get(url("disk.img"), "-H", "Range: bytes=100-1100");
        assertEquals(206, range.status());
        assertArrayEquals(Arrays.copyOfRange(content, 100, 1101), range.body());

        final Curl.Result missing = curl.get(url("missing"));
        assertEquals(404, missing.status());
        assertTrue(missing.bodyText().contains("<Code>NoSuchKey</Code>"), missing.bodyText());

        final Curl wrong = new Curl(tmp, server.accessKey(), server.secretKey() + "x", server.region());
        final Curl.Result forged = wrong.get(url("disk.img"));
        assertEquals(403, forged.status());
        assertTrue(forged.bodyText().contains("<Code>SignatureDoesNotMatch</Code>"), forged.bodyText());

        assertEquals(5, proxy.requests());
        // Not maxConnectionsOpen() == 1: a curl's connection may not yet be seen closed when the next curl connects.
        Await.until("curl's connections to close", WAIT, () -> proxy.connectionsOpen() == 0);
    }

    @Test
    void injectedSlowDownIsAnsweredByTheProxyAndTheNextRequestIsForwarded() throws Exception {
        final byte[] content = random(10_000, 2);
        server.putObject(BUCKET, "slow", content);
        proxy.failNext(1, 503, "SlowDown");

        final Curl.Result refused = curl.get(url("slow"));
        assertEquals(503, refused.status());
        assertTrue(refused.bodyText().contains("<Code>SlowDown</Code>"), refused.bodyText());

        final Curl.Result retried = curl.get(url("slow"));
        assertEquals(200, retried.status());
        assertArrayEquals(content, retried.body());
        assertEquals(2, proxy.requests());
    }

    @Test
    void injectedFailureNeverReachesTheServerAndKeepsTheConnection() throws Exception {
        final byte[] content = random(50_000, 3);
        final Path src = tmp.resolve("failed-put.bin");
        Files.write(src, content);
        proxy.failNext(1, 500, "InternalError");
        // No Expect: 100-continue (curl 7.88 sends it for any upload over 1 KiB): the body comes with the head, so the
        // proxy reads it, answers, and the connection carries on. With Expect, see the test below.
        final List<String> put = List.of("-H", "Expect:", "-T", src.toString(), url("failed-put"));

        assertEquals(List.of(500, 404), statuses(List.of(put, List.of(url("failed-put")))),
            "the PUT failed by the proxy, then a GET on the same connection finding nothing");
        // 404 would be the right answer of the store; a 200 here means the failed PUT was forwarded.
        assertFalse(server.objectExists(BUCKET, "failed-put"), "the failed PUT reached the server");
        assertEquals(1, proxy.maxConnectionsOpen(), "the connection outlived the injected failure: " + lastStderr);

        assertEquals(List.of(200), statuses(List.of(put)));
        assertArrayEquals(content, server.getObject(BUCKET, "failed-put"));
        assertEquals(3, proxy.requests());
    }

    @Test
    void injectedFailureOfAnUploadAwaitingContinueEndsTheConnection() throws Exception {
        final byte[] content = random(2 * 1024 * 1024, 6); // big enough that any curl waits for 100 Continue first
        proxy.failNext(1, 503, "SlowDown");
        final Curl.Result refused = curl.put(url("awaiting"), content);
        assertEquals(0, refused.exit(), refused.stderr());
        assertEquals(503, refused.status());
        assertTrue(refused.bodyText().contains("<Code>SlowDown</Code>"), refused.bodyText());
        assertFalse(server.objectExists(BUCKET, "awaiting"));
        Await.until("the refused connection to close", WAIT, () -> proxy.connectionsOpen() == 0);

        assertEquals(200, curl.put(url("awaiting"), content).status());
        assertArrayEquals(content, server.getObject(BUCKET, "awaiting"));
        assertEquals(2, proxy.requests());
    }

    @Test
    void chunkedUploadIsForwardedWhole() throws Exception {
        final byte[] content = random(300_000, 7);
        final Curl.Result put = curl.put(url("chunked"), content, "-H", "Transfer-Encoding: chunked");
        assertEquals(200, put.status(), put.bodyText() + put.stderr());
        assertArrayEquals(content, server.getObject(BUCKET, "chunked"));
    }

    @Test
    void droppedConnectionIsAnErrorForCurlAfterHalfTheBody() throws Exception {
        final byte[] content = random(1 << 20, 4);
        server.putObject(BUCKET, "dropped", content);
        proxy.dropNext(1);

        final Curl.Result cut = curl.get(url("dropped"));
        assertNotEquals(0, cut.exit(), "curl took a cut response for a whole one");
        assertEquals(18, cut.exit(), "curl: 18 = transfer closed with outstanding read data; " + cut.stderr());
        assertEquals(200, cut.status());
        assertArrayEquals(Arrays.copyOf(content, content.length / 2), cut.body(), "half the body, as it was");

        final Curl.Result next = curl.get(url("dropped"));
        assertEquals(0, next.exit(), next.stderr());
        assertArrayEquals(content, next.body());
        assertEquals(2, proxy.requests());
    }

    @Test
    void headThenGetShareOneKeptAliveConnection() throws Exception {
        server.putObject(BUCKET, "both", random(3000, 5));
        // A HEAD response has a Content-Length and no body: a proxy waiting for the body would hang the GET after it.
        assertEquals(List.of(200, 200, 404), statuses(List.of(
            List.of("-I", url("both")), List.of(url("both")), List.of("-I", url("neither")))));
        assertEquals(3, proxy.requests());
        assertEquals(1, proxy.maxConnectionsOpen());
        Await.until("curl's connection to close", WAIT, () -> proxy.connectionsOpen() == 0);
    }

    @Test
    void connectionsOpenFollowsClientConnections() throws Exception {
        final List<Socket> clients = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            clients.add(new Socket(proxy.endpoint().getHost(), proxy.endpoint().getPort()));
        }
        Await.until("3 connections open", WAIT, () -> proxy.connectionsOpen() == 3);
        clients.removeFirst().close();
        Await.until("2 connections open", WAIT, () -> proxy.connectionsOpen() == 2);
        for (final Socket s : clients) {
            s.close();
        }
        Await.until("no connection open", WAIT, () -> proxy.connectionsOpen() == 0);
        assertEquals(3, proxy.maxConnectionsOpen());
        assertEquals(0, proxy.requests());
    }

    @Test
    void closeEndsIdleConnectionsAndItsThreads() throws Exception {
        final long before = proxyThreads();
        final S3FaultProxy other = S3FaultProxy.start(server.endpoint());
        try (Socket idle = new Socket(other.endpoint().getHost(), other.endpoint().getPort())) {
            Await.until("the idle connection to be served", WAIT, () -> other.connectionsOpen() == 1);
            other.close(); // throws if a thread outlives it
            assertEquals(-1, idle.getInputStream().read(), "the idle client connection was closed");
        }
        assertEquals(0, other.connectionsOpen());
        assertEquals(before, proxyThreads());
    }

    private static long proxyThreads() {
        return Thread.getAllStackTraces().keySet().stream()
            .filter(t -> t.isAlive() && t.getName().startsWith("s3-fault-proxy")).count();
    }
}
