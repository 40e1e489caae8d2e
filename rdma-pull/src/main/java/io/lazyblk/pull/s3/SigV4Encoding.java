package io.lazyblk.pull.s3;

import java.nio.charset.StandardCharsets;

/** Percent-encoding as S3 and SigV4 want it (RFC 3986): A-Z a-z 0-9 - . _ ~ kept, every other UTF-8 byte as %XX. */
final class SigV4Encoding {
    private static final char[] HEX = "0123456789ABCDEF".toCharArray();

    private SigV4Encoding() {
    }

    /** A query value or name. */
    static String encode(final String s) {
        return encode(s, false);
    }

    /** An object key in a path: its slashes kept. */
    static String encodePath(final String key) {
        return encode(key, true);
    }

    private static String encode(final String s, final boolean keepSlash) {
        final StringBuilder b = new StringBuilder(s.length() + 16);
        for (final byte x : s.getBytes(StandardCharsets.UTF_8)) {
            final int c = x & 0xff;
            if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
                || c == '~' || (keepSlash && c == '/')) {
                b.append((char) c);
            } else {
                b.append('%').append(HEX[c >> 4]).append(HEX[c & 15]);
            }
        }
        return b.toString();
    }
}
