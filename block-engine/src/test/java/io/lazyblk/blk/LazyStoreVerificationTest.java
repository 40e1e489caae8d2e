package io.lazyblk.blk;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.persistence.LocalImage;
import io.lazyblk.persistence.PageStateFile;
import io.lazyblk.persistence.SimulatedDisk;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

/**
 * Pages checked by provider page: in a coarse page (16 KiB over the provider's 4 KiB pages) a read is answered once the
 * provider pages it covers pass their hashes; a provider page that fails never reaches a reader or the local file.
 */
class LazyStoreVerificationTest {
    private static final int PART = 4096;
    private static final int PAGE = 4 * PART;
    private static final int SIZE = 64 * PAGE;
    private static final Path IMAGE = Path.of("/sim/disk.img");

    private final SimulatedDisk disk = new SimulatedDisk(3);
    private final byte[] golden = new byte[SIZE];
    private final List<AutoCloseable> open = new ArrayList<>();

    LazyStoreVerificationTest() {
        new Random(4).nextBytes(golden);
    }

    @AfterEach
    void closeAll() throws Exception {
        for (int i = open.size() - 1; i >= 0; i--) {
            open.get(i).close();
        }
    }

    @Test
    void shouldAnswerReadsOfCheckedProviderPagesAndNeverLetAFailingOneReachAReaderOrTheLocalFile() throws Exception {
        final MemorySource src = new MemorySource(golden, PART, 5);
        open.add(src);
        final int coarse = 10;
        src.corrupt(coarse * 4 + 2); // the third provider page of coarse page 10 always arrives damaged
        final Manifest m = src.manifest().coarsened(PAGE);
        LocalImage.createReserved(IMAGE, SIZE, disk);
        final PageStateFile state = PageStateFile.openOrCreate(PageStateFile.beside(IMAGE), m.size(), m.pageSize(), m.digest(), disk);
        final LazyStore store = new LazyStore(m, LocalImage.open(IMAGE, false, disk), state, src,
            new LazyStore.Options("golden", 1 << 20, 1, 5_000_000_000L)); // no background fill to speak of
        open.add(store);
        final TestRequest r = new TestRequest(PAGE);
        open.add(r);

        final long good = (long) coarse * PAGE + PART; // the second provider page: checked, then answered
        assertEquals(0, r.run(store, IoRequest.READ, good, PART), "a read of a provider page that passes its hash");
        assertArrayEquals(Arrays.copyOfRange(golden, (int) good, (int) good + PART), r.bytes(PART));

        final long bad = (long) coarse * PAGE + 2 * PART;
        assertNotEquals(0, r.run(store, IoRequest.READ, bad, 512), "a read of the damaged provider page fails (after a second try)");
        assertFalse(state.isLocal(coarse), "a page with a damaged part is never made local");
        final byte[] onDisk = Arrays.copyOfRange(disk.contents(IMAGE), coarse * PAGE, (coarse + 1) * PAGE);
        assertArrayEquals(new byte[PAGE], onDisk, "nothing of the damaged page was written to the local file");

        // Its neighbours are unaffected.
        assertEquals(0, r.run(store, IoRequest.READ, (coarse + 1) * (long) PAGE, PAGE));
        assertArrayEquals(Arrays.copyOfRange(golden, (coarse + 1) * PAGE, (coarse + 2) * PAGE), r.bytes(PAGE));
    }
}
