package io.lazyblk.tools;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pagemap.PageGeometry;
import io.lazyblk.pull.manifest.ManifestBuilder;
import io.lazyblk.pull.s3.S3Client;
import io.lazyblk.pull.s3.S3Config;
import io.lazyblk.pull.s3.S3Location;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Function;

/**
 * {@code lazyblk publish}: puts a golden image into S3 with its manifest beside it, so engines can fill from
 * {@code --source s3://BUCKET/KEY}; or builds the manifest of an object already there.
 */
@Command(name = "publish", mixinStandardHelpOptions = true,
    description = {"Upload a raw disk image to S3 (or an S3-compatible store) with its manifest KEY.lzbmanifest beside it,",
        "for 'lazyblk serve --source s3://BUCKET/KEY'; or, with --manifest-only, build the manifest of an object already there.",
        "Credentials and endpoint: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, and",
        "AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) for a store that is not AWS (path-style addressing there).",
        "The image goes up first, in parts, then its manifest: an engine finds a manifest only beside a complete image."})
public final class PublishCommand implements Callable<Integer> {
    /** S3's limit on the parts of one upload. */
    static final int MAX_PARTS = 10_000;
    /** S3's smallest part but the last. */
    static final long MIN_PART = 5L << 20;
    private static final long PROGRESS_NANOS = 2_000_000_000L;

    @Option(names = "--image", paramLabel = "FILE", description = "the raw image to upload (a multiple of 512 bytes)")
    Path image;

    @Option(names = "--to", required = true, paramLabel = "s3://BUCKET/KEY", description = "where the image goes (or is, with --manifest-only)")
    String to;

    @Option(names = "--manifest-only", description = "build the manifest of the object already at --to by reading it, and upload that alone")
    boolean manifestOnly;

    @Option(names = "--page-size", converter = SizeConverter.class, defaultValue = "64k",
        description = "the manifest's page: the unit its SHA-256 hashes cover and the smallest fetch (default ${DEFAULT-VALUE}; "
            + SizeConverter.UNITS + ")")
    long pageSize;

    @Option(names = "--part-size", converter = SizeConverter.class, defaultValue = "16M",
        description = "multipart upload part (default ${DEFAULT-VALUE}; at least 5M; raised to fit S3's 10,000 parts)")
    long partSize;

    @Option(names = "--parallel", defaultValue = "4", description = "requests at once (default ${DEFAULT-VALUE})")
    int parallel;

    /** Where the AWS variables are looked up: the process's environment; a test may give its own. */
    Function<String, String> environment = System::getenv;

    @Override
    public Integer call() throws Exception {
        final S3Location loc;
        final S3Config config;
        try {
            loc = S3Location.parse(to);
            config = S3Config.fromEnvironment(environment);
            if (manifestOnly == (image != null)) {
                throw new IllegalArgumentException("give --image FILE, or --manifest-only for an object already at " + to);
            }
            if (pageSize < 4096 || pageSize > (4 << 20) || Long.bitCount(pageSize) != 1) {
                throw new IllegalArgumentException("--page-size must be a power of two from 4k to 4M");
            }
            if (partSize < MIN_PART || partSize > (1L << 30)) {
                throw new IllegalArgumentException("--part-size must be from 5M (S3's smallest part) to 1G");
            }
            if (parallel < 1 || parallel > 64) {
                throw new IllegalArgumentException("--parallel must be from 1 to 64");
            }
        } catch (final IllegalArgumentException e) {
            System.err.println("lazyblk publish: " + e.getMessage());
            return 2;
        }
        try (S3Client s3 = new S3Client(config, parallel, Duration.ofMinutes(5))) {
            final Manifest m = manifestOnly ? manifestOf(s3, loc) : upload(s3, loc);
            s3.put(loc.manifest(), bytes(m.encode()));
            System.err.printf("lazyblk publish: %s: %d bytes in %d pages of %d KiB (%d zero), digest %s; manifest %s%n", loc, m.size(),
                m.pageCount(), m.pageSize() >> 10, m.zeroPageCount(), m.digestHex(), loc.manifest());
            return 0;
        } catch (final IOException e) {
            System.err.println("lazyblk publish: " + e.getMessage());
            return 1;
        }
    }

