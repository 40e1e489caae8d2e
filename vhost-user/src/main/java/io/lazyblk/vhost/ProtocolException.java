package io.lazyblk.vhost;

/** The front end broke the protocol; the connection is closed with this message logged once. */
public final class ProtocolException extends Exception {
    private static final long serialVersionUID = 1L;

    public ProtocolException(final String message) {
        super(message);
    }
}
