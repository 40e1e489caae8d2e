package io.lazyblk.blk;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.persistence.LocalImage;
import io.lazyblk.persistence.PageStateFile;
import io.lazyblk.persistence.SimulatedDisk;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Thousands of lives of a lazily filled image, each ending in a power cut at a random point: guest writes, FLUSHes,
 * reads that miss, the background fill and the switch to disk-only run on a {@link SimulatedDisk} that is cut after a
 * random number of file operations (so mid-merge, mid-sync, mid-commit, between the image sync and the state commit,
 * after the switch...), keeping for each unsynced write all, none or some of its sectors. Then the store is opened
 * again over what survived and checked:
 *
 * <ol>
 *   <li>every page the state file calls local holds, sector by sector, the image's bytes or bytes the guest wrote there;</li>
 *   <li>every write acknowledged before a completed FLUSH is there (or a later write over it), and nothing older;</li>
 *   <li>no page the state file calls local is fetched again, all the way to disk-only.</li>
 * </ol>
 *
 * The number of lives is {@code -Dlazyblk.crash.cycles} (default 500 in the build; the note of the commit that added
 * this test reports a long run).
 */
class CrashSimulationTest {
    private static final int PAGE = 4096;
    private static final int PAGES = 48;
    private static final int SIZE = PAGE * PAGES;
    private static final int SECTOR = 512;
    private static final int SECTORS = SIZE / SECTOR;
    private static final Path IMAGE = Path.of("/sim/local.img");
    private static final Path STATE = PageStateFile.beside(IMAGE);
    private static final int CYCLES = Integer.getInteger("lazyblk.crash.cycles", 500);

    private final byte[] golden = new byte[SIZE];

    CrashSimulationTest() {
        new Random(17).nextBytes(golden);
        // Zero pages (a run, a lone one, the last): never fetched, holes in the local file, read as zeros without I/O
        // until the guest writes them; and a guest write to one that no round recorded is punched out at the restart.
        for (final int p : new int[] {5, 6, 7, 20, PAGES - 1}) {
            Arrays.fill(golden, p * PAGE, (p + 1) * PAGE, (byte) 0);
        }
    }

    /** What the guest wrote to each sector, in order: write ids (each sector's bytes derive from the id), 0 = zeros. */
    private static final class Model {
        final List<List<Integer>> versions = new ArrayList<>();
        /** Per sector: how many of its versions were acknowledged before the last completed FLUSH started. */
        final int[] flushedCount = new int[SECTORS];
        /** Per sector: how many of its versions were acknowledged (so far). */
        final int[] acked = new int[SECTORS];

        Model() {
            for (int s = 0; s < SECTORS; s++) {
                versions.add(new ArrayList<>());
            }
        }
    }

    @Test
    void shouldKeepEveryFlushedWriteAndNeverTrustWhatNoSyncCoveredThroughRandomPowerCuts() throws Exception {
        final long seed0 = Long.getLong("lazyblk.crash.seed", 20261203L);
        final long started = System.nanoTime();
        int cutMidway = 0;
        int cutDiskOnly = 0;
        for (int cycle = 0; cycle < CYCLES; cycle++) {
            final long seed = seed0 + cycle;
            try {
                final int[] outcome = life(seed);
                cutMidway += outcome[0];
                cutDiskOnly += outcome[1];
            } catch (final AssertionError | Exception e) {
                throw new AssertionError("life " + cycle + " (seed " + seed + ", rerun with -Dlazyblk.crash.seed=" + seed
                    + " -Dlazyblk.crash.cycles=1): " + e.getMessage(), e);
            }
        }
        System.out.printf("crash simulation: %d lives in %.1f s; %d cut by plan while the engine ran, %d of them after the "
            + "switch to disk-only%n", CYCLES, (System.nanoTime() - started) / 1e9, cutMidway, cutDiskOnly);
        assertTrue(cutMidway > CYCLES / 4, "most cuts should land while the engine works, not after: " + cutMidway);
    }

