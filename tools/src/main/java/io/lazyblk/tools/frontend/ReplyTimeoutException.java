package io.lazyblk.tools.frontend;

import java.io.IOException;

/** The back end neither answered nor closed the connection within the reply timeout. */
public final class ReplyTimeoutException extends IOException {
    private static final long serialVersionUID = 1L;

    public ReplyTimeoutException(final String message) {
        super(message);
    }
}
