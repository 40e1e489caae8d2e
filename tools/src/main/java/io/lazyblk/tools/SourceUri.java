package io.lazyblk.tools;

import io.lazyblk.pagemap.PageSource;
import io.lazyblk.pull.s3.S3Config;
import io.lazyblk.pull.s3.S3Location;
import io.lazyblk.pull.s3.S3PageSource;
import io.lazyblk.pull.shm.ShmPageSource;
import io.lazyblk.pull.tcp.TcpPageSource;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.time.Duration;

/**
 * Where pages come from, as {@code serve --source} names it: {@code tcp://HOST:PORT/NAME} (an image provider over
 * TCP), {@code rdma://HOST:PORT/NAME} (the same provider, read by RDMA READs where this host and the provider can;
 * else TCP to it, with one log line saying why) or {@code shm://SOCKPATH/NAME} (an image server's UNIX socket on this host; the path is everything before
 * the last '/', e.g. {@code shm:///run/lazyblk/cache.sock/golden}), or {@code s3://BUCKET/KEY} (an object in S3 or an
 * S3-compatible store, with its manifest {@code KEY.lzbmanifest} beside it; credentials and endpoint from the standard
 * AWS variables, see {@link S3Config}; no lazyblk token).
 *
 * @param address the provider's TCP address, for {@code tcp}
 * @param socket the server's UNIX socket, for {@code shm}
 * @param s3 the object, for {@code s3}
 * @param s3Config its credentials and endpoint, for {@code s3}; null: from this process's environment when opened
 */
public record SourceUri(String scheme, InetSocketAddress address, Path socket, String image, S3Location s3, S3Config s3Config) {
    public static final String SYNTAX = "tcp://HOST:PORT/NAME, rdma://HOST:PORT/NAME, shm://SOCKPATH/NAME or s3://BUCKET/KEY";

    public SourceUri(final String scheme, final InetSocketAddress address, final Path socket, final String image) {
        this(scheme, address, socket, image, null, null);
    }

    public static SourceUri s3(final S3Location location, final S3Config config) {
        return new SourceUri("s3", null, null, location.name(), location, config);
    }

    /** This source with S3's credentials and endpoint bound (an s3:// source; any other is returned as it is). */
    public SourceUri withS3Config(final S3Config config) {
        return "s3".equals(scheme) ? s3(s3, config) : this;
    }

    /** Whether this source takes a lazyblk token (an s3:// source does not: S3's credentials decide). */
    public boolean needsToken() {
        return !"s3".equals(scheme);
    }

    public static SourceUri tcp(final InetSocketAddress address, final String image) {
        return new SourceUri("tcp", address, null, image);
    }

    public static SourceUri shm(final Path socket, final String image) {
        return new SourceUri("shm", null, socket, image);
    }

    /** Parses a {@code --source} value; throws IllegalArgumentException saying what is wrong and what is expected. */
    public static SourceUri parse(final String s) {
        if (s.startsWith("s3://")) {
            try {
                return s3(S3Location.parse(s), null);
            } catch (final IllegalArgumentException e) {
                throw new IllegalArgumentException("--source " + e.getMessage(), e);
            }
        }
        if (s.startsWith("shm://")) {
            final String rest = s.substring("shm://".length());
            final int slash = rest.lastIndexOf('/');
            if (slash <= 0 || slash == rest.length() - 1) {
                throw new IllegalArgumentException("--source " + s + " must look like shm://SOCKPATH/NAME (e.g. shm:///run/lazyblk/cache.sock/golden)");
            }
            return shm(Path.of(rest.substring(0, slash)), rest.substring(slash + 1));
        }
        final URI uri;
        try {
            uri = new URI(s);
        } catch (final URISyntaxException e) {
            throw new IllegalArgumentException("--source " + s + " is not a URI; expected " + SYNTAX);
        }
        final String name = uri.getPath() == null ? "" : uri.getPath().replaceFirst("^/", "");
        if (!("tcp".equals(uri.getScheme()) || "rdma".equals(uri.getScheme())) || uri.getHost() == null || uri.getPort() < 1 || name.isEmpty() || name.contains("/")) {
            throw new IllegalArgumentException("--source " + s + " must look like " + SYNTAX);
        }
        return new SourceUri(uri.getScheme(), new InetSocketAddress(uri.getHost(), uri.getPort()), null, name);
    }

    /** Connects and presents {@code token}, the same at every reconnect (benchmarks, tests). */
    public PageSource open(final String token, final Duration timeout) throws IOException {
        return open(io.lazyblk.pull.token.TokenSource.fixed(token), timeout);
    }

    /**
     * Connects and presents the token {@code token} holds now (read again at each reconnect of a tcp:// source); the
     * handshake is bounded by {@code timeout}.
     */
    public PageSource open(final io.lazyblk.pull.token.TokenSource token, final Duration timeout) throws IOException {
        return switch (scheme) {
            case "shm" -> ShmPageSource.connect(socket, image, token, timeout);
            case "s3" -> S3PageSource.open(s3Config != null ? s3Config : S3Config.fromEnvironment(), s3,
                S3PageSource.Options.defaults());
            case "rdma" -> io.lazyblk.pull.rdma.RdmaSources.connect(address, image, token, timeout);
            case "tcp" -> io.lazyblk.pull.tcp.TwoLaneTcpSource.connect(address, image, token,
                TcpPageSource.Options.defaults().withConnectTimeout(timeout));
            default -> throw new IllegalStateException("scheme " + scheme);
        };
    }

    @Override
    public String toString() {
        if ("s3".equals(scheme)) {
            return s3.toString();
        }
        return "shm".equals(scheme) ? "shm://" + socket + "/" + image
            : scheme + "://" + address.getHostString() + ":" + address.getPort() + "/" + image;
    }
}
