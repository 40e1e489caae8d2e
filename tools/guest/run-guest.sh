#!/usr/bin/env bash
# Boots the lazyblk test guest against an existing vhost-user-blk socket.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: run-guest.sh SOCKET [TEST] [EXTRA_KERNEL_ARGS...]
       run-guest.sh --help

Boots QEMU (TCG, q35, 512 MiB shared memfd RAM) with one vhost-user-blk-pci
disk connected to the vhost-user-blk backend listening on UNIX socket SOCKET,
the guest console on stdio. TEST is rw (default), ro or boot; EXTRA_KERNEL_ARGS
are appended to the kernel command line (e.g. lazyblk.off=4096).
The guest files are built first by build-guest.sh if needed.

To boot from the disk (a root disk made by build-rootdisk.sh), add
lazyblk.root=vda: the initramfs mounts it and runs its /sbin/init, which prints
LAZYBLK-INIT and runs TEST there (boot reads nothing else; see disk-init), e.g.
  run-guest.sh SOCKET boot lazyblk.root=vda

Environment:
  LAZYBLK_GUEST_DIR  guest files directory (default $HOME/.cache/lazyblk/guest)
  QUEUES             num-queues of the vhost-user-blk device (default 1)
  GUEST_TIMEOUT      seconds before QEMU is killed (default 120)

Exit status: 0 iff the guest printed "LAZYBLK-RESULT ok".
EOF
}

case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    "") usage >&2; exit 2 ;;
esac

sock=$1
test=${2:-rw}
shift $(( $# < 2 ? $# : 2 ))
[[ -S $sock ]] || { echo "run-guest.sh: $sock is not a UNIX socket" >&2; exit 2; }

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
guest_dir=${LAZYBLK_GUEST_DIR:-$HOME/.cache/lazyblk/guest}
"$script_dir/build-guest.sh" "$guest_dir" >&2

bios=()
if [[ -f /usr/share/qemu/qboot.rom ]]; then bios=(-bios /usr/share/qemu/qboot.rom); fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

set +e
timeout -k 5 "${GUEST_TIMEOUT:-120}" qemu-system-x86_64 \
    -nographic -no-reboot -nic none \
    -machine q35,accel=tcg -cpu max -m 512M "${bios[@]}" \
    -object memory-backend-memfd,id=mem0,size=512M,share=on -numa node,memdev=mem0 \
    -chardev socket,id=vub0,path="$sock" \
    -device vhost-user-blk-pci,chardev=vub0,num-queues="${QUEUES:-1}" \
    -kernel "$guest_dir/vmlinuz" -initrd "$guest_dir/initramfs.gz" \
    -append "console=ttyS0 quiet panic=-1 lazyblk.test=$test $*" \
    </dev/null 2>&1 | tee "$log"
qemu_rc=${PIPESTATUS[0]}
set -e

if grep -q '^LAZYBLK-RESULT ok' <(tr -d '\r' <"$log"); then
    exit 0
fi
echo "run-guest.sh: no 'LAZYBLK-RESULT ok' (qemu exit status $qemu_rc)" >&2
exit 1
