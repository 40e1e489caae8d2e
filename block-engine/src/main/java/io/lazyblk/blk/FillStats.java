package io.lazyblk.blk;

/**
 * What the lazy store's fill did and does, for status and tests: zero pages, the learned boot profile, and the
 * governor's view of the guest. A read-only view over the parts that keep the counts; any thread (each figure is as
 * of a recent moment, read without locks).
 */
public final class FillStats {
    private final ZeroPages zeros;
    private final BootProfile profile;
    private final FillGovernor governor;
    private final BackgroundRuns runs;
    private final GuestActivity activity;
    private final PageFetches fetches;

    FillStats(final ZeroPages zeros, final BootProfile profile, final FillGovernor governor, final BackgroundRuns runs,
              final GuestActivity activity, final PageFetches fetches) {
        this.zeros = zeros;
        this.profile = profile;
        this.governor = governor;
        this.runs = runs;
        this.activity = activity;
        this.fetches = fetches;
    }

    /** Pages of the image that hold only zeros: never fetched, holes in the local file, local from the first round. */
    public int zeroPages() {
        return zeros.imageZeroPages();
    }

    /** Pages in the boot profile, fetched ahead of the guest (zero pages and pages local at start left out). */
    public int profilePages() {
        return profile.pageCount();
    }

    /** Bytes of profile pages that were here before the guest first read them: {@link #profileUsedBytes} plus {@link #profileWastedBytes}. */
    public long profileAheadBytes() {
        return profile.aheadBytes();
    }

    /** Bytes of profile pages the guest read after they had been fetched ahead. */
    public long profileUsedBytes() {
        return profile.usedBytes();
    }

    /** Bytes of profile pages here that the guest has not read (yet): fetched ahead for nothing so far. */
    public long profileWastedBytes() {
        return profile.wastedBytes();
    }

    /** Guest requests served lazily so far (an activity signal: concurrent queues may lose an increment now and then). */
    public long guestRequests() {
        return activity.requests();
    }

    /** Demand fetches issued so far (the guest's misses, and their retries). */
    public long demandFetches() {
        return fetches.demandIssued();
    }

    /** Times the background fill backed off for the guest's demand misses. */
    public long fillBackoffs() {
        return governor.backoffs();
    }

    /** Nanoseconds the background fill spent backed off for demand misses (one run in flight, at the floor rate). */
    public long fillBackedOffNanos() {
        return governor.backedOffNanos();
    }

    /** Nanoseconds the background fill spent rate-limited for a guest doing I/O without misses. */
    public long fillActiveNanos() {
        return governor.activeNanos();
    }

    /** What holds the background fill back now: {@code idle} (nothing: flat out), {@code active} or {@code backoff}. */
    public String fillMode() {
        return governor.mode().name().toLowerCase(java.util.Locale.ROOT);
    }

    /** Background runs the governor lets be in flight now. */
    public int fillWindow() {
        return governor.mode() == FillGovernor.Mode.BACKOFF ? FillGovernor.FLOOR_WINDOW : runs.maxRuns();
    }

    /** Background requests (runs of adjacent pages) issued so far. */
    public long backgroundRuns() {
        return runs.runsIssued();
    }
}
