package io.lazyblk.vhost.inflight;

/** An in-flight region the front end handed over is unusable: wrong geometry, unknown version, corrupt entries. */
public final class InflightException extends Exception {
    public InflightException(final String message) {
        super(message);
    }
}
