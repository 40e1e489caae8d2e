#!/usr/bin/env bash
# Builds the lazyblk end-to-end test guest: a Debian cloud kernel (vmlinuz) and a
# busybox initramfs (initramfs.gz) whose /init is tools/guest/init.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: build-guest.sh [OUTPUT_DIR]
       build-guest.sh --help

Builds OUTPUT_DIR/vmlinuz and OUTPUT_DIR/initramfs.gz for the lazyblk
vhost-user-blk end-to-end test guest.

OUTPUT_DIR defaults to $LAZYBLK_GUEST_DIR, else $HOME/.cache/lazyblk/guest.
Nothing is rebuilt when both files exist and are newer than this script and
tools/guest/init.

Kernel: the linux-image package that linux-image-cloud-amd64 depends on is
fetched with 'apt-get download' ('apt-get update' is run once if that fails)
and unpacked with 'dpkg -x'; if it cannot be downloaded but is installed, the
installed files are used. The initramfs contains /init, a static busybox at
/bin/busybox (package busybox-static) and the virtio modules
  virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio virtio_pci virtio_blk
under /lib/modules (decompressed, loaded by /init in that order). For booting
from a root disk (lazyblk.root=vda, see build-rootdisk.sh) it also holds the
modules the root filesystem needs, with their dependencies in load order as
listed in /lib/modules/root.order: ext4 (which also mounts ext2), unless the
kernel has it built in (Debian's cloud kernel does: root.order is then empty).

Needs: apt-get, apt-cache, dpkg, gzip, busybox-static (/bin/busybox); xz only
if the kernel ships .ko.xz modules. Any user can run it; if the download fails, it runs
'apt-get update' once, which only root may.
EOF
}

case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    -*) echo "build-guest.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
esac

die() { echo "build-guest.sh: $*" >&2; exit 1; }

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script="$script_dir/$(basename "${BASH_SOURCE[0]}")"
init="$script_dir/init"
out=${1:-${LAZYBLK_GUEST_DIR:-$HOME/.cache/lazyblk/guest}}
busybox=/bin/busybox
modules=(virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio virtio_pci virtio_blk)
root_modules=(ext4)
meta_pkg=linux-image-cloud-amd64

[[ -f $init ]] || die "missing $init"

up_to_date() {
    local f
    for f in "$out/vmlinuz" "$out/initramfs.gz"; do
        [[ -s $f && $f -nt $script && $f -nt $init ]] || return 1
    done
}

if up_to_date; then
    echo "build-guest.sh: $out is up to date"
    exit 0
fi

[[ -x $busybox ]] || die "$busybox not found: apt-get install busybox-static"
if ldd "$busybox" >/dev/null 2>&1; then
    die "$busybox is dynamically linked: apt-get install busybox-static"
fi
for tool in apt-get apt-cache dpkg gzip; do
    command -v "$tool" >/dev/null || die "$tool not found (a Debian host is required)"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt-get download run by root drops privileges to _apt, which must be able to write here; run by anyone else it
# downloads as that user.
chmod 755 "$work"
mkdir "$work/deb" "$work/root"
if [[ $(id -u) -eq 0 ]] && id _apt >/dev/null 2>&1; then chown _apt "$work/deb"; fi

kernel_pkg() {
    apt-cache depends "$meta_pkg" 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'
}

download_kernel() {
    pkg=$(kernel_pkg)
    [[ -n $pkg ]] || return 1
    echo "build-guest.sh: downloading $pkg"
    (cd "$work/deb" && apt-get download -q "$pkg")
}

pkg=""
if ! download_kernel; then
    echo "build-guest.sh: download failed, running apt-get update and retrying" >&2
    apt-get update -q || true
    download_kernel || true
fi

