package io.lazyblk.pull.rdma;

import io.lazyblk.pull.provider.RdmaExporter;

/** The provider's RDMA side for this host: DiSNI's where {@link RdmaProbe} says RDMA works, else "not available". */
public final class RdmaExporters {
    private RdmaExporters() {
    }

    /** Never throws: whatever fails here becomes the reason every offer is refused with. */
    public static RdmaExporter forThisHost() {
        final RdmaProbe.Availability a = RdmaProbe.probe();
        if (!a.usable()) {
            return RdmaExporter.unavailable(a.reason());
        }
        try {
            return new DisniExporter();
        } catch (final RuntimeException | LinkageError e) {
            return RdmaExporter.unavailable("DiSNI failed to start: " + e);
        }
    }
}
