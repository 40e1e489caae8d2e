package io.lazyblk.pull.shm;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pagemap.PageSourceContract;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;

import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;

/** The PageSource contract over a real UNIX socket (fd passed by SCM_RIGHTS) and a real read-only mapping. */
class ShmPageSourceTest extends PageSourceContract {
    private static final byte[] SECRET = "contract-secret-0123456789abcdef".getBytes();
    private final List<ImageServer> servers = new ArrayList<>();

    @Override
    protected PageSource open(final Path image, final int pageSize) throws Exception {
        final Path sock = dir.resolve("cache-" + servers.size() + ".sock");
        final ImageServer server = ImageServer.start(null, sock,
            List.of(new ImageExport("contract", image, ManifestBuilder.build(image, pageSize, ManifestBuilder.Progress.NONE))), SECRET);
        servers.add(server);
        return ShmPageSource.connect(sock, "contract", AccessToken.mint(SECRET, "contract", Instant.now().plus(Duration.ofHours(1))),
            Duration.ofSeconds(5));
    }

    @Override
    protected void cleanUp() {
        servers.forEach(ImageServer::close);
    }
}