    /** One life and its check; returns {cut by plan while running (0/1), the store was disk-only by then (0/1)}. */
    private int[] life(final long seed) throws Exception {
        final Random rnd = new Random(seed);
        final SimulatedDisk disk = new SimulatedDisk(seed);
        final Model model = new Model();
        final long fillRate = switch (rnd.nextInt(3)) {
            case 0 -> 1; // a byte a second: pages land when the guest reads them
            case 1 -> 256 << 10;
            default -> 0; // flat out: often disk-only before the cut
        };
        int writeId = 0;
        boolean diskOnlyAtCut = false;
        boolean planned = false;
        try (Arena arena = Arena.ofShared(); TestRequest req = new TestRequest(4 * PAGE)) {
            final MemorySegment zeroIov = LocalImage.zeroIov(arena, 4096);
            final MemorySource src = new MemorySource(golden, PAGE, seed);
            src.failShare(rnd.nextInt(4) == 0 ? 0.2 : 0);
            final Manifest m = src.manifest();
            LocalImage.createReserved(IMAGE, SIZE, PAGE, p -> !m.isZeroPage(p), disk);
            final LazyStore store = open(disk, src, fillRate);
            try {
                if (fillRate == 0 && rnd.nextBoolean()) {
                    store.awaitDiskOnly(TimeUnit.SECONDS.toNanos(10)); // then the cut lands in disk-only mode
                }
                disk.cutAfter(1 + rnd.nextInt(rnd.nextBoolean() ? 40 : 400));
                final int ops = 10 + rnd.nextInt(60);
                for (int i = 0; i < ops && !disk.cutHappened(); i++) {
                    final int op = rnd.nextInt(10);
                    if (op < 5) {
                        final int first = rnd.nextInt(SECTORS);
                        final int n = 1 + rnd.nextInt(Math.min(3 * PAGE / SECTOR, SECTORS - first));
                        final boolean zeros = rnd.nextInt(6) == 0;
                        final int id = zeros ? 0 : ++writeId;
                        for (int s = first; s < first + n; s++) {
                            model.versions.get(s).add(id); // before the write: a cut in the middle may keep it
                        }
                        final int rc;
                        if (zeros) {
                            rc = req.writeZeroes(store, (long) first * SECTOR, (long) n * SECTOR, zeroIov, 4096);
                        } else {
                            for (int s = first; s < first + n; s++) {
                                MemorySegment.copy(sectorOf(id, s), 0, req.data, java.lang.foreign.ValueLayout.JAVA_BYTE,
                                    (long) (s - first) * SECTOR, SECTOR);
                            }
                            rc = req.run(store, IoRequest.WRITE, (long) first * SECTOR, n * SECTOR);
                        }
                        if (rc == 0) {
                            for (int s = first; s < first + n; s++) {
                                model.acked[s] = model.versions.get(s).size();
                            }
                        } else if (!disk.cutHappened()) {
                            fail("a write failed before any cut: " + rc);
                        }
                    } else if (op < 8) {
                        final int first = rnd.nextInt(SECTORS);
                        final int n = 1 + rnd.nextInt(Math.min(3 * PAGE / SECTOR, SECTORS - first));
                        final int rc = req.run(store, IoRequest.READ, (long) first * SECTOR, n * SECTOR);
                        if (!disk.cutHappened()) {
                            assertEquals(0, rc, "a read before any cut");
                            for (int s = first; s < first + n; s++) {
                                final byte[] got = new byte[SECTOR];
                                MemorySegment.copy(req.data, java.lang.foreign.ValueLayout.JAVA_BYTE, (long) (s - first) * SECTOR,
                                    got, 0, SECTOR);
                                final List<Integer> v = model.versions.get(s);
                                final byte[] want = v.isEmpty() ? goldenSector(s) : v.get(v.size() - 1) == 0 ? new byte[SECTOR]
                                    : sectorOf(v.get(v.size() - 1), s);
                                if (!Arrays.equals(want, got) && !disk.cutHappened()) {
                                    fail("read of sector " + s + " before any cut returned " + describe(got, s) + ", not the latest write");
                                }
                            }
                        }
                    } else {
                        final int[] ackedBefore = model.acked.clone();
                        if (store.flush() == 0) {
                            for (int s = 0; s < SECTORS; s++) {
                                model.flushedCount[s] = Math.max(model.flushedCount[s], ackedBefore[s]);
                            }
                        } else if (!disk.cutHappened()) {
                            fail("a FLUSH failed before any cut");
                        }
                    }
                    if (rnd.nextInt(4) == 0) {
                        Thread.sleep(0, 200_000); // let the fill and the source's thread move on
                    }
                }
                diskOnlyAtCut = store.diskOnly();
            } finally {
                planned = disk.cutHappened();
                if (!planned) {
                    disk.powerCut();
                }
                store.close();
                src.close();
            }
            check(disk, model, seed);
            return new int[] {planned ? 1 : 0, planned && diskOnlyAtCut ? 1 : 0};
        }
    }

    private LazyStore open(final SimulatedDisk disk, final MemorySource src, final long fillRate) throws Exception {
        final Manifest m = src.manifest();
        final PageStateFile state = PageStateFile.openOrCreate(STATE, m.size(), m.pageSize(), m.digest(), disk);
        return new LazyStore(m, LocalImage.open(IMAGE, false, disk), state, src,
            new LazyStore.Options("golden", 64L * PAGE, fillRate, 20_000_000_000L));
    }

