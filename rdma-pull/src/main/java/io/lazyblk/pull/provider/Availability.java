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
}
