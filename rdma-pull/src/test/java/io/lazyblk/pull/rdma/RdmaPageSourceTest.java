package io.lazyblk.pull.rdma;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pagemap.PageSourceContract;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;
import org.junit.jupiter.api.BeforeAll;

import java.io.IOException;
import java.net.Inet4Address;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.NetworkInterface;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The PageSource contract over real RDMA: a real ImageServer (DiSNI exporter) on the IPv4 address of this host's
 * RDMA interface, and RdmaSources with DiSNI's queue pair, READs into registered memory, completions polled.
 * Skipped, with the probe's one-line reason, where RDMA is not usable (no libdisni, no device, no active port) or
 * the RDMA device has no IPv4 address to serve on.
 */
class RdmaPageSourceTest extends PageSourceContract {
    private static final byte[] SECRET = "rdma-real-contract-secret-012345".getBytes();
    private static InetAddress rdmaAddress;
    private final List<ImageServer> servers = new ArrayList<>();

    @BeforeAll
    static void requireRdma() {
        final RdmaProbe.Availability a = RdmaProbe.probe();
        assumeTrue(a.usable(), "RDMA not usable here: " + a.reason());
        rdmaAddress = ipv4OfAnRdmaInterface();
        assumeTrue(rdmaAddress != null, "RDMA device(s) " + a.devices() + " have no network interface with an IPv4 address");
    }

    /** An IPv4 address of a network interface that belongs to an RDMA device (/sys/class/infiniband/DEV/device/net/IF). */
    private static InetAddress ipv4OfAnRdmaInterface() {
        for (final String dev : RdmaProbe.probe().devices()) {
            final Path net = Path.of("/sys/class/infiniband", dev, "device", "net");
            if (!Files.isDirectory(net)) {
                continue;
            }
            try (DirectoryStream<Path> ifs = Files.newDirectoryStream(net)) {
                for (final Path i : ifs) {
                    final NetworkInterface ni = NetworkInterface.getByName(i.getFileName().toString());
                    if (ni == null) {
                        continue;
                    }
                    for (final InetAddress addr : Collections.list(ni.getInetAddresses())) {
                        if (addr instanceof Inet4Address) {
                            return addr;
                        }
                    }
                }
            } catch (final IOException e) {
                // try the next device
            }
        }
        return null;
    }

    @Override
    protected PageSource open(final Path image, final int pageSize) throws Exception {
        final ImageServer server = ImageServer.start(new InetSocketAddress(rdmaAddress, 0),
            List.of(new ImageExport("contract", image, ManifestBuilder.build(image, pageSize, ManifestBuilder.Progress.NONE))), SECRET);
        servers.add(server);
        final RdmaSources.Opened o = RdmaSources.open(server.address(), "contract",
            AccessToken.mint(SECRET, "contract", Instant.now().plus(Duration.ofHours(1))), Duration.ofSeconds(5), RdmaProbe.probe(),
            (offer, control, channel, window, t) -> DisniConnector.connect(offer, control, channel, window, t));
        assertTrue(o.rdma(), "RDMA is usable here, yet the source fell back: " + o.why());
        return o.source();
    }

    @Override
    protected void cleanUp() {
        servers.forEach(ImageServer::close);
    }
}
