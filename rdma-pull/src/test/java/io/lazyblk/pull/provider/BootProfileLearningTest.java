package io.lazyblk.pull.provider;

import io.lazyblk.pagemap.Await;
import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.profile.ProfileFile;
import io.lazyblk.pull.profile.ProfileSettings;
import io.lazyblk.pull.tcp.TcpPageSource;
import io.lazyblk.pull.tcp.TwoLaneTcpSource;
import io.lazyblk.pull.token.AccessToken;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.time.Duration;
import java.time.Instant;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Boot profiles over real TCP and real files: the demand flag reaches the provider, which learns a boot from demand
 * fetches only, keeps it beside the manifest cache across restarts, merges boots, drops it when the image changes,
 * refuses a malformed file, and hands it to later clients in order.
 */
class BootProfileLearningTest {
    private static final byte[] SECRET = "boot-profile-test-secret-0123456".getBytes();
    private static final int PAGE = 16 << 10;
    private static final int PAGES = 64;
    private static final FileTime LONG_AGO = FileTime.from(Instant.parse("2026-01-01T00:00:00Z"));

    @TempDir
    Path dir;
    private Path image;
    private ImageServer server;
    private final Arena arena = Arena.ofShared();

    @BeforeEach
    void writeImage() throws IOException {
        image = dir.resolve("disk.img");
        writeImage(3, LONG_AGO);
    }

    private void writeImage(final long seed, final FileTime mtime) throws IOException {
        final byte[] content = new byte[PAGES * PAGE];
        new Random(seed).nextBytes(content);
        Files.write(image, content);
        Files.setLastModifiedTime(image, mtime); // old enough for the manifest to be cached (and the profile beside it)
    }

    @AfterEach
    void stop() {
        if (server != null) {
            server.close();
        }
        arena.close();
    }

