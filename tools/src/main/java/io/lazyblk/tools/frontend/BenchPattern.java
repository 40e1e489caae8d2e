package io.lazyblk.tools.frontend;

import java.util.Locale;

/** The I/O pattern of a {@link BenchRunner} run, named as fio names them. */
public enum BenchPattern {
    RANDREAD(false, true),
    RANDWRITE(true, true),
    READ(false, false),
    WRITE(true, false);

    public final boolean write;
    public final boolean random;

    BenchPattern(final boolean write, final boolean random) {
        this.write = write;
        this.random = random;
    }

    /** Parses {@code randread|randwrite|read|write} (any case). */
    public static BenchPattern parse(final String s) {
        try {
            return valueOf(s.toUpperCase(Locale.ROOT));
        } catch (final IllegalArgumentException e) {
            throw new IllegalArgumentException("pattern must be randread, randwrite, read or write, got '" + s + "'");
        }
    }

    @Override
    public String toString() {
        return name().toLowerCase(Locale.ROOT);
    }
}