    /** Opens what survived the cut, and checks the three invariants (see the class comment). */
    private void check(final SimulatedDisk disk, final Model model, final long seed) throws Exception {
        final byte[] onDisk = disk.contents(IMAGE);
        final boolean[] local = new boolean[PAGES];
        try (PageStateFile s = PageStateFile.openOrCreate(STATE, SIZE, PAGE, MemorySource.manifestOf(golden, PAGE).digest(), disk)) {
            for (int p = 0; p < PAGES; p++) {
                local[p] = s.isLocal(p);
            }
        }
        // 1. Local pages hold the image or the guest's bytes.
        for (int p = 0; p < PAGES; p++) {
            if (!local[p]) {
                continue;
            }
            for (int s = p * PAGE / SECTOR; s < (p + 1) * PAGE / SECTOR; s++) {
                final byte[] got = Arrays.copyOfRange(onDisk, s * SECTOR, (s + 1) * SECTOR);
                if (!Arrays.equals(got, goldenSector(s)) && versionOf(got, s, model) < 0) {
                    fail("page " + p + " is recorded local but sector " + s + " holds " + describe(got, s));
                }
            }
        }
        // 2 and 3: read everything through a new store, let it fill to disk-only, read again.
        final MemorySource src = new MemorySource(golden, PAGE, seed + 1);
        final LazyStore store = open(disk, src, 0);
        try (TestRequest req = new TestRequest(SIZE)) {
            checkReads(req, store, model, "after the restart");
            assertTrue(store.awaitDiskOnly(TimeUnit.SECONDS.toNanos(30)), "the fill completes after the restart");
            checkReads(req, store, model, "once disk-only");
            for (int p = 0; p < PAGES; p++) {
                if (local[p] && src.fetchesOf(p) != 0) {
                    fail("page " + p + " was recorded local but was fetched again " + src.fetchesOf(p) + " times");
                }
                if (src.manifest().isZeroPage(p) && src.fetchesOf(p) != 0) {
                    fail("zero page " + p + " was fetched " + src.fetchesOf(p) + " times");
                }
            }
        } finally {
            store.close();
            src.close();
        }
    }

    private void checkReads(final TestRequest req, final LazyStore store, final Model model, final String when) {
        assertEquals(0, req.run(store, IoRequest.READ, 0, SIZE), "read of the whole image " + when);
        for (int s = 0; s < SECTORS; s++) {
            final byte[] got = new byte[SECTOR];
            MemorySegment.copy(req.data, java.lang.foreign.ValueLayout.JAVA_BYTE, (long) s * SECTOR, got, 0, SECTOR);
            final int at = versionOf(got, s, model);
            final int floor = model.flushedCount[s];
            if (at < 0) {
                if (!Arrays.equals(got, goldenSector(s)) || floor > 0) {
                    fail("sector " + s + " " + when + " holds " + describe(got, s) + "; " + floor + " of its "
                        + model.versions.get(s).size() + " writes were flushed");
                }
            } else if (at < floor - 1) {
                fail("sector " + s + " " + when + " holds write #" + at + " of " + model.versions.get(s)
                    + ", older than the last flushed one (#" + (floor - 1) + ")");
            }
        }
    }

    /** The position in the sector's history of the write whose bytes {@code got} are (the latest such), or -1. */
    private static int versionOf(final byte[] got, final int s, final Model model) {
        final List<Integer> v = model.versions.get(s);
        for (int i = v.size() - 1; i >= 0; i--) {
            final byte[] want = v.get(i) == 0 ? new byte[SECTOR] : sectorOf(v.get(i), s);
            if (Arrays.equals(want, got)) {
                return i;
            }
        }
        return -1;
    }

    private byte[] goldenSector(final int s) {
        return Arrays.copyOfRange(golden, s * SECTOR, (s + 1) * SECTOR);
    }

    private String describe(final byte[] got, final int s) {
        if (Arrays.equals(got, new byte[SECTOR])) {
            return "zeros";
        }
        final ByteBuffer b = ByteBuffer.wrap(got).order(ByteOrder.LITTLE_ENDIAN);
        return "bytes starting " + Long.toHexString(b.getLong(0)) + " " + Long.toHexString(b.getLong(8))
            + (Arrays.equals(got, goldenSector(s)) ? " (the image's)" : "");
    }

    /** The bytes write {@code id} puts in sector {@code s}: id and sector first, then a pattern of both. */
    private static byte[] sectorOf(final int id, final int s) {
        final ByteBuffer b = ByteBuffer.allocate(SECTOR).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(0, 0x5752495445L << 24 | id).putLong(8, s);
        for (int i = 16; i < SECTOR; i++) {
            b.put(i, (byte) (id * 31 + s * 7 + i));
        }
        return b.array();
    }
}
