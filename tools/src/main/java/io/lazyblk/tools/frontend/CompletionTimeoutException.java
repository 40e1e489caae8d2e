package io.lazyblk.tools.frontend;

import java.io.IOException;

/** A request was submitted and the device did not complete it in time. */
public final class CompletionTimeoutException extends IOException {
    private static final long serialVersionUID = 1L;

    public CompletionTimeoutException(final String message) {
        super(message);
    }
}
