package io.lazyblk.pull.provider;

import io.lazyblk.pagemap.Manifest;
import io.lazyblk.pull.manifest.ManifestBuilder;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Objects;

/**
 * One image the provider exports: the name clients ask for, the raw file, and its manifest. Immutable.
 *
 * @param name 1 to 255 bytes of UTF-8 without control characters (it appears in tokens, logs and messages)
 * @param verifyServed whether every page is checked against its hash before it is sent, and answered "not here" if it
 *     differs: for a file someone else writes to (an engine's local file exported as a peer), so that whatever its
 *     guest wrote never leaves the host, whatever the records say. Costs a read into memory and a SHA-256 per page
 *     instead of sendfile(2).
 * @param profileFile where the image's boot profile is kept ({@link io.lazyblk.pull.profile.ProfileFile}, beside its
 *     manifest cache), or null to keep it in memory only
 * @param migration the live migration this export serves (a running engine's disk, with a {@link Manifest#live live
 *     manifest}): answers the destination's {@link ProviderProtocol#OP_MIGRATION_FINAL} and
 *     {@link ProviderProtocol#OP_MIGRATION_DONE}; null for every other export, which answers both "unavailable"
 */
public record ImageExport(String name, Path image, Manifest manifest, Availability availability, boolean verifyServed,
                          Path profileFile, MigrationControl migration) {
    public ImageExport {
        Objects.requireNonNull(image, "image");
        Objects.requireNonNull(manifest, "manifest");
        Objects.requireNonNull(availability, "availability");
        validateName(name);
    }

    /** An export without a live migration. */
    public ImageExport(final String name, final Path image, final Manifest manifest, final Availability availability,
                       final boolean verifyServed, final Path profileFile) {
        this(name, image, manifest, availability, verifyServed, profileFile, null);
    }

    /** This export, serving the live migration {@code control} (see {@link #migration()}). */
    public ImageExport withMigration(final MigrationControl control) {
        return new ImageExport(name, image, manifest, availability, verifyServed, profileFile, Objects.requireNonNull(control, "control"));
    }

    /** A golden image: every page can be served; its boot profile kept in memory only. */
    public ImageExport(final String name, final Path image, final Manifest manifest) {
        this(name, image, manifest, Availability.ALL, false, null);
    }

    /** An export whose boot profile is kept in memory only. */
    public ImageExport(final String name, final Path image, final Manifest manifest, final Availability availability,
                       final boolean verifyServed) {
        this(name, image, manifest, availability, verifyServed, null);
    }

    /**
     * Exports {@code image} as {@code name}, with its manifest from {@code manifests} (cached, or built now) and its
     * boot profile kept where {@code manifests} keeps the manifest ({@link ManifestBuilder#profileFile}).
     */
    public static ImageExport of(final String name, final Path image, final int pageSize, final ManifestBuilder manifests,
                                 final ManifestBuilder.Progress progress) throws IOException {
        validateName(name);
        final ManifestBuilder.Result r = manifests.load(image, pageSize, progress);
        return new ImageExport(name, image, r.manifest(), Availability.ALL, false, manifests.profileFile(image, r));
    }

    /** Throws {@link IllegalArgumentException}, saying why, unless {@code name} can name an export. */
    public static void validateName(final String name) {
        final int bytes = name.getBytes(StandardCharsets.UTF_8).length;
        if (bytes < 1 || bytes > ProviderProtocol.MAX_NAME_BYTES) {
            throw new IllegalArgumentException("image name '" + name + "' is " + bytes + " bytes of UTF-8; 1 to "
                + ProviderProtocol.MAX_NAME_BYTES + " allowed");
        }
        if (name.codePoints().anyMatch(Character::isISOControl)) {
            throw new IllegalArgumentException("image name '" + name.replaceAll("\\p{Cntrl}", "?") + "' contains control characters");
        }
    }
}
