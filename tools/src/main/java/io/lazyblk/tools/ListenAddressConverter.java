package io.lazyblk.tools;

import picocli.CommandLine;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Parses where to listen: {@code HOST:PORT}, {@code [IPv6]:PORT}, or a bare {@code PORT}, which binds loopback only.
 * Port 0 picks a free port.
 */
public final class ListenAddressConverter implements CommandLine.ITypeConverter<InetSocketAddress> {
    private static final Pattern HOST_PORT = Pattern.compile("(?:\\[([^]]+)]|([^:\\[\\]]*)):(\\d{1,5})|(\\d{1,5})");

    @Override
    public InetSocketAddress convert(final String value) {
        final Matcher m = HOST_PORT.matcher(value.trim());
        final String examples = " (examples: 127.0.0.1:7400, 7400 for loopback, 0.0.0.0:7400 for every interface)";
        if (!m.matches()) {
            throw new CommandLine.TypeConversionException("'" + value + "' is not HOST:PORT" + examples);
        }
        final int port = Integer.parseInt(m.group(3) != null ? m.group(3) : m.group(4));
        if (port > 65535) {
            throw new CommandLine.TypeConversionException("port " + port + " is over 65535" + examples);
        }
        final String host = m.group(1) != null ? m.group(1) : m.group(2);
        if (host == null || host.isEmpty()) {
            return new InetSocketAddress(InetAddress.getLoopbackAddress(), port);
        }
        final InetSocketAddress a = new InetSocketAddress(host, port);
        if (a.isUnresolved()) {
            throw new CommandLine.TypeConversionException("cannot resolve host '" + host + "'" + examples);
        }
        return a;
    }
}
