package io.lazyblk.tools;

import io.lazyblk.pull.provider.ImageExport;
import io.lazyblk.pull.token.AccessToken;
import io.lazyblk.pull.token.SecretFile;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.concurrent.Callable;

/** {@code lazyblk token}: mints an access token for one image with the provider's secret. */
@Command(name = "token", mixinStandardHelpOptions = true,
    description = {"Mint an access token for one image exported by 'lazyblk image-server'.",
        "Prints the token alone on one line, e.g. TOKEN=$(lazyblk token --secret-file F --image NAME --ttl 24h)."})
public final class TokenCommand implements Callable<Integer> {
    @Option(names = "--secret-file", required = true, paramLabel = "FILE",
        description = "the image server's secret (make one: head -c 32 /dev/urandom > FILE && chmod 600 FILE)")
    Path secretFile;

    @Option(names = "--image", required = true, paramLabel = "NAME", description = "the export name the token grants")
    String image;

    @Option(names = "--ttl", required = true, converter = DurationConverter.class, paramLabel = "DURATION",
        description = "how long the token stays valid: 30s, 15m, 24h, 7d")
    Duration ttl;

    @Override
    public Integer call() {
        final String token;
        try {
            ImageExport.validateName(image);
            token = AccessToken.mint(SecretFile.read(secretFile), image, Instant.now().plus(ttl));
        } catch (final IOException | IllegalArgumentException e) {
            System.err.println("lazyblk token: " + e.getMessage());
            return 2;
        }
        System.out.println(token);
        return 0;
    }
}
