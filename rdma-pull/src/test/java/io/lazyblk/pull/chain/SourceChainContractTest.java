package io.lazyblk.pull.chain;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pagemap.PageSourceContract;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.shm.ShmPageSource;
import io.lazyblk.pull.tcp.TcpPageSource;
import io.lazyblk.pull.token.AccessToken;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;

/** The PageSource contract for a chain of a host cache (shm) and a seed provider (TCP), both real servers. */
class SourceChainContractTest extends PageSourceContract {
    private static final byte[] SECRET = "contract-secret-0123456789abcdef".getBytes();
    private final List<ImageServer> servers = new ArrayList<>();

    @Override
    protected PageSource open(final Path image, final int pageSize) throws Exception {
        final ImageExport export = new ImageExport("contract", image, ManifestBuilder.build(image, pageSize, ManifestBuilder.Progress.NONE));
        final Path sock = dir.resolve("chain-" + servers.size() + ".sock");
        final ImageServer cache = ImageServer.start(null, sock, List.of(export), SECRET);
        servers.add(cache);
        final ImageServer seed = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), List.of(export), SECRET);
        servers.add(seed);
        final String token = AccessToken.mint(SECRET, "contract", Instant.now().plus(Duration.ofHours(1)));
        return new SourceChain(List.of(ShmPageSource.connect(sock, "contract", token, Duration.ofSeconds(5)),
            TcpPageSource.connect(seed.address(), "contract", token)), List.of("cache", "seed"));
    }

    @Override
    protected void cleanUp() {
        servers.forEach(ImageServer::close);
    }
}