debs=("$work"/deb/*.deb)
if [[ -f ${debs[0]} ]]; then
    dpkg -x "${debs[0]}" "$work/kernel"
    kroot="$work/kernel"
elif [[ -n $pkg ]] && dpkg -s "$pkg" >/dev/null 2>&1; then
    echo "build-guest.sh: using the installed $pkg" >&2
    kroot=""
else
    die "could not download the kernel package ${pkg:-that $meta_pkg depends on}.
  'apt-get download' needs a reachable Debian mirror (see /etc/apt/sources.list*).
  Alternatively install the kernel on this host: apt-get install $meta_pkg"
fi

kver=${pkg#linux-image-}
vmlinuz="$kroot/boot/vmlinuz-$kver"
[[ -f $vmlinuz ]] || die "$vmlinuz not found in $pkg"
moddir=""
for d in "$kroot/lib/modules/$kver" "$kroot/usr/lib/modules/$kver"; do
    if [[ -d $d ]]; then moddir=$d; break; fi
done
[[ -n $moddir ]] || die "no modules directory for kernel $kver in $pkg"

root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
install -m 0755 "$init" "$root/init"
# copy_module NAME [FILE]: FILE defaults to NAME.ko or NAME.ko.xz found under $moddir.
copy_module() {
    local m=$1 ko=${2:-}
    [[ -n $ko ]] || ko=$(find "$moddir" \( -name "$m.ko" -o -name "$m.ko.xz" \) -print -quit)
    [[ -n $ko && -f $ko ]] || die "module $m not found for kernel $kver"
    case $ko in
        *.xz)
            command -v xz >/dev/null || die "xz needed to decompress $ko: apt-get install xz-utils"
            xz -dc "$ko" > "$root/lib/modules/$m.ko" ;;
        *) cp "$ko" "$root/lib/modules/$m.ko" ;;
    esac
}
for m in "${modules[@]}"; do
    copy_module "$m"
done

# Root filesystem modules: depth-first over each module's "depends=" (its .modinfo;
# the package ships no modules.dep), so every module follows its dependencies;
# built-in ones (modules.builtin) are skipped.
root_order=()
declare -A visited=() ko_of=()
module_name() { local b=${1##*/}; b=${b%.xz}; b=${b%.ko}; echo "${b//-/_}"; }
while IFS= read -r -d '' ko; do
    ko_of[$(module_name "$ko")]=$ko
done < <(find "$moddir" \( -name '*.ko' -o -name '*.ko.xz' \) -print0)
is_builtin() {
    [[ -f $moddir/modules.builtin ]] \
        && awk -v m="$1" '{ n = $0; sub(/.*\//, "", n); sub(/\.ko$/, "", n); gsub(/-/, "_", n) } n == m { f = 1 } END { exit !f }' \
            "$moddir/modules.builtin"
}
module_deps() {
    case $1 in
        *.xz) xz -dc "$1" ;;
        *) cat "$1" ;;
    esac | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n 1 | tr ',' ' '
}
add_root_module() {
    local m=$1 ko dep
    [[ -z ${visited[$m]:-} ]] || return 0
    visited[$m]=1
    if is_builtin "$m"; then return 0; fi
    ko=${ko_of[$m]:-}
    [[ -n $ko ]] || die "module $m is neither built into kernel $kver nor shipped with it"
    for dep in $(module_deps "$ko"); do
        add_root_module "$(module_name "$dep")"
    done
    copy_module "$m" "$ko"
    root_order+=("$m")
}
for m in "${root_modules[@]}"; do
    add_root_module "$m"
done
echo "${root_order[*]}" > "$root/lib/modules/root.order"
echo "build-guest.sh: root filesystem modules: ${root_order[*]:-none (built in)}"

mkdir -p "$out"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0) \
    | gzip -9 > "$out/initramfs.gz.$$"
cp "$vmlinuz" "$out/vmlinuz.$$"
mv "$out/vmlinuz.$$" "$out/vmlinuz"
mv "$out/initramfs.gz.$$" "$out/initramfs.gz"
echo "build-guest.sh: built $out/vmlinuz ($kver) and $out/initramfs.gz"