    /** Hashes the image, then uploads it in parts, {@link #parallel} at once; aborts the upload if any part fails. */
    private Manifest upload(final S3Client s3, final S3Location loc) throws IOException, InterruptedException {
        // A cheap request first: wrong credentials or a missing bucket are named now, not as a failed part later.
        try {
            S3Client.retrying(S3Client.Retry.START, () -> s3.probe(loc));
        } catch (final S3Client.S3Exception e) {
            if (!"NoSuchKey".equals(e.code()) && e.status() != 404 || "NoSuchBucket".equals(e.code())) {
                throw e;
            }
        }
        final Progress hashing = new Progress("hashing " + image);
        final Manifest m = ManifestBuilder.build(image, (int) pageSize, hashing::update);
        hashing.done();
        final long size = m.size();
        // Parts: as asked, but never more than S3 takes; whole MiB.
        final long part = Math.max(partSize, ((size + MAX_PARTS - 1) / MAX_PARTS + (1 << 20) - 1) >> 20 << 20);
        final int parts = (int) Math.max(1, (size + part - 1) / part);
        final String uploadId = S3Client.retrying(S3Client.Retry.BACKGROUND, () -> s3.createMultipart(loc));
        final Progress uploading = new Progress("uploading to " + loc);
        final AtomicLong sent = new AtomicLong();
        final ExecutorService pool = Executors.newFixedThreadPool(Math.min(parallel, parts));
        final ThreadLocal<byte[]> buffers = ThreadLocal.withInitial(() -> new byte[(int) part]);
        try (FileChannel ch = FileChannel.open(image, StandardOpenOption.READ)) {
            final List<Future<String>> etags = new ArrayList<>();
            for (int i = 0; i < parts; i++) {
                final int number = i + 1;
                final long at = i * part;
                final int length = (int) Math.min(part, size - at);
                etags.add(pool.submit(() -> {
                    final byte[] buf = buffers.get();
                    final ByteBuffer bb = ByteBuffer.wrap(buf, 0, length);
                    while (bb.hasRemaining()) {
                        if (ch.read(bb, at + bb.position()) < 0) {
                            throw new IOException(image + " shrank during the upload; publish it again once it is stable");
                        }
                    }
                    final String etag = S3Client.retrying(S3Client.Retry.BACKGROUND, () -> s3.uploadPart(loc, uploadId, number, buf, length));
                    uploading.update(sent.addAndGet(length), size);
                    return etag;
                }));
            }
            final List<String> done = new ArrayList<>();
            for (final Future<String> f : etags) {
                done.add(f.get());
            }
            S3Client.retrying(S3Client.Retry.BACKGROUND, () -> {
                s3.completeMultipart(loc, uploadId, done);
                return null;
            });
            uploading.done();
        } catch (final java.util.concurrent.ExecutionException | IOException e) {
            pool.shutdownNow();
            try {
                s3.abortMultipart(loc, uploadId);
            } catch (final IOException ignored) {
                // the upload failed anyway; an unfinished upload is also removed by a bucket's lifecycle rule
            }
            final Throwable cause = e instanceof java.util.concurrent.ExecutionException ? e.getCause() : e;
            throw cause instanceof IOException io ? io : new IOException(String.valueOf(cause), cause);
        } finally {
            pool.shutdownNow();
        }
        final S3Client.ObjectInfo info = s3.probe(loc);
        if (info.size() != size) {
            throw new IOException(loc + " holds " + info.size() + " bytes after the upload of " + size + ": publish again");
        }
        return m;
    }

    /** Reads the object at {@code loc} (ranges of 8 MiB, {@link #parallel} at once, all at one ETag) and hashes its pages. */
    private Manifest manifestOf(final S3Client s3, final S3Location loc) throws IOException, InterruptedException {
        final S3Client.ObjectInfo info = S3Client.retrying(S3Client.Retry.START, () -> s3.probe(loc));
        if (info.size() == 0 || info.size() % 512 != 0 || info.size() > Manifest.MAX_IMAGE_BYTES) {
            throw new IOException(loc + " holds " + info.size() + " bytes; a raw disk image is a positive multiple of 512 bytes"
                + " up to 1 TiB");
        }
        final PageGeometry g = new PageGeometry(info.size(), (int) pageSize);
        final byte[] hashes = new byte[g.pageCount() * Manifest.HASH_BYTES];
        final int chunkPages = (int) Math.max(1, (8L << 20) / pageSize);
        final int chunks = (g.pageCount() + chunkPages - 1) / chunkPages;
        final Progress reading = new Progress("reading " + loc);
        final AtomicLong read = new AtomicLong();
        final ExecutorService pool = Executors.newFixedThreadPool(Math.min(parallel, chunks));
        final ThreadLocal<MemorySegment> buffers = ThreadLocal.withInitial(() -> java.lang.foreign.Arena.ofAuto()
            .allocate((long) chunkPages * pageSize));
        try {
            final List<Future<?>> work = new ArrayList<>();
            for (int c = 0; c < chunks; c++) {
                final int first = c * chunkPages;
                final int last = Math.min(g.pageCount(), first + chunkPages);
                work.add(pool.submit(() -> {
                    final MemorySegment buf = buffers.get();
                    final long at = g.pageStart(first);
                    final int length = (int) (g.pageStart(last - 1) + g.pageLength(last - 1) - at);
                    S3Client.retrying(S3Client.Retry.BACKGROUND, () -> {
                        s3.getRange(loc, at, length, buf, 0, info.etag());
                        return null;
                    });
                    for (int p = first; p < last; p++) {
                        Manifest.hashPage(buf.asSlice(g.pageStart(p) - at, g.pageLength(p)).asByteBuffer(), hashes, p * Manifest.HASH_BYTES);
                    }
                    reading.update(read.addAndGet(length), info.size());
                    return null;
                }));
            }
            for (final Future<?> f : work) {
                f.get();
            }
        } catch (final java.util.concurrent.ExecutionException e) {
            throw e.getCause() instanceof IOException io ? io : new IOException(String.valueOf(e.getCause()), e.getCause());
        } finally {
            pool.shutdownNow();
        }
        reading.done();
        return new Manifest(info.size(), (int) pageSize, hashes);
    }

    private static byte[] bytes(final ByteBuffer b) {
        final byte[] out = new byte[b.remaining()];
        b.get(out);
        return out;
    }

    /** One line every 2 s at most: "publish: uploading to s3://b/k: 48.0 of 128.0 MiB (37 %)". */
    private static final class Progress {
        private final String what;
        private final AtomicLong last = new AtomicLong(System.nanoTime());
        private volatile long total;

        Progress(final String what) {
            this.what = what;
        }

        void update(final long done, final long total) {
            this.total = total;
            final long now = System.nanoTime();
            final long l = last.get();
            if (now - l >= PROGRESS_NANOS && last.compareAndSet(l, now)) {
                System.err.printf("lazyblk publish: %s: %.1f of %.1f MiB (%d %%)%n", what, done / 1048576.0, total / 1048576.0,
                    total == 0 ? 100 : done * 100 / total);
            }
        }

        void done() {
            System.err.printf("lazyblk publish: %s: %.1f MiB done%n", what, total / 1048576.0);
        }
    }
}
