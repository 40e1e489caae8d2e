package io.lazyblk.pull.s3;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pagemap.PageSourceContract;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

/** The PageSource contract against a real S3 implementation (s3proxy, embedded, SigV4) over real HTTP on loopback. */
class S3PageSourceContractTest extends PageSourceContract {
    private static Path home;
    private static S3TestServer server;
    private static int images;

    @BeforeAll
    static void startS3() throws Exception {
        home = Files.createTempDirectory("s3-contract");
        server = S3TestServer.start(home);
        server.createBucket("contract");
    }

    @AfterAll
    static void stopS3() throws Exception {
        server.close();
        try (var files = Files.walk(home)) {
            files.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }

    static S3Config config(final S3TestServer s) {
        return new S3Config(s.accessKey(), s.secretKey(), null, s.region(), s.endpoint());
    }

    /** Puts {@code image} and its manifest (as publish would) under a fresh key. */
    static S3Location publish(final S3TestServer s, final String bucket, final Path image, final int pageSize) throws Exception {
        final S3Location loc = new S3Location(bucket, "images/contract-" + (images++) + ".raw");
        try (S3Client c = new S3Client(config(s), 2, Duration.ofSeconds(30))) {
            c.put(loc, Files.readAllBytes(image));
            final ByteBuffer m = Manifest.of(Files.readAllBytes(image), pageSize).encode();
            final byte[] bytes = new byte[m.remaining()];
            m.get(bytes);
            c.put(loc.manifest(), bytes);
        }
        return loc;
    }

    @Override
    protected PageSource open(final Path image, final int pageSize) throws Exception {
        return S3PageSource.open(config(server), publish(server, "contract", image, pageSize), S3PageSource.Options.defaults());
    }
}
