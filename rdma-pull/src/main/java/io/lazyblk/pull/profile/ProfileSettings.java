package io.lazyblk.pull.profile;

import io.lazyblk.pagemap.PageSource;

import java.time.Duration;

/**
 * How an image provider learns boot profiles (image-server {@code --profile-window}, {@code --profile-max},
 * {@code --no-profile}).
 *
 * @param learn whether the provider learns profiles and hands them out at all; off, it answers every profile request
 *     with none and leaves profile files alone
 * @param window how long after a connection's first demand request its demand fetches count as its boot
 * @param maxBytes most bytes of image a profile (and one boot's list) may name; also at most
 *     {@link PageSource#MAX_PROFILE_PAGES} pages
 */
public record ProfileSettings(boolean learn, Duration window, long maxBytes) {
    /**
     * 60 s: a cloud image on KVM reaches its services in 10-30 s, and the demand fetches that matter are those before
     * the guest's login and services start; twice that leaves room for a slow or busy host, while the reads that come
     * later belong to the workload, which differs from VM to VM, rather than to the boot every VM repeats.
     */
    public static final Duration DEFAULT_WINDOW = Duration.ofSeconds(60);
    /**
     * 256 MiB: a Linux guest's boot reads tens to a couple of hundred MiB (kernel, initramfs, init and its units,
     * libraries); 256 MiB holds that with room, and bounds what a profile makes every later engine fetch ahead of its
     * guest (a second or two of a fill at 100-200 MiB/s).
     */
    public static final long DEFAULT_MAX_BYTES = 256L << 20;

    public ProfileSettings {
        if (window.isNegative() || window.isZero()) {
            throw new IllegalArgumentException("profile window of " + window + ": must be positive");
        }
        if (maxBytes < 1) {
            throw new IllegalArgumentException("profile size limit of " + maxBytes + " bytes: must be positive");
        }
    }

    public static ProfileSettings defaults() {
        return new ProfileSettings(true, DEFAULT_WINDOW, DEFAULT_MAX_BYTES);
    }

    /** Learning off. */
    public static ProfileSettings off() {
        return new ProfileSettings(false, DEFAULT_WINDOW, DEFAULT_MAX_BYTES);
    }

    /** Most pages a profile of pages of {@code pageSize} holds: {@link #maxBytes} of them, at least one, at most the protocol's bound. */
    public int maxPages(final int pageSize) {
        return (int) Math.max(1, Math.min(PageSource.MAX_PROFILE_PAGES, maxBytes / pageSize));
    }
}
