package io.lazyblk.pagemap;

import java.lang.foreign.MemorySegment;

/**
 * Where absent pages come from: an image provider over TCP, RDMA, or same-host shared memory. Implementations
 * pass {@code PageSourceContract} (page-map's test jar).
 *
 * <p>Thread-safety: {@link #fetch} may be called from any thread; completions arrive on the transport's own
 * thread(s), except that a source whose reads are plain copies (a mapping on this host) may complete a DEMAND fetch
 * on the caller's thread before {@code fetch} returns: a listener must not hold a lock the caller holds. A source verifies
 * nothing unless it says so ({@link #verifiesPages()}): the page map checks every page against the {@link Manifest}.
 */
public interface PageSource extends AutoCloseable {
    /** Fetch priorities: demand fetches (a guest request waits) always go before background ones. */
    int DEMAND = 0;
    int BACKGROUND = 1;

    /** Completion status codes handed to {@link Listener#onFetched}. */
    int OK = 0;
    /** The transport is down (reconnecting); retry later. */
    int UNAVAILABLE = 1;
    /** The provider refused or failed the request. */
    int FAILED = 2;
    /**
     * The bytes arrived but do not match the manifest's page hashes: only from a source that checks what it delivers
     * ({@link #verifiesPages()}), once no source it could ask had the right bytes.
     */
    int CORRUPT = 3;

    /** The image this source serves, as its provider described it when the source connected. */
    Manifest manifest();

    /**
     * Starts fetching pages {@code [firstPage, firstPage + count)} into {@code dst}, which holds at least their
     * bytes ({@code count} pages, the image's last page may be short). Does not block and does not allocate per call.
     *
     * @param priority {@link #DEMAND} or {@link #BACKGROUND}
     * @param tag returned to the listener as is, to identify the fetch
     * @return false if the source cannot take another fetch now (too many in flight, or down); nothing was started
     */
    boolean fetch(int firstPage, int count, MemorySegment dst, int priority, long tag, Listener listener);

    /**
     * Whether every fetch this source completes {@link #OK} was checked against the manifest's page hashes already (a
     * chain checks each source's pages itself, to move on to the next source): the page map then does not hash the
     * same bytes a second time. False by default: a source verifies nothing.
     */
    default boolean verifiesPages() {
        return false;
    }

    /**
     * The boot profile the source's provider learned for this image: provider pages (of {@link Manifest#sourcePageSize()})
     * that earlier boots read on demand, in the order to fetch them. Checked before it is returned (hostile input, like
     * a manifest): every page within the image, none twice, at most {@link #MAX_PROFILE_PAGES}. Empty if the source
     * has none or cannot say. May block for a round trip: call it once, at start, off the data path.
     */
    default int[] bootProfile() {
        return new int[0];
    }

    /** Most pages a boot profile lists: 64 K provider pages (4 GiB at 64 KiB pages) bound what a profile makes an engine fetch ahead. */
    int MAX_PROFILE_PAGES = 1 << 16;

    /** Most pages one {@link #fetch} may ask for; a longer fetch completes {@link #FAILED}. */
    int maxPagesPerFetch();

    /**
     * Bytes the background fill should ask for in one fetch from this source, or 0 for the fill's own default (256 KiB,
     * what a tcp:// provider's window suits). A source whose every request costs a long round trip (an object store)
     * asks for more; the fill still keeps to {@link #maxPagesPerFetch()} and to its memory budget.
     */
    default int preferredRunBytes() {
        return 0;
    }

    /** Fetches in flight. */
    int inFlight();

    /** Whether the source is connected to its provider right now. */
    boolean connected();

    /**
     * Lets the calling thread deliver demand completions that are ready, where the source allows it; any thread.
     * A thread that polls anyway while a guest waits on a fetch (a virtqueue's thread) calls this: it then answers the
     * guest itself, instead of the source's transport thread waking up to do it and then holding the core while it
     * goes back to sleep (on 2 cores: ~5 µs before the queue's thread sees the guest's next request, 5–14 µs of a
     * loopback miss in all, measured). Listeners may run on the calling thread. Cheap when nothing is ready; never
     * blocks.
     *
     * @return completions delivered (0 by default: the source's own threads deliver them all)
     */
    default int poll() {
        return 0;
    }

    /** Closes the connection; fetches in flight complete with {@link #UNAVAILABLE}. */
    @Override
    void close();

    /** Receives fetch completions, exactly once per accepted fetch, on a transport thread (or in {@link #poll()}). */
    interface Listener {
        void onFetched(long tag, int firstPage, int count, int status);
    }
}
