#!/usr/bin/env bash
# Boots the test guest from a root disk served by the reference backend
# (qemu-storage-daemon under strace) and reports time to the disk's init and the
# image bytes read before it.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: measure-boot.sh [--copy] IMAGE [TEST] [EXTRA_KERNEL_ARGS...]
       measure-boot.sh --help

Serves IMAGE (a raw root disk from build-rootdisk.sh) with qemu-storage-daemon
(vhost-user-blk export, writable, 1 queue) traced by strace, boots the guest from
it with run-guest.sh SOCKET TEST lazyblk.root=vda EXTRA_KERNEL_ARGS (TEST:
boot (default), rw or ro; ro exports the image read-only), timestamps every
console line, and prints key=value lines:

  result            the LAZYBLK-RESULT line (without the marker)
  ms_to_initramfs   wall ms from launching run-guest.sh (QEMU starts ~10 ms
                    later) to the initramfs's LAZYBLK-INITRAMFS line
  ms_to_init        ... to the disk's /sbin/init printing LAZYBLK-INIT
  guest_uptime_init the guest's /proc/uptime at that moment (seconds)
  read_bytes_before_init, read_ops_before_init, read_unique_bytes_before_init
                    image reads (pread64/preadv by qemu-storage-daemon) that
                    completed before the LAZYBLK-INIT line was seen; unique =
                    size of the union of the ranges read (the footprint a lazy
                    backend would have to fetch)
  write_bytes_before_init
  read_bytes_total, read_unique_bytes_total, write_bytes_total, flushes_total
                    the same over the whole run (until QEMU exits)

The guest changes IMAGE (the root is mounted read-write: the superblock, and
for rw the pattern); --copy boots a sparse temporary copy instead.
Exit status 0 iff the guest printed "LAZYBLK-RESULT ok".

Needs: qemu-storage-daemon, strace, qemu-system-x86_64; LAZYBLK_GUEST_DIR and
GUEST_TIMEOUT are passed on to run-guest.sh.
EOF
}

die() { echo "measure-boot.sh: $*" >&2; exit 1; }

copy=0
case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    --copy) copy=1; shift ;;
esac
case "${1:-}" in
    "") usage >&2; exit 2 ;;
    -*) echo "measure-boot.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
