package io.lazyblk.pull.rdma;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pagemap.PageSourceContract;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;
import org.junit.jupiter.api.AfterEach;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The PageSource contract through everything of rdma:// but the device: the real offer exchange with a real
 * ImageServer over TCP, RdmaSources, RdmaReads (window, regions, keys, completions) and OneSidedPageSource, over
 * a fake fabric whose reads complete later and out of order. The image (1 MiB) spans five regions of 256 KiB
 * overlapping by 256 KiB, so reads use several rkeys and cross region starts.
 */
class RdmaReadsContractTest extends PageSourceContract {
    private static final byte[] SECRET = "rdma-contract-secret-0123456789a".getBytes();
    private final List<ImageServer> servers = new ArrayList<>();
    private final FakeFabric fabric = new FakeFabric(256 << 10, 256 << 10);

    @Override
    protected PageSource open(final Path image, final int pageSize) throws Exception {
        final ImageServer server = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), null,
            List.of(new ImageExport("contract", image, ManifestBuilder.build(image, pageSize, ManifestBuilder.Progress.NONE))), SECRET,
            fabric.exporter());
        servers.add(server);
        final RdmaSources.Opened o = RdmaSources.open(server.address(), "contract",
            AccessToken.mint(SECRET, "contract", Instant.now().plus(Duration.ofHours(1))), FakeFabric.TIMEOUT, FakeFabric.usable(),
            fabric.connector());
        assertTrue(o.rdma(), "the fake fabric's offer is taken: " + o.why());
        assertEquals(16, o.source().maxPagesPerFetch(), "reads up to the regions' 256 KiB overlap: 16 pages of 16 KiB");
        return o.source();
    }

    @AfterEach
    void checkTheDeviceWasNeverMisused() {
        assertEquals(0, fabric.windowViolations.get(), "more reads posted than the send queue holds");
        assertEquals(0, fabric.badKeys.get(), "a read used a wrong lkey, rkey or range");
    }

    @Override
    protected void cleanUp() {
        servers.forEach(ImageServer::close);
    }
}
