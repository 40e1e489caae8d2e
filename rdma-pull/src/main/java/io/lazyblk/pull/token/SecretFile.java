package io.lazyblk.pull.token;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFileAttributeView;
import java.nio.file.attribute.PosixFilePermission;
import java.util.EnumSet;
import java.util.Set;

/** Reads the shared secret that signs access tokens: a file of random bytes, used as is. */
public final class SecretFile {
    private static final Logger LOG = LoggerFactory.getLogger(SecretFile.class);
    /** A secret file larger than this is probably not a secret file (an image, a log) named by mistake. */
    public static final int MAX_BYTES = 4096;

    private static final Set<PosixFilePermission> OTHERS = EnumSet.of(PosixFilePermission.GROUP_READ,
        PosixFilePermission.OTHERS_READ);

    private SecretFile() {
    }

    /**
     * The secret's bytes. Refuses a missing, unreadable, too short (under {@value AccessToken#MIN_SECRET_BYTES} bytes)
     * or oversized file with a message that says how to make one; warns (only) if group or others may read it.
     */
    public static byte[] read(final Path file) throws IOException {
        final String howTo = "make one with: head -c 32 /dev/urandom > " + file + " && chmod 600 " + file;
        final long size;
        try {
            size = Files.size(file);
        } catch (final NoSuchFileException e) {
            throw new IOException("secret file " + file + " does not exist; " + howTo, e);
        }
        if (!Files.isRegularFile(file)) {
            throw new IOException("secret file " + file + " is not a regular file; " + howTo);
        }
        if (size > MAX_BYTES) {
            throw new IOException("secret file " + file + " holds " + size + " bytes, more than a secret (" + MAX_BYTES
                + " at most); is it the right file? " + howTo);
        }
        final byte[] secret;
        try {
            secret = Files.readAllBytes(file);
        } catch (final IOException e) {
            throw new IOException("cannot read secret file " + file + " (" + e.getMessage() + ")", e);
        }
        if (secret.length < AccessToken.MIN_SECRET_BYTES) {
            throw new IOException("secret file " + file + " holds " + secret.length + " bytes; at least "
                + AccessToken.MIN_SECRET_BYTES + " random bytes are needed; " + howTo);
        }
        warnIfOthersMayRead(file);
        return secret;
    }

    private static void warnIfOthersMayRead(final Path file) {
        final PosixFileAttributeView view = Files.getFileAttributeView(file, PosixFileAttributeView.class);
        if (view == null) {
            return;
        }
        try {
            final Set<PosixFilePermission> perms = view.readAttributes().permissions();
            perms.retainAll(OTHERS);
            if (!perms.isEmpty()) {
                LOG.warn("secret file {} is readable by {}: anyone who reads it can mint tokens; chmod 600 {}", file,
                    perms.contains(PosixFilePermission.OTHERS_READ) ? "everyone" : "its group", file);
            }
        } catch (final IOException e) {
            LOG.debug("cannot read the permissions of {}: {}", file, e.toString());
        }
    }
}
