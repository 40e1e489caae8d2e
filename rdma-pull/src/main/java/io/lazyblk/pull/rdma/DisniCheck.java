package io.lazyblk.pull.rdma;

import com.ibm.disni.verbs.RdmaEventChannel;

import java.io.IOException;

/** The one DiSNI call of {@link RdmaProbe}, in its own class so no DiSNI type is loaded before the library is found. */
final class DisniCheck {
    private DisniCheck() {
    }

    /** Opens and closes an RDMA CM event channel; null if that worked, else the reason. */
    static String openEventChannel() {
        try {
            final RdmaEventChannel ch = RdmaEventChannel.createEventChannel();
            if (ch == null) {
                return "DiSNI could not create an RDMA CM event channel (is the rdma_ucm module loaded?)";
            }
            ch.destroyEventChannel();
            return null;
        } catch (final IOException e) {
            return "RDMA CM unusable: " + e.getMessage() + " (is the rdma_ucm module loaded and a device up?)";
        } catch (final UnsatisfiedLinkError | NoClassDefFoundError e) {
            return "libdisni does not match DiSNI 2.1: " + e;
        }
    }
}
