package io.lazyblk.tools;

import io.lazyblk.blk.LazyStore;
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
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The learned boot set end to end, with real parts: a provider over TCP, engines started as {@code serve} starts them,
 * a vhost-user front end as the guest. A first engine's guest reads a scattered "boot set" and misses on each page;
 * the provider learns it from those demand fetches; a second, fresh engine gets the profile at start, fetches it ahead
 * of its guest (which then reads the same set without a single miss), and its status says what was fetched ahead,
 * what the guest read of it, and what it did not.
 */
class LazyEngineBootProfileTest {
    private static final int PAGE = 64 << 10;
    private static final int PAGES = 512;
    private static final byte[] SECRET = "0123456789abcdef0123456789abcdef".getBytes();
    /** The boot set, in the order the guest reads it: scattered, as a boot's reads are. */
    private static final int[] BOOT = {300, 7, 211, 45, 46, 47, 399, 120, 5, 480};

    @TempDir
    Path dir;

    @Test
    void shouldFetchTheBootSetALaterEngineLearnedFromAnEarlierBootAheadOfItsGuest() throws Exception {
        final Path golden = dir.resolve("golden.raw");
        final byte[] image = new byte[PAGES * PAGE];
        new Random(3).nextBytes(image);
        Files.write(golden, image);
        try (ImageServer server = ImageServer.start(new InetSocketAddress("127.0.0.1", 0), Map.of("golden", golden), SECRET, PAGE,
            new ManifestBuilder(dir.resolve("manifests")))) {
            // --fill-rate 1 byte/s: the background fill stands still, so every page the guest reads is a miss, or profiled.
            final Engine.LazySource src = new Engine.LazySource(new InetSocketAddress("127.0.0.1", server.port()), "golden",
                AccessToken.mint(SECRET, "golden", Instant.now().plusSeconds(600)), 8L << 20, 1, Duration.ofSeconds(5));

            final Map<String, String> first = boot(src, "first", image, BOOT);
            assertEquals(Long.toString((long) BOOT.length * PAGE), first.get("bytes_on_demand"), "the first boot misses on every page");
            assertEquals("0", first.get("profile_pages"), "nothing learned yet");

            // The first engine's connections closed with it: the provider merged its boot.
            io.lazyblk.pagemap.Await.until("the provider learned the first boot", Duration.ofSeconds(10),
                () -> server.profileForTesting("golden", false).length == BOOT.length);
            assertArrayEquals(BOOT, server.profileForTesting("golden", false), "the boot set, in the order the guest read it");

            // The second guest reads all of the boot set but its last page.
            final int[] second = Arrays.copyOf(BOOT, BOOT.length - 1);
            final Map<String, String> st = boot(src, "second", image, second);
            assertEquals(Integer.toString(BOOT.length), st.get("profile_pages"));
            assertEquals("0", st.get("bytes_on_demand"), "the second boot misses on nothing: its boot set came ahead of it");
            assertEquals(Long.toString((long) BOOT.length * PAGE), st.get("profile_ahead_bytes"));
            assertEquals(Long.toString((long) second.length * PAGE), st.get("profile_used_bytes"));
            assertEquals(Long.toString(PAGE), st.get("profile_wasted_bytes"), "the one page the guest did not read");
            assertEquals(Long.toString((long) BOOT.length * PAGE), st.get("bytes_background"),
                "profile pages count as background bytes; at 1 byte/s the fill itself moved nothing");
        }
    }

    /** A fresh engine whose guest reads {@code pages} in order, each checked against the image; its status at the end. */
    private Map<String, String> boot(final Engine.LazySource src, final String name, final byte[] image, final int[] pages)
        throws Exception {
        final Path sock = dir.resolve(name + ".sock");
        try (Engine engine = Engine.startLazy(Engine.Options.file(sock, dir.resolve(name + ".img")), src);
             VhostUserFrontend fe = VhostUserFrontend.connect(sock, GuestRam.create(32L << 20))) {
            final LazyStore store = engine.lazyStore();
            if (store.fillStats().profilePages() > 0) {
                // The guest starts once the profile is here (a real guest starts at once; this keeps the counts exact).
                io.lazyblk.pagemap.Await.until("the boot profile fetched ahead", Duration.ofSeconds(10),
                    () -> store.fillStats().profileAheadBytes() == (long) store.fillStats().profilePages() * PAGE);
            }
            final BlkClient blk = new BlkClient(fe, 0);
            for (final int p : pages) {
                final BlkResponse r = blk.read((long) p * PAGE / 512, PAGE);
                assertTrue(r.ok(), "read of page " + p);
                assertArrayEquals(Arrays.copyOfRange(image, p * PAGE, (p + 1) * PAGE), r.data(), "page " + p);
            }
            return StatusCommand.read(StatusServer.controlSocket(sock));
        }
    }
}
