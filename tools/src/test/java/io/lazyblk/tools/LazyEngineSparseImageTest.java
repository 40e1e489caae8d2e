package io.lazyblk.tools;

import io.lazyblk.blk.LazyStore;
import io.lazyblk.persistence.LocalImage;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.provider.ImageServer;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.tools.frontend.BlkClient;
import io.lazyblk.tools.frontend.BlkResponse;
import io.lazyblk.tools.frontend.GuestRam;
import io.lazyblk.tools.frontend.VhostUserFrontend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.time.Instant;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A sparse golden image, as cloud images are, filled by a lazy engine from a real provider over TCP: its holes and its
 * pages of written zeros are never fetched and stay holes in the local file, which ends as sparse as the image.
 */
class LazyEngineSparseImageTest {
    private static final int PAGE = 64 << 10;
    private static final int PAGES = 256;
    private static final long SIZE = (long) PAGES * PAGE;
    private static final byte[] SECRET = "0123456789abcdef0123456789abcdef".getBytes();

    @TempDir
    Path dir;

    /** Engine pages of the golden image: a quarter data, a few of written zeros (allocated in the image), the rest holes. */
    private static boolean data(final int p) {
        return p % 4 == 1 || p < 8;
    }

    private static boolean writtenZeros(final int p) {
        return p % 16 == 6;
    }

    @Test
    void shouldNeverFetchHolesOrZerosAndLeaveTheLocalFileAsSparseAsTheGoldenImage() throws Exception {
        final Path golden = dir.resolve("golden.raw");
        long dataBytes = 0;
        final Random rnd = new Random(77);
        try (FileChannel ch = FileChannel.open(golden, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            ch.truncate(0);
            for (int p = 0; p < PAGES; p++) {
                if (data(p) || writtenZeros(p)) {
                    final byte[] b = new byte[PAGE];
                    if (data(p)) {
                        rnd.nextBytes(b);
                        dataBytes += PAGE;
                    }
                    ch.write(ByteBuffer.wrap(b), (long) p * PAGE);
                }
            }
            if (ch.size() < SIZE) {
                ch.write(ByteBuffer.wrap(new byte[1]), SIZE - 1); // the last page: one written zero byte, the rest a hole
            }
        }
        final long goldenAllocated = allocated(golden);
        assertTrue(goldenAllocated < SIZE / 2, "the golden image is sparse: " + goldenAllocated);
        final int zeroPages = (int) (PAGES - dataBytes / PAGE);

        try (ImageServer server = ImageServer.start(new InetSocketAddress("127.0.0.1", 0), Map.of("golden", golden), SECRET, PAGE,
            new ManifestBuilder(dir.resolve("manifests")))) {
            final Engine.LazySource src = new Engine.LazySource(new InetSocketAddress("127.0.0.1", server.port()), "golden",
                AccessToken.mint(SECRET, "golden", Instant.now().plusSeconds(600)), 8L << 20, 0, Duration.ofSeconds(5));
            final Path local = dir.resolve("local.img");
            final Path sock = dir.resolve("lazy.sock");
            try (Engine engine = Engine.startLazy(Engine.Options.file(sock, local), src);
                 VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(32L << 20))) {
                final LazyStore store = engine.lazyStore();
                assertTrue(allocated(local) <= dataBytes + PAGE, "the new local file reserves only the data pages: "
                    + allocated(local) + " bytes allocated for " + dataBytes + " of data");
                final BlkClient blk = new BlkClient(fe, 0);
                final BlkResponse r = blk.read((14L * PAGE + 4096) / 512, PAGE + 4096); // pages 14 and 15: holes
                assertTrue(r.ok());
                assertArrayEquals(new byte[PAGE + 4096], r.data(), "a read of zero pages through the queue");
                assertTrue(store.awaitDiskOnly(TimeUnit.SECONDS.toNanos(60)), store.localPages() + " of " + PAGES + " local");
                final Map<String, String> st = StatusCommand.read(StatusServer.controlSocket(sock));
                assertEquals(Integer.toString(zeroPages), st.get("pages_zero"));
                assertEquals(Integer.toString(PAGES), st.get("pages_local"));
                assertEquals(Long.toString(dataBytes), st.get("bytes_background"), "only the data pages were fetched");
                assertEquals("0", st.get("bytes_on_demand"));
                assertEquals("0", st.get("profile_pages"), "this provider offers no boot profile");
                assertEquals("0", st.get("profile_wasted_bytes"));
                assertEquals("done", st.get("fill_mode"), "the governor's view, once every page is local");
                assertEquals(java.util.List.of(10), io.lazyblk.sys.Threads.niceValues("lazy-fill"),
                    "the fill agent gives way to the guest when cores are short: nice 10");
                final long runs = Long.parseLong(st.get("background_runs"));
                assertTrue(runs > 0 && runs < dataBytes / PAGE, "adjacent data pages went out together: " + runs + " runs for "
                    + dataBytes / PAGE + " pages");
            }
            final long localAllocated = allocated(local);
            assertTrue(localAllocated <= goldenAllocated && localAllocated >= dataBytes && localAllocated <= dataBytes + PAGE,
                "the filled local file allocates its data pages only: " + localAllocated + " bytes, the golden image "
                    + goldenAllocated + " (its written zeros too), data " + dataBytes);
            assertTrue(java.util.Arrays.equals(Files.readAllBytes(golden), Files.readAllBytes(local)), "same bytes");
        }
    }

    private static long allocated(final Path p) throws Exception {
        try (LocalImage img = LocalImage.open(p, true)) {
            return img.allocatedBytes();
        }
    }
}
