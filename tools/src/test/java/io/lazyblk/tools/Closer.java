package io.lazyblk.tools;

import java.util.ArrayList;
import java.util.List;

/** What a test opened, closed in reverse order at its end (engines after the front ends connected to them). */
final class Closer implements AutoCloseable {
    private final List<AutoCloseable> open = new ArrayList<>();

    synchronized <T extends AutoCloseable> T keep(final T c) {
        open.add(c);
        return c;
    }

    @Override
    public synchronized void close() throws Exception {
        for (int i = open.size() - 1; i >= 0; i--) {
            open.get(i).close();
        }
        open.clear();
    }
}
