package io.lazyblk.pull.provider;

import java.net.InetSocketAddress;
import java.nio.file.Path;

/**
 * The provider's RDMA side, behind an interface so the provider works (and is tested) where RDMA is not:
 * {@link #unavailable(String)} answers every offer with the reason. The real one ({@code io.lazyblk.pull.rdma})
 * registers an image's mapping in a protection domain of its own per client, only after that client's token was
 * accepted on the TCP hello, and lets exactly one RDMA connection, from the CM address the client claimed, create
 * its queue pair in that domain. Thread-safe.
 */
public interface RdmaExporter extends AutoCloseable {
    /**
     * Grants RDMA reads of {@code image} to the client of one TCP connection, which reached the provider at
     * {@code local}. Called on that connection's thread, after its token check.
     *
     * @throws Unavailable with a one-line reason the client logs
     */
    Grant offer(String image, Path file, long length, InetSocketAddress local, String peer) throws Unavailable;

    /** A one-line description for the server's start-up log: what RDMA serves, or why not. */
    String describe();

    /** Ends every grant (their queue pairs first) and stops listening. */
    @Override
    void close();

    /** One client's access: its offer, its claim, and its release. Closing is idempotent. */
    interface Grant extends AutoCloseable {
        RdmaOffer offer();

        /** The client's CM connection comes from {@code source}; only a connection from there may use this grant. */
        void claim(InetSocketAddress source) throws Unavailable;

        /** Revokes the access: the queue pair is destroyed (no READ is served after this returns), then the rest. */
        @Override
        void close();
    }

    /** RDMA is not available for this client; the message says why, in one line. */
    final class Unavailable extends Exception {
        private static final long serialVersionUID = 1L;

        public Unavailable(final String reason) {
            super(reason);
        }
    }

    /** An exporter that answers every offer "not available: {@code reason}". */
    static RdmaExporter unavailable(final String reason) {
        return new RdmaExporter() {
            @Override
            public Grant offer(final String image, final Path file, final long length, final InetSocketAddress local, final String peer)
                throws Unavailable {
                throw new Unavailable("RDMA is not available on this provider: " + reason);
            }

            @Override
            public String describe() {
                return "RDMA not offered: " + reason;
            }

            @Override
            public void close() {
                // nothing held
            }
        };
    }
}
