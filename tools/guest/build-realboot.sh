#!/usr/bin/env bash
# Builds a realboot-like root disk: a Debian bookworm minbase system (debootstrap)
# with the lazyblk disk-init as /sbin/init and incompressible ballast the boot never
# reads, as a sparse raw image. The boot benchmark's realistic image (bench-boot
# --realboot): a boot reads a few MB of a userland, the image holds GBs.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: build-realboot.sh [--size SIZE] [--ballast SIZE] [--suite SUITE] [--mirror URL] [--force] OUT.img
       build-realboot.sh --help

Builds OUT.img (default 4G with 2G of ballast: about 2.3 GB allocated, the rest
holes) from a Debian system made by debootstrap --variant=minbase, cached in
~/.cache/lazyblk/SUITE-minbase (about 200 MiB; made once, ~30 s). Then calls
build-rootdisk.sh --rootfs with it (see its --help for the layout). Boot it with
the kernel argument lazyblk.test=realboot: the disk's init runs dpkg -l, perl,
apt-config dump, find /etc and ls -l, then prints its result line.

Options:
  --size SIZE      image size (default 4G; binary units, as build-rootdisk.sh)
  --ballast SIZE   incompressible ballast (default 2G)
  --suite SUITE    Debian suite (default bookworm)
  --mirror URL     Debian mirror (default http://deb.debian.org/debian)
  --force          rebuild the image (the cached system is kept)

Needs: root, debootstrap (apt-get install debootstrap), network access to the
mirror, and what build-rootdisk.sh needs.
USAGE
}

die() { echo "build-realboot.sh: $*" >&2; exit 1; }

size=4G
ballast=2G
suite=bookworm
mirror=http://deb.debian.org/debian
force=()
out=""
while (($#)); do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --size) (($# >= 2)) || die "--size needs a value"; size=$2; shift 2 ;;
        --ballast) (($# >= 2)) || die "--ballast needs a value"; ballast=$2; shift 2 ;;
        --suite) (($# >= 2)) || die "--suite needs a value"; suite=$2; shift 2 ;;
        --mirror) (($# >= 2)) || die "--mirror needs a value"; mirror=$2; shift 2 ;;
        --force) force=(--force); shift ;;
        -*) echo "build-realboot.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
        *) [[ -z $out ]] || { echo "build-realboot.sh: more than one OUT.img" >&2; usage >&2; exit 2; }
           out=$1; shift ;;
    esac
done
[[ -n $out ]] || { usage >&2; exit 2; }
((EUID == 0)) || die "needs root (debootstrap, and a tree of root-owned files); run it with sudo"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"

cache=${XDG_CACHE_HOME:-$HOME/.cache}/lazyblk
tree="$cache/$suite-minbase"
if [[ ! -f $tree/.lazyblk-complete ]]; then
    rm -rf "$tree"
    mkdir -p "$cache"
    echo "build-realboot.sh: debootstrap --variant=minbase $suite into $tree (a few hundred MB from $mirror) ..."
    debootstrap --variant=minbase "$suite" "$tree" "$mirror" >"$cache/debootstrap-$suite.log" 2>&1 \
        || die "debootstrap failed; see $cache/debootstrap-$suite.log (is $mirror reachable?)"
    # Neither the downloaded .debs nor apt's lists belong in a golden image.
    rm -rf "$tree"/var/cache/apt/archives/*.deb
    touch "$tree/.lazyblk-complete"
fi
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$script_dir/build-rootdisk.sh" --size "$size" --ballast "$ballast" --rootfs "$tree" "${force[@]}" "$out"
