package io.lazyblk.tools;

import io.lazyblk.sys.LibC;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;

/** A {@code pipe(2)}: a real fd that is not an eventfd, for feeding the back end the wrong kind of fd. */
final class Pipe implements AutoCloseable {
    private static final MethodHandle PIPE = Linker.nativeLinker().downcallHandle(
        Linker.nativeLinker().defaultLookup().find("pipe").orElseThrow(), FunctionDescriptor.of(JAVA_INT, ADDRESS));

    final int readFd;
    final int writeFd;

    Pipe() {
        try (Arena a = Arena.ofConfined()) {
            final MemorySegment fds = a.allocate(JAVA_INT, 2);
            final int rc = (int) PIPE.invokeExact(fds);
            if (rc != 0) {
                throw new IllegalStateException("pipe() failed");
            }
            readFd = fds.getAtIndex(JAVA_INT, 0);
            writeFd = fds.getAtIndex(JAVA_INT, 1);
        } catch (final RuntimeException | Error e) {
            throw e;
        } catch (final Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    @Override
    public void close() {
        LibC.close(readFd);
        LibC.close(writeFd);
    }
}
