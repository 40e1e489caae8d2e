package io.lazyblk.sys;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * What every native surface of this module shares ({@link LibC}, {@link FileCalls}): the linker, handles looked up
 * once, errno capture into a per-thread segment (allocated once per thread, so a call allocates nothing), errno read
 * back through {@code __errno_location()} for the handles that do not capture it, and {@code strerror}. Thread-safe.
 */
final class Downcalls {
    static final Linker LINKER = Linker.nativeLinker();
    static final SymbolLookup LIBC = LINKER.defaultLookup();
    static final StructLayout CAPTURE_LAYOUT = Linker.Option.captureStateLayout();
    static final Linker.Option CAPTURE_ERRNO = Linker.Option.captureCallState("errno");
    /** The whole address space, for raw addresses the caller has checked. */
    static final MemorySegment ALL = MemorySegment.NULL.reinterpret(Long.MAX_VALUE);
    private static final VarHandle ERRNO = CAPTURE_LAYOUT.varHandle(MemoryLayout.PathElement.groupElement("errno"));
    /** One errno capture segment per thread, so a call never allocates. */
    private static final ThreadLocal<MemorySegment> STATE = ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(CAPTURE_LAYOUT));
    // Hot-path calls do not capture errno: the JDK may allocate a capture segment per call. On failure they read errno
    // through __errno_location() right away, before this thread makes any other native call.
    private static final MethodHandle ERRNO_LOCATION = plain("__errno_location", JAVA_LONG);
    private static final MethodHandle STRERROR = LINKER.downcallHandle(LIBC.find("strerror").orElseThrow(),
        FunctionDescriptor.of(ADDRESS, JAVA_INT));

    private Downcalls() {
    }

    /** A handle for libc's {@code name} that captures errno (pass {@link #state()} as its first argument). */
    static MethodHandle fn(final String name, final ValueLayout ret, final ValueLayout... args) {
        return LINKER.downcallHandle(symbol(name), FunctionDescriptor.of(ret, args), CAPTURE_ERRNO);
    }

    /** A handle for libc's {@code name} without errno capture (read it with {@link #lastErrno()} on failure). */
    static MethodHandle plain(final String name, final ValueLayout ret, final ValueLayout... args) {
        return LINKER.downcallHandle(symbol(name), FunctionDescriptor.of(ret, args));
    }

    /** open(2): variadic after its flags, errno captured. */
    static MethodHandle open() {
        return variadic("open", 2, JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT);
    }

    /**
     * A capturing handle for a variadic function, with the variadic arguments from index {@code firstVariadic} on: a
     * handle that does not say so does not follow the varargs ABI.
     */
    static MethodHandle variadic(final String name, final int firstVariadic, final ValueLayout ret, final ValueLayout... args) {
        return LINKER.downcallHandle(symbol(name), FunctionDescriptor.of(ret, args), CAPTURE_ERRNO,
            Linker.Option.firstVariadicArg(firstVariadic));
    }

    private static MemorySegment symbol(final String name) {
        return LIBC.find(name).orElseThrow(() -> new UnsatisfiedLinkError("libc has no " + name));
    }

    /** errno of the last failed native call on this thread; call it right after that call. */
    static int lastErrno() {
        try {
            return ALL.get(JAVA_INT, (long) ERRNO_LOCATION.invokeExact());
        } catch (final Throwable t) {
            throw rethrow(t);
        }
    }

    /** errno as a capturing call left it in {@code state}. */
    static int errno(final MemorySegment state) {
        return (int) ERRNO.get(state, 0L);
    }

    /** The per-thread errno capture segment; pass it as the first argument of a capturing handle. */
    static MemorySegment state() {
        return STATE.get();
    }

    static String strerror(final int errno) {
        try {
            final MemorySegment s = (MemorySegment) STRERROR.invokeExact(errno);
            return s.reinterpret(256).getString(0);
        } catch (final Throwable t) {
            return "errno " + errno;
        }
    }

    static RuntimeException rethrow(final Throwable t) {
        if (t instanceof RuntimeException r) {
            return r;
        }
        if (t instanceof Error e) {
            throw e;
        }
        return new IllegalStateException(t);
    }
}
