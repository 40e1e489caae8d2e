package io.lazyblk.pull.provider;

/**
 * Which pages an export can serve right now. A golden image has them all ({@link #ALL}); an engine's local file
 * exported as a peer has the pages that are durable there and still hold the image's bytes, a set that only grows
 * while that engine fills. A request for a page the export lacks is answered {@link ProviderProtocol#RESPONSE_READ_ERROR},
 * so the client takes it from its next source. Implementations are thread-safe and cheap (called per request).
 */
@FunctionalInterface
public interface Availability {
    Availability ALL = (firstPage, count) -> true;

    /** Whether pages {@code [firstPage, firstPage + count)} (in the export's manifest pages) can all be served now. */
    boolean has(int firstPage, int count);

    /**
     * Makes pages {@code [firstPage, firstPage + count)} servable if this export can (a host cache fetches them from
     * its own source, at demand priority) and waits for them up to {@code timeoutNanos}, on the requesting client's
     * connection thread. False if they are still missing then, or if the export never gets pages it lacks (a peer,
     * whose pages come only from its own engine's fill): the client then takes them from its next source.
     */
    default boolean await(final int firstPage, final int count, final long timeoutNanos) {
        return has(firstPage, count);
    }

    /**
     * Whether every page can be served and always will be: the export may then be read through its file by shm://
     * clients, which a per-page check cannot guard.
     */
    default boolean complete() {
        return this == ALL;
    }
}
