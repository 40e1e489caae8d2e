package io.lazyblk.tools;

import picocli.CommandLine;

import java.math.BigDecimal;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Parses sizes such as {@code 4096}, {@code 4k}, {@code 64M}, {@code 1.5G}, {@code 1GiB}. Units are binary: k = 1024,
 * M = 1024², G = 1024³, T = 1024⁴ (with or without "iB"); a fraction is allowed if it makes whole bytes.
 */
public final class SizeConverter implements CommandLine.ITypeConverter<Long> {
    /** What size options say in their help. */
    public static final String UNITS = "binary units: k = 1024, M = 1024^2, G, T; e.g. 4096, 64k, 1.5G";
    private static final Pattern SIZE = Pattern.compile("(\\d{1,19}(?:\\.\\d{1,9})?)([kmgt]?)(?:i?b)?");

    @Override
    public Long convert(final String value) {
        return parse(value);
    }

    public static long parse(final String value) {
        final Matcher m = SIZE.matcher(value.trim().toLowerCase(Locale.ROOT));
        if (!m.matches()) {
            throw new CommandLine.TypeConversionException("'" + value + "' is not a size (" + UNITS + ")");
        }
        final int shift = switch (m.group(2)) {
            case "k" -> 10;
            case "m" -> 20;
            case "g" -> 30;
            case "t" -> 40;
            default -> 0;
        };
        final BigDecimal bytes = new BigDecimal(m.group(1)).multiply(BigDecimal.valueOf(1L << shift));
        if (bytes.compareTo(BigDecimal.valueOf(Long.MAX_VALUE)) > 0) {
            throw new CommandLine.TypeConversionException("size out of range: " + value);
        }
        try {
            return bytes.longValueExact();
        } catch (final ArithmeticException e) {
            throw new CommandLine.TypeConversionException("'" + value + "' is not a whole number of bytes (" + bytes.toPlainString()
                + "; " + UNITS + ")");
        }
    }
}
