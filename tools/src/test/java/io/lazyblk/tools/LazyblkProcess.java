package io.lazyblk.tools;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * {@code lazyblk} ({@link Main}) in a child JVM started with this test's own java and classpath, as an operator
 * would run it. Its stdout and stderr are collected line by line, and copied to {@code NAME.log} for post-mortems,
 * so a test waits for a line or for the exit with a deadline, never by sleeping. {@link #close()} kills it if it still
 * runs. Thread-safe.
 */
final class LazyblkProcess implements AutoCloseable {
    /** What the build gives the engine's own JVMs (pom.xml lazyblk.jvmFlags), plus a heap cap so a leak fails fast. */
    private static final List<String> JVM_FLAGS = List.of("--enable-native-access=ALL-UNNAMED",
        "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED", "--add-exports", "java.base/sun.nio.ch=ALL-UNNAMED",
        "-Xmx128m", "-XX:+UseSerialGC");
    /** A JVM start takes a second or two on a loaded machine; fifteen means it hangs. */
    static final Duration START_TIMEOUT = Duration.ofSeconds(15);

    private final String name;
    private final Process process;
    private final Path log;
    private final Writer logWriter;
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();
    private final List<String> lines = new ArrayList<>(); // guarded by lock
    private int openStreams = 2; // guarded by lock

    private LazyblkProcess(final String name, final Process process, final Path log, final Writer logWriter) {
        this.name = name;
        this.process = process;
        this.log = log;
        this.logWriter = logWriter;
    }

    /** Starts {@code lazyblk ARGS...}; its output goes to {@code logDir/NAME.log} as well. */
    static LazyblkProcess start(final String name, final Path logDir, final String... args) throws IOException {
        return start(name, logDir, java.util.Map.of(), args);
    }

    /** As {@link #start(String, Path, String...)}, with {@code env} added to the child's environment. */
    static LazyblkProcess start(final String name, final Path logDir, final java.util.Map<String, String> env, final String... args)
        throws IOException {
        final List<String> cmd = new ArrayList<>();
        cmd.add(ProcessHandle.current().info().command().orElseThrow(() -> new IOException("cannot tell which java runs this test")));
        cmd.addAll(JVM_FLAGS);
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add(Main.class.getName());
        cmd.addAll(List.of(args));
        final Path log = logDir.resolve(name + ".log");
        final Writer w = Files.newBufferedWriter(log, StandardCharsets.UTF_8);
        w.write("$ lazyblk " + String.join(" ", args) + System.lineSeparator());
        final ProcessBuilder pb = new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
        // A token in this JVM's environment must not reach a child whose test gives it none.
        pb.environment().remove(io.lazyblk.pull.token.TokenSource.ENV);
        pb.environment().putAll(env);
        final Process p = pb.start();
        final LazyblkProcess child = new LazyblkProcess(name, p, log, w);
        child.pump(p.getInputStream(), "out");
        child.pump(p.getErrorStream(), "err");
        return child;
    }

    private void pump(final InputStream in, final String stream) {
        Thread.ofPlatform().daemon().name("child-" + name + "-" + stream).start(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null) {
                    add(line);
                }
            } catch (final IOException e) {
                add("(" + stream + " unreadable: " + e + ")");
            } finally {
                lock.lock();
                try {
                    if (--openStreams == 0) {
                        logWriter.close();
                    }
                    changed.signalAll();
                } catch (final IOException e) {
                    // the log copy is for post-mortems only
                } finally {
                    lock.unlock();
                }
            }
        });
    }

    private void add(final String line) {
        lock.lock();
        try {
            lines.add(line);
            try {
                logWriter.write(line + System.lineSeparator());
                logWriter.flush();
            } catch (final IOException e) {
                // the log copy is for post-mortems only
            }
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    String name() {
        return name;
    }

    long pid() {
        return process.pid();
    }

    boolean isAlive() {
        return process.isAlive();
    }

    /** Lines printed so far, stdout and stderr interleaved as they arrived. */
    int lineCount() {
        lock.lock();
        try {
            return lines.size();
        } finally {
            lock.unlock();
        }
    }

    /** Everything printed so far. */
    String output() {
        lock.lock();
        try {
            return String.join(System.lineSeparator(), lines);
        } finally {
            lock.unlock();
        }
    }

    /** Whether a line containing {@code text} was printed at index {@code from} or later. */
    boolean printed(final String text, final int from) {
        return find(text, from) != null;
    }

    private String find(final String text, final int from) {
        lock.lock();
        try {
            for (int i = from; i < lines.size(); i++) {
                if (lines.get(i).contains(text)) {
                    return lines.get(i);
                }
            }
            return null;
        } finally {
            lock.unlock();
        }
    }

    /** The first line containing {@code text}; fails if none is printed within {@code timeout}. */
    String awaitLine(final String text, final Duration timeout) {
        return awaitLine(text, 0, timeout);
    }

    /**
     * The first line containing {@code text} at index {@code from} or later; fails, with the output so far, if none
     * is printed within {@code timeout} or the child closes its output first.
     */
    String awaitLine(final String text, final int from, final Duration timeout) {
        final long deadline = System.nanoTime() + timeout.toNanos();
        lock.lock();
        try {
            while (true) {
                final String found = find(text, from);
                if (found != null) {
                    return found;
                }
                if (openStreams == 0) {
                    throw new AssertionError(name + " ended (" + exitDescription() + ") without printing '" + text + "':\n" + output());
                }
                final long left = deadline - System.nanoTime();
                if (left <= 0) {
                    throw new AssertionError(name + " did not print '" + text + "' within " + timeout.toMillis() + " ms:\n" + output());
                }
                changed.awaitNanos(left);
            }
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted waiting for " + name, e);
        } finally {
            lock.unlock();
        }
    }

    private String exitDescription() {
        return process.isAlive() ? "still running" : "exit code " + process.exitValue();
    }

    /** Waits for the child to exit and its output to be fully read; fails if that takes longer than {@code timeout}. */
    int awaitExit(final Duration timeout) {
        final long deadline = System.nanoTime() + timeout.toNanos();
        try {
            if (!process.waitFor(timeout.toNanos(), TimeUnit.NANOSECONDS)) {
                throw new AssertionError(name + " still runs after " + timeout.toMillis() + " ms:\n" + output());
            }
            lock.lock();
            try {
                while (openStreams > 0) {
                    final long left = deadline - System.nanoTime();
                    if (left <= 0) {
                        throw new AssertionError(name + " exited but its output did not end within " + timeout.toMillis() + " ms");
                    }
                    changed.awaitNanos(left);
                }
            } finally {
                lock.unlock();
            }
            return process.exitValue();
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted waiting for " + name, e);
        }
    }

    /** SIGKILL, as a crash or the OOM killer would end it, and waits until it is gone. */
    void kill() {
        process.destroyForcibly();
        awaitGone();
    }

    /** SIGTERM (its shutdown hook closes the engine or provider cleanly), then waits until it is gone. */
    void stop() {
        process.destroy();
        try {
            if (!process.waitFor(10, TimeUnit.SECONDS)) {
                throw new AssertionError(name + " did not exit within 10 s of SIGTERM:\n" + output());
            }
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted waiting for " + name, e);
        }
    }

    /** Sends {@code signal} (e.g. {@code STOP}, {@code CONT}) with kill(1). */
    void signal(final String signal) {
        try {
            final Process k = new ProcessBuilder("kill", "-" + signal, Long.toString(process.pid())).inheritIO().start();
            if (!k.waitFor(10, TimeUnit.SECONDS) || k.exitValue() != 0) {
                throw new AssertionError("kill -" + signal + " " + process.pid() + " failed");
            }
        } catch (final IOException e) {
            throw new java.io.UncheckedIOException(e);
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted signalling " + name, e);
        }
    }

    private void awaitGone() {
        try {
            if (!process.waitFor(10, TimeUnit.SECONDS)) {
                throw new AssertionError(name + " (pid " + process.pid() + ") survived SIGKILL for 10 s");
            }
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    Path log() {
        return log;
    }

    /** Kills the child if it still runs. */
    @Override
    public void close() {
        if (process.isAlive()) {
            process.destroyForcibly();
            awaitGone();
        }
    }
}
