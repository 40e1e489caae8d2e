package io.lazyblk.tools;

import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;

/** {@code lazyblk serve}: one engine for one VM. */
@Command(name = "serve", mixinStandardHelpOptions = true,
    description = {"Serve a disk to QEMU over a vhost-user-blk socket.",
        "QEMU: -object memory-backend-memfd,id=mem0,size=1G,share=on -numa node,memdev=mem0",
        "      -chardev socket,id=vub0,path=SOCK -device vhost-user-blk-pci,chardev=vub0,num-queues=N"})
public final class ServeCommand implements Callable<Integer> {
    @Option(names = "--socket", required = true, description = "UNIX socket path QEMU connects to (created; a stale one is replaced)")
    Path socket;

    @Option(names = "--local", description = "raw image file to serve (size a multiple of 512)")
    Path local;

    @Option(names = "--null", converter = SizeConverter.class, paramLabel = "SIZE",
        description = "serve a null disk of SIZE that ignores data (engine overhead benchmarks), instead of --local")
    long nullSize;

    @Option(names = "--queues", defaultValue = "1", description = "virtqueues offered (default ${DEFAULT-VALUE})")
    int queues;

    @Option(names = "--read-only", description = "refuse guest writes (the guest sees a read-only disk)")
    boolean readOnly;

    @Option(names = "--io-threads", defaultValue = "0", description = "dedicated I/O threads per queue; 0 runs I/O on the queue's own thread, no hand-off (default ${DEFAULT-VALUE})")
    int ioThreads;

    @Option(names = "--poll-us", defaultValue = "50", description = "µs a queue polls its ring after the last request before sleeping (default ${DEFAULT-VALUE})")
    long pollMicros;

    @Override
    public Integer call() throws Exception {
        if ((local == null) == (nullSize == 0)) {
            System.err.println("lazyblk serve: give exactly one of --local IMAGE or --null SIZE");
            return 2;
        }
        if (local != null && !Files.isRegularFile(local)) {
            System.err.println("lazyblk serve: " + local + " is not a file; create one first (e.g. truncate -s 1G " + local + ")");
            return 2;
        }
        final Engine engine;
        try {
            engine = Engine.start(new Engine.Options(socket, local, nullSize, queues, readOnly, ioThreads, pollMicros * 1000));
        } catch (final IllegalArgumentException e) {
            System.err.println("lazyblk serve: " + e.getMessage());
            return 2;
        }
        Runtime.getRuntime().addShutdownHook(new Thread(engine::close, "shutdown"));
        System.err.printf("lazyblk: serving %s (%d bytes, %d queue%s%s) on %s%n", local != null ? local : "null disk",
            engine.sizeBytes(), queues, queues == 1 ? "" : "s", readOnly ? ", read-only" : "", socket);
        engine.join();
        return 0;
    }
}
