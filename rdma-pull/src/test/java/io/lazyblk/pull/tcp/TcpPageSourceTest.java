package io.lazyblk.pull.tcp;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pagemap.PageSourceContract;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;

/** The PageSource contract over real TCP on loopback, against a real ImageServer serving a real file. */
class TcpPageSourceTest extends PageSourceContract {
    private static final byte[] SECRET = "contract-secret-0123456789abcdef".getBytes();
    private final List<ImageServer> servers = new ArrayList<>();

    @Override
    protected PageSource open(final Path image, final int pageSize) throws Exception {
        final ImageServer server = serve(image, pageSize, servers);
        return TcpPageSource.connect(server.address(), "contract", token());
    }

    /** A provider on loopback exporting {@code image} as "contract", added to {@code servers} to close after the test. */
    static ImageServer serve(final Path image, final int pageSize, final List<ImageServer> servers) throws Exception {
        final ImageServer server = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0),
            List.of(new ImageExport("contract", image, ManifestBuilder.build(image, pageSize, ManifestBuilder.Progress.NONE))), SECRET);
        servers.add(server);
        return server;
    }

    /** A token for "contract", valid for an hour. */
    static String token() {
        return AccessToken.mint(SECRET, "contract", Instant.now().plus(Duration.ofHours(1)));
    }

    @Override
    protected void cleanUp() {
        servers.forEach(ImageServer::close);
    }
}