esac
image=$1
test=${2:-boot}
shift $(( $# < 2 ? $# : 2 ))
[[ -f $image ]] || die "no such image: $image"
for tool in qemu-storage-daemon strace qemu-system-x86_64; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
guest_dir=${LAZYBLK_GUEST_DIR:-$HOME/.cache/lazyblk/guest}
"$script_dir/build-guest.sh" "$guest_dir" >&2

work=$(mktemp -d)
strace_pid=""
cleanup() {
    if [[ -n $strace_pid ]]; then
        local qsd
        qsd=$(pgrep -P "$strace_pid" 2>/dev/null || true)
        [[ -z $qsd ]] || kill $qsd 2>/dev/null || true
        wait "$strace_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if ((copy)); then
    cp --sparse=always "$image" "$work/disk.img"
    image="$work/disk.img"
fi
image=$(realpath "$image")
writable=on
[[ $test != ro ]] || writable=off
sock="$work/vub.sock"

strace -f -ttt -s 0 -o "$work/trace" \
    -e trace=openat,close,pread64,preadv,preadv2,pwrite64,pwritev,pwritev2,fdatasync,fsync \
    qemu-storage-daemon \
    --blockdev "driver=file,node-name=f0,filename=$image" \
    --export "type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path=$sock,writable=$writable,num-queues=1" \
    >"$work/qsd.log" 2>&1 &
strace_pid=$!
for _ in $(seq 100); do
    [[ -S $sock ]] && break
    kill -0 "$strace_pid" 2>/dev/null || die "qemu-storage-daemon exited: $(cat "$work/qsd.log")"
    sleep 0.1
done
[[ -S $sock ]] || die "no socket $sock after 10 s"

start=$EPOCHREALTIME
set +e
"$script_dir/run-guest.sh" "$sock" "$test" lazyblk.root=vda "$@" 2>&1 \
    | while IFS= read -r line; do
        line=${line//$'\r'/}
        printf '%s %s\n' "$EPOCHREALTIME" "$line" >>"$work/console"
        printf '%s\n' "$line" >&2
    done
rc=${PIPESTATUS[0]}
set -e

qsd=$(pgrep -P "$strace_pid" || true)
[[ -z $qsd ]] || kill $qsd
wait "$strace_pid" 2>/dev/null || true
strace_pid=""

awk -v start="$start" -v image="$image" '
    # Console lines: "<epoch> <text>"
    FILENAME == ARGV[1] {
        if (!ramfs && $0 ~ /LAZYBLK-INITRAMFS /) { ramfs = $1 }
        if (!init && $0 ~ /LAZYBLK-INIT( |$)/) {
            init = $1
            if (match($0, /uptime=[0-9.]+/)) uptime = substr($0, RSTART + 7, RLENGTH - 7)
        }
        if (!result && match($0, /LAZYBLK-RESULT .*/)) result = substr($0, RSTART + 15)
        next
    }
    # strace -f -ttt lines: "<pid> <epoch> <call>(...) = <ret>", or split into
    # "... <unfinished ...>" and "<pid> <epoch> <... call resumed>...) = <ret>".
    {
        pid = $1; t = $2
        line = $0; sub(/^[0-9]+ +[0-9.]+ +/, "", line)
        if (line ~ /<unfinished \.\.\.>$/) {
            pending[pid] = line; sub(/ *<unfinished \.\.\.>$/, "", pending[pid]); next
        }
        if (match(line, /^<\.\.\. [a-z0-9_]+ resumed>/)) {
            line = pending[pid] substr(line, RLENGTH + 1); delete pending[pid]
        }
        call = line; sub(/\(.*/, "", call)
        if (!match(line, /\) += -?[0-9]+/)) next
        ret = substr(line, RSTART, RLENGTH); sub(/.*= */, "", ret); ret += 0
        args = line; sub(/^[a-z0-9_]+\(/, "", args); sub(/\) += .*$/, "", args)
        fd = args; sub(/,.*/, "", fd)
        if (call == "openat") {
            if (index(args, "\"" image "\"") && ret >= 0) imgfd[ret] = 1
            next
        }
        if (call == "close") { delete imgfd[fd]; next }
        if (!(fd in imgfd)) next
        if (call ~ /^f(data)?sync$/) { if (ret == 0) flushes++; next }
        if (ret <= 0) next
        n = split(args, a, /, /)
        if (call ~ /^(pread64|preadv|pwrite64|pwritev)$/) off = a[n]
        else if (call ~ /^(preadv2|pwritev2)$/) off = a[n - 1]
        else next
        before = init && t < init || !init
        if (call ~ /^pread/) {
            rd += ret; rdops++; nr++; roff[nr] = off + 0; rlen[nr] = ret; rbefore[nr] = before
            if (before) { rdb += ret; rdopsb++ }
        } else {
            wr += ret
            if (before) wrb += ret
        }
    }
    function unique(only_before,    i, m, s, e, u, cs, ce, o) {
        m = 0
        for (i = 1; i <= nr; i++) if (!only_before || rbefore[i]) { m++; s[m] = roff[i]; e[m] = roff[i] + rlen[i] }
        # insertion sort by start (few hundred entries)
        for (i = 2; i <= m; i++) {
            cs = s[i]; ce = e[i]; o = i - 1
            while (o >= 1 && s[o] > cs) { s[o + 1] = s[o]; e[o + 1] = e[o]; o-- }
            s[o + 1] = cs; e[o + 1] = ce
        }
        u = 0; cs = -1; ce = -1
        for (i = 1; i <= m; i++) {
            if (s[i] > ce) { if (ce > cs) u += ce - cs; cs = s[i]; ce = e[i] }
            else if (e[i] > ce) ce = e[i]
        }
        if (ce > cs) u += ce - cs
        return u
    }
    END {
        printf "result=%s\n", result == "" ? "none" : result
        printf "ms_to_initramfs=%s\n", ramfs ? sprintf("%d", (ramfs - start) * 1000) : -1
        printf "ms_to_init=%s\n", init ? sprintf("%d", (init - start) * 1000) : -1
        printf "guest_uptime_init=%s\n", uptime == "" ? -1 : uptime
        printf "read_bytes_before_init=%d\nread_ops_before_init=%d\nread_unique_bytes_before_init=%d\n", rdb, rdopsb, unique(1)
        printf "write_bytes_before_init=%d\n", wrb
        printf "read_bytes_total=%d\nread_unique_bytes_total=%d\nwrite_bytes_total=%d\nflushes_total=%d\n", rd, unique(0), wr, flushes
    }
' "$work/console" "$work/trace"
exit "$rc"
