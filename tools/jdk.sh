# Sourced by tools/lazyblk and tools/test: sets JAVA_HOME to a JDK 25+ or explains what to install.
java_major() { # prints the major version of the java binary $1, or nothing
  # The JDK's release file says it without starting a JVM (about 0.2 s of every launch, measured with tools/footprint);
  # a JDK without one (or JDK 8's "1.8.0") is asked directly.
  local v=""
  local release="${1%/bin/java}/release"
  [ -r "$release" ] && v="$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$release" | head -n1)"
  if [ -z "$v" ] || [ "$v" = 1 ]; then
    v="$("$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p' | head -n1)"
  fi
  echo "$v"
}

find_jdk25() {
  local candidates=() home v
  [ -n "${JAVA_HOME:-}" ] && candidates+=("$JAVA_HOME")
  candidates+=(/usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/*)
  for home in "${candidates[@]}"; do
    [ -x "$home/bin/java" ] || continue
    v="$(java_major "$home/bin/java")"
    if [ -n "$v" ] && [ "$v" -ge 25 ]; then
      echo "$home"
      return 0
    fi
  done
  return 1
}

require_jdk25() {
  local jdk
  if ! jdk="$(find_jdk25)"; then
    cat >&2 <<MSG
lazyblk needs a JDK 25 or newer and found none (JAVA_HOME=${JAVA_HOME:-unset}, /usr/lib/jvm/*).
The default java on Debian 12 is 17. Install Temurin 25 (Adoptium's apt repository, package temurin-25-jdk,
which lands in /usr/lib/jvm/temurin-25-jdk-amd64), or set JAVA_HOME to a JDK 25, and run again.
MSG
    exit 1
  fi
  export JAVA_HOME="$jdk"
}