    private ImageServer start(final ProfileSettings profiles) throws IOException {
        final ImageExport export = ImageExport.of("disk", image, PAGE, new ManifestBuilder(null), ManifestBuilder.Progress.NONE);
        server = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), null, List.of(export), SECRET,
            RdmaExporter.unavailable("not in this test"), ImageServer.Limits.defaults(), profiles);
        return server;
    }

    private ImageServer start() throws IOException {
        return start(ProfileSettings.defaults());
    }

    private Path profileFile() {
        return dir.resolve("disk.img" + ManifestBuilder.PROFILE_SUFFIX);
    }

    private static String token() {
        return AccessToken.mint(SECRET, "disk", Instant.now().plus(Duration.ofHours(1)));
    }

    private TcpPageSource connect() throws IOException {
        return TcpPageSource.connect(server.address(), "disk", token());
    }

    /** Fetches page {@code page} at {@code priority} and waits for it. */
    private void fetch(final PageSource s, final int page, final int priority) throws Exception {
        final MemorySegment dst = arena.allocate(PAGE);
        final CompletableFuture<Integer> done = new CompletableFuture<>();
        assertTrue(s.fetch(page, 1, dst, priority, 0, (tag, first, n, status) -> done.complete(status)));
        assertEquals(PageSource.OK, done.get(10, TimeUnit.SECONDS));
    }

    /** One engine-like boot: demand fetches of {@code pages} in order, background fetches of {@code background}, then close. */
    private void boot(final int[] pages, final int... background) throws Exception {
        try (TcpPageSource s = connect()) {
            for (final int p : background) {
                fetch(s, p, PageSource.BACKGROUND);
            }
            for (final int p : pages) {
                fetch(s, p, PageSource.DEMAND);
            }
        }
    }

    private void awaitProfile(final int[] expected) throws Exception {
        Await.until("the provider's profile is " + Arrays.toString(expected), Duration.ofSeconds(10),
            () -> Arrays.equals(expected, server.profileForTesting("disk", false)));
    }

    @Test
    void shouldLearnABootFromItsDemandFetchesOnlyInFirstSeenOrderAndHandItOut() throws Exception {
        start();
        boot(new int[] {40, 7, 63, 7, 0}, 1, 2, 40);
        awaitProfile(new int[] {40, 7, 63, 0});
        assertEquals(5, server.stats().demandRequests(), "every demand fetch reached the provider marked as demand");
        assertEquals(8, server.stats().requests());
        try (TcpPageSource later = connect()) {
            assertArrayEquals(new int[] {40, 7, 63, 0}, later.bootProfile(), "a later client gets the profile in order");
            fetch(later, 5, PageSource.DEMAND); // the connection carries on after the control request
        }
    }

    @Test
    void shouldKeepTheProfileAcrossARestartAndMergeASecondBootKeepingTheFirstOrder() throws Exception {
        start();
        boot(new int[] {5, 3, 9});
        awaitProfile(new int[] {5, 3, 9});
        server.close(); // saves
        assertTrue(Files.isRegularFile(profileFile()), "the profile lives beside the manifest cache: " + profileFile());
        start(); // a new provider on the same files
        try (TwoLaneTcpSource later = TwoLaneTcpSource.connect(server.address(), "disk", token(), TcpPageSource.Options.defaults())) {
            assertArrayEquals(new int[] {5, 3, 9}, later.bootProfile());
        }
        boot(new int[] {9, 12, 3, 11});
        awaitProfile(new int[] {5, 3, 9, 12, 11});
        server.profileForTesting("disk", true);
        final ProfileFile.Decoded saved = ProfileFile.read(profileFile(), manifest(), PageSource.MAX_PROFILE_PAGES);
        assertEquals(ProfileFile.Kind.LOADED, saved.kind());
        assertArrayEquals(new int[] {5, 3, 9, 12, 11}, saved.pages());
    }

    @Test
    void shouldDropTheProfileWhenTheImageChangesAndLearnTheNewOne() throws Exception {
        start();
        boot(new int[] {1, 2});
        awaitProfile(new int[] {1, 2});
        server.close();
        final Manifest old = manifest();
        writeImage(4, FileTime.from(Instant.parse("2026-02-01T00:00:00Z"))); // another image under the same name: a new digest
        start();
        assertFalse(Files.exists(profileFile()), "the old image's profile is deleted");
        try (TcpPageSource later = connect()) {
            assertEquals(0, later.bootProfile().length, "the old image's profile is not served");
        }
        boot(new int[] {8});
        awaitProfile(new int[] {8});
        server.profileForTesting("disk", true);
        assertEquals(ProfileFile.Kind.STALE, ProfileFile.read(profileFile(), old, PageSource.MAX_PROFILE_PAGES).kind());
        assertArrayEquals(new int[] {8}, ProfileFile.read(profileFile(), manifest(), PageSource.MAX_PROFILE_PAGES).pages());
    }

    @Test
    void shouldRefuseAMalformedProfileFileServeNoneAndReplaceItWithTheNextBoot() throws Exception {
        final Manifest m = manifest();
        final ByteBuffer dup = ProfileFile.encode(m, new int[] {4, 5, 4}, 3);
        Files.write(profileFile(), Arrays.copyOf(dup.array(), dup.remaining()));
        start();
        assertEquals(0, server.profileForTesting("disk", false).length, "a profile listing a page twice is refused");
        try (TcpPageSource later = connect()) {
            assertEquals(0, later.bootProfile().length);
        }
        assertTrue(Files.exists(profileFile()), "a malformed profile is ignored, not deleted");
        boot(new int[] {6});
        awaitProfile(new int[] {6});
        server.profileForTesting("disk", true);
        assertArrayEquals(new int[] {6}, ProfileFile.read(profileFile(), m, PageSource.MAX_PROFILE_PAGES).pages());
    }

    @Test
    void shouldEndABootAtItsLearningWindowAndAtItsPageLimit() throws Exception {
        // A window of 1 ns: the second demand request comes after it, so the boot is its first request alone, merged
        // while the connection is still open.
        start(new ProfileSettings(true, Duration.ofNanos(1), ProfileSettings.DEFAULT_MAX_BYTES));
        try (TcpPageSource s = connect()) {
            fetch(s, 20, PageSource.DEMAND);
            fetch(s, 21, PageSource.DEMAND);
            fetch(s, 22, PageSource.DEMAND);
            awaitProfile(new int[] {20});
        }
        server.close();
        Files.deleteIfExists(profileFile());
        start(new ProfileSettings(true, Duration.ofMinutes(1), 3L * PAGE)); // at most 3 pages
        boot(new int[] {1, 2});
        boot(new int[] {3, 4, 5});
        awaitProfile(new int[] {1, 2, 3});
    }

    @Test
    void shouldLearnNothingAndHandOutNoProfileWithLearningOff() throws Exception {
        start();
        boot(new int[] {1, 2});
        awaitProfile(new int[] {1, 2});
        server.close();
        start(ProfileSettings.off());
        boot(new int[] {3});
        try (TcpPageSource later = connect()) {
            assertEquals(0, later.bootProfile().length);
        }
        assertEquals(0, server.profileForTesting("disk", true).length);
        server.close();
        server = null;
        assertTrue(Files.exists(profileFile()), "learning off leaves the file alone");
    }

    @Test
    void shouldNeitherLearnNorHandOutAProfileForAPeerExport() throws Exception {
        final ImageExport peer = new ImageExport("disk", image, manifest(), Availability.ALL, true); // verified as served: a peer
        server = ImageServer.start(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), null, List.of(peer), SECRET,
            RdmaExporter.unavailable("not in this test"), ImageServer.Limits.defaults(), ProfileSettings.defaults());
        boot(new int[] {1, 2});
        Await.until("the boot's connection ended", Duration.ofSeconds(10), () -> server.stats().open() == 0);
        try (TcpPageSource later = connect()) {
            assertEquals(0, later.bootProfile().length, "a chain asks the seed instead, which sees every first boot");
        }
        assertEquals(0, server.profileForTesting("disk", true).length);
    }

    @Test
    void shouldCloseTheConnectionOnUnknownRequestFlagsAndOnAnyFlagFromAVersion1Client() throws Exception {
        start();
        try (TcpPageSource good = connect()) {
            for (final int[] helloAndFlags : new int[][] {{2, 0x4000_0000}, {2, 0x0001_0000}, {1, ProviderProtocolFlags.DEMAND}}) {
                try (RawClient c = new RawClient(server.address())) {
                    final ByteBuffer hello = ProviderProtocol.encodeHello("disk", token());
                    hello.putShort(ProviderProtocol.HELLO_VERSION_OFFSET, (short) helloAndFlags[0]);
                    c.send(hello);
                    assertEquals(ProviderProtocol.HelloStatus.OK.code, c.answer().status());
                    c.send(ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(1).putInt(0).putInt(1 | helloAndFlags[1]).flip());
                    assertTrue(c.closedByServer(), "version " + helloAndFlags[0] + ", flags 0x" + Integer.toHexString(helloAndFlags[1]));
                }
            }
            fetch(good, 3, PageSource.DEMAND); // the others' errors cost them their connection only
        }
        assertEquals(3, server.stats().protocolErrors());
        try (RawClient v1 = new RawClient(server.address())) { // a client of the previous release is still served
            final ByteBuffer hello = ProviderProtocol.encodeHello("disk", token());
            hello.putShort(ProviderProtocol.HELLO_VERSION_OFFSET, (short) 1);
            v1.send(hello);
            assertEquals(ProviderProtocol.HelloStatus.OK.code, v1.answer().status());
            v1.request(7, 2, 1);
            assertEquals(ProviderProtocol.RESPONSE_OK, v1.response().status());
        }
    }

    private Manifest manifest() throws IOException {
        return ManifestBuilder.build(image, PAGE, ManifestBuilder.Progress.NONE);
    }

    /** The flag as a plain int constant for the table above. */
    private static final class ProviderProtocolFlags {
        static final int DEMAND = ProviderProtocol.FLAG_DEMAND;
    }
}
