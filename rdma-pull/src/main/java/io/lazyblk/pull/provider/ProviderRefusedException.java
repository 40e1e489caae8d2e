package io.lazyblk.pull.provider;

import java.io.IOException;

/** The provider answered a hello with a refusal; the message carries the provider's own explanation. */
public final class ProviderRefusedException extends IOException {
    private static final long serialVersionUID = 1L;

    private final transient ProviderProtocol.HelloStatus status;
    private final String serverMessage;

    public ProviderRefusedException(final String provider, final String image, final ProviderProtocol.HelloStatus status,
                                    final String serverMessage) {
        super("provider " + provider + " refused image '" + image + "': " + status + ": " + serverMessage);
        this.status = status;
        this.serverMessage = serverMessage;
    }

    public ProviderProtocol.HelloStatus status() {
        return status;
    }

    /** The refusal text exactly as the provider sent it. */
    public String serverMessage() {
        return serverMessage;
    }
}
