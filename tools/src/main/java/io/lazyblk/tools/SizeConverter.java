package io.lazyblk.tools;

import picocli.CommandLine;

import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** Parses sizes such as {@code 4096}, {@code 4k}, {@code 64M}, {@code 1GiB} (units are powers of 1024). */
public final class SizeConverter implements CommandLine.ITypeConverter<Long> {
    private static final Pattern SIZE = Pattern.compile("(\\d{1,19})([kmgt]?)(?:i?b)?");

    @Override
    public Long convert(final String value) {
        return parse(value);
    }

    public static long parse(final String value) {
        final Matcher m = SIZE.matcher(value.trim().toLowerCase(Locale.ROOT));
        if (!m.matches()) {
            throw new CommandLine.TypeConversionException("'" + value + "' is not a size (examples: 4096, 4k, 64M, 1G)");
        }
        final int shift = switch (m.group(2)) {
            case "k" -> 10;
            case "m" -> 20;
            case "g" -> 30;
            case "t" -> 40;
            default -> 0;
        };
        try {
            final long n = Long.parseLong(m.group(1));
            if (n > (Long.MAX_VALUE >> shift)) {
                throw new CommandLine.TypeConversionException("size out of range: " + value);
            }
            return n << shift;
        } catch (final NumberFormatException e) {
            throw new CommandLine.TypeConversionException("size out of range: " + value);
        }
    }
}
