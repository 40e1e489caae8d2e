package io.lazyblk.sys.fuzz;

import org.slf4j.ILoggerFactory;
import org.slf4j.IMarkerFactory;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.slf4j.Marker;
import org.slf4j.event.Level;
import org.slf4j.helpers.BasicMarkerFactory;
import org.slf4j.helpers.LegacyAbstractLogger;
import org.slf4j.helpers.MessageFormatter;
import org.slf4j.helpers.NOPMDCAdapter;
import org.slf4j.spi.MDCAdapter;
import org.slf4j.spi.SLF4JServiceProvider;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;

/**
 * An SLF4J provider for fuzz targets: drops everything below ERROR (a refusal per input would only slow fuzzing),
 * and records ERROR events, which the code under test logs where it swallows an internal failure (a connection's
 * "internal error", an agent that failed) so the harness can turn them into findings. Selected with
 * {@code -Dslf4j.provider=io.lazyblk.sys.fuzz.RecordingLogs}: the fuzz-corpus test run and tools/fuzz set it for the
 * modules whose targets need it.
 */
public final class RecordingLogs implements SLF4JServiceProvider {
    public static final String PROPERTY = "slf4j.provider";
    /** Bounds what a run that nobody drains keeps. */
    private static final int MAX_KEPT = 100;
    private static final ConcurrentLinkedQueue<String> ERRORS = new ConcurrentLinkedQueue<>();

    private final Factory factory = new Factory();
    private final IMarkerFactory markers = new BasicMarkerFactory();
    private final MDCAdapter mdc = new NOPMDCAdapter();

    /** Whether SLF4J logs through this provider; a harness that relies on it fails loudly when not. */
    public static boolean active() {
        return LoggerFactory.getILoggerFactory() instanceof Factory;
    }

    /** Fails with the fix when SLF4J does not log through this provider (set before SLF4J initialised). */
    public static void requireActive() {
        if (!active()) {
            throw new IllegalStateException("SLF4J is not using " + RecordingLogs.class.getName() + ", so internal errors the code "
                + "logs and swallows would go unseen: run with -D" + PROPERTY + "=" + RecordingLogs.class.getName()
                + " (tools/fuzz and the fuzz-corpus test run set it)");
        }
    }

    /** ERROR events since the last call, each with its stack trace, oldest first. */
    public static List<String> drainErrors() {
        final List<String> out = new ArrayList<>();
        String e;
        while ((e = ERRORS.poll()) != null) {
            out.add(e);
        }
        return out;
    }

    @Override
    public ILoggerFactory getLoggerFactory() {
        return factory;
    }

    @Override
    public IMarkerFactory getMarkerFactory() {
        return markers;
    }

    @Override
    public MDCAdapter getMDCAdapter() {
        return mdc;
    }

    @Override
    public String getRequestedApiVersion() {
        return "2.0.99";
    }

    @Override
    public void initialize() {
    }

    static final class Factory implements ILoggerFactory {
        private final ConcurrentHashMap<String, Logger> loggers = new ConcurrentHashMap<>();

        @Override
        public Logger getLogger(final String name) {
            return loggers.computeIfAbsent(name, ErrorRecorder::new);
        }
    }

    private static final class ErrorRecorder extends LegacyAbstractLogger {
        private static final long serialVersionUID = 1L;

        ErrorRecorder(final String name) {
            this.name = name;
        }

        @Override
        public boolean isTraceEnabled() {
            return false;
        }

        @Override
        public boolean isDebugEnabled() {
            return false;
        }

        @Override
        public boolean isInfoEnabled() {
            return false;
        }

        @Override
        public boolean isWarnEnabled() {
            return false;
        }

        @Override
        public boolean isErrorEnabled() {
            return true;
        }

        @Override
        protected String getFullyQualifiedCallerName() {
            return null;
        }

        @Override
        protected void handleNormalizedLoggingCall(final Level level, final Marker marker, final String pattern, final Object[] args,
                                                   final Throwable t) {
            if (level != Level.ERROR) {
                return;
            }
            final StringWriter w = new StringWriter();
            w.append(name).append(": ").append(MessageFormatter.basicArrayFormat(pattern, args));
            if (t != null) {
                w.append('\n');
                t.printStackTrace(new PrintWriter(w));
            }
            if (ERRORS.size() < MAX_KEPT) {
                ERRORS.add(w.toString());
            }
        }
    }
}
