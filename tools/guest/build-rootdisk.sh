#!/usr/bin/env bash
# Builds a bootable lazyblk test root disk: a raw image holding an ext4 root
# filesystem (busybox, /sbin/init = tools/guest/disk-init, incompressible ballast)
# followed by a raw scratch area.  No root privileges or loop mounts: mke2fs -d.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: build-rootdisk.sh [--size SIZE] [--ballast SIZE|auto] [--scratch SIZE] [--rootfs DIR] [--force] OUT.img
       build-rootdisk.sh --help

Builds OUT.img, a raw disk image the lazyblk test guest can boot from
(kernel argument lazyblk.root=vda; see tools/guest/init and run-guest.sh).

Layout (no partition table; the kernel and initramfs come from build-guest.sh):
  [0, SIZE - SCRATCH)     ext4 root filesystem, 4 KiB blocks
  [SIZE - SCRATCH, SIZE)  raw scratch area, never part of the filesystem; the
                          rw test writes its 1 MiB pattern there
The filesystem holds
  /bin/busybox and its applet links (busybox-static of this host)
  /sbin/init              tools/guest/disk-init: prints "LAZYBLK-INIT uptime=<s>"
                          first, then runs the lazyblk.test= test (boot, rw, ro)
  /etc/lazyblk/layout     shell variables image_bytes fs_bytes scratch_off
                          scratch_bytes ballast_bytes (read by the rw test)
  /var/lib/lazyblk/       where the rw test writes its pattern file
  /usr/share/lazyblk-ballast/NNNN.bin
                          incompressible ballast in 8 MiB files (the last one
                          shorter) that the boot never reads: it makes the
                          image big while a boot touches only a small part

Options:
  --size SIZE      image size (default 1G); SIZE is bytes or a number with a
                   K, M, G or T suffix (powers of 1024), a multiple of 1 MiB
  --ballast SIZE   ballast bytes (default auto: 3/4 of the filesystem; 0 for none)
  --scratch SIZE   scratch area at the end of the image (default 16M, >= 1M)
  --rootfs DIR     start the filesystem from the tree in DIR (e.g. a Debian
                   system from debootstrap --variant=minbase; build-realboot.sh
                   does this) instead of busybox alone; busybox-static, disk-init
                   and the ballast are added to it. The realboot test then reads
                   what a real userland's first commands read (dash, libc, dpkg,
                   perl, apt). Needs root (the tree's files are owned by root).
  --force          rebuild even if OUT.img is up to date

OUT.img is rebuilt only when it is missing, has another size, or was built by
another version of this script, disk-init or busybox, or with other options
(recorded in OUT.img.stamp). Booting changes the image (mounting writes the
superblock; the rw test writes the pattern and its file), so keep a pristine
copy (cp --sparse=always) when a benchmark needs identical starting images.
The ballast is deterministic (AES-CTR keystream from openssl) when openssl is
installed, else it comes from /dev/urandom. Building needs about SIZE of
temporary space next to OUT.img (the staged ballast) besides OUT.img itself.

Needs: mke2fs >= 1.43 (e2fsprogs; -d), busybox-static (/bin/busybox), and
preferably openssl.
EOF
}

die() { echo "build-rootdisk.sh: $*" >&2; exit 1; }

# Bytes in SIZE ("4G", "512M", "1048576", "1GiB"), or die.
parse_size() {
    local s=$1 n unit mult
    [[ $s =~ ^([0-9]+)([KkMmGgTt]?)(i?B)?$ ]] || die "bad size: $s"
    n=${BASH_REMATCH[1]}
    unit=${BASH_REMATCH[2]^^}
    case $unit in
        "") mult=1 ;;
        K) mult=1024 ;;
        M) mult=$((1024 ** 2)) ;;
        G) mult=$((1024 ** 3)) ;;
        T) mult=$((1024 ** 4)) ;;
    esac
    echo $((10#$n * mult))
}

size_arg=1G
ballast_arg=auto
scratch_arg=16M
force=0
rootfs=""
out=""
while (($#)); do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --size) (($# >= 2)) || die "--size needs a value"; size_arg=$2; shift 2 ;;
        --size=*) size_arg=${1#*=}; shift ;;
        --ballast) (($# >= 2)) || die "--ballast needs a value"; ballast_arg=$2; shift 2 ;;
        --ballast=*) ballast_arg=${1#*=}; shift ;;
        --scratch) (($# >= 2)) || die "--scratch needs a value"; scratch_arg=$2; shift 2 ;;
        --scratch=*) scratch_arg=${1#*=}; shift ;;
        --rootfs) (($# >= 2)) || die "--rootfs needs a value"; rootfs=$2; shift 2 ;;
        --rootfs=*) rootfs=${1#*=}; shift ;;
        --force) force=1; shift ;;
        --) shift; break ;;
        -*) echo "build-rootdisk.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
        *) [[ -z $out ]] || { echo "build-rootdisk.sh: more than one OUT.img" >&2; usage >&2; exit 2; }
           out=$1; shift ;;
    esac
done
if (($#)); then
    [[ -z $out && $# -eq 1 ]] || { usage >&2; exit 2; }
    out=$1
fi
[[ -n $out ]] || { usage >&2; exit 2; }

MiB=$((1024 * 1024))
BLOCK=4096
CHUNK=$((8 * MiB))

size=$(parse_size "$size_arg")
scratch=$(parse_size "$scratch_arg")
((size % MiB == 0)) || die "--size must be a multiple of 1 MiB: $size_arg"
((scratch % MiB == 0 && scratch >= MiB)) || die "--scratch must be a multiple of 1 MiB and at least 1 MiB: $scratch_arg"
fs_bytes=$((size - scratch))
((fs_bytes >= 64 * MiB)) || die "--size $size_arg leaves less than 64 MiB for the filesystem"
if [[ $ballast_arg == auto ]]; then
    ballast=$((fs_bytes / 4 * 3 / MiB * MiB))
else
    ballast=$(parse_size "$ballast_arg")
fi
rootfs_bytes=0
rootfs_sum=none
if [[ -n $rootfs ]]; then
    [[ -d $rootfs && -x $rootfs/bin/sh ]] || die "--rootfs $rootfs is not a directory with a /bin/sh (build one with build-realboot.sh)"
    rootfs=$(cd "$rootfs" && pwd)
    rootfs_bytes=$(($(du -sb "$rootfs" | cut -f1) + 0))
    rootfs_sum=$(cd "$rootfs" && find . -printf '%P %s %T@ %m\n' | LC_ALL=C sort | sha256sum | cut -c1-16)
fi
# Filesystem overhead (inode tables, journal, bitmaps) stays below 1/8 here.
((ballast + rootfs_bytes <= fs_bytes - fs_bytes / 8 - 8 * MiB)) \
    || die "--ballast $ballast_arg does not fit a $((fs_bytes / MiB)) MiB filesystem with room to spare"

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script="$script_dir/$(basename "${BASH_SOURCE[0]}")"
disk_init="$script_dir/disk-init"
busybox=/bin/busybox
[[ -f $disk_init ]] || die "missing $disk_init"
[[ -x $busybox ]] || die "$busybox not found: apt-get install busybox-static"
if ldd "$busybox" >/dev/null 2>&1; then
    die "$busybox is dynamically linked: apt-get install busybox-static"
fi
# e2fsprogs installs in /usr/sbin, which is not on an ordinary user's PATH on Debian.
PATH=$PATH:/usr/sbin:/sbin
command -v mke2fs >/dev/null || die "mke2fs not found: apt-get install e2fsprogs"
# mke2fs -d (populate from a directory) appeared in e2fsprogs 1.43.
mke2fs_version=$(mke2fs -V 2>&1 | awk 'NR == 1 { print $2 }')
IFS=. read -r v_major v_minor _ <<<"$mke2fs_version"
if ! [[ $v_major =~ ^[0-9]+$ && $v_minor =~ ^[0-9]+$ ]] || ((v_major == 1 && v_minor < 43)); then
    die "mke2fs $mke2fs_version lacks -d (needs e2fsprogs >= 1.43)"
fi
if command -v openssl >/dev/null; then ballast_source=openssl-aes-128-ctr; else ballast_source=urandom; fi

stamp="$out.stamp"
stamp_text=$(
    echo "size=$size scratch=$scratch ballast=$ballast source=$ballast_source mke2fs=$mke2fs_version rootfs=$rootfs_sum"
    sha256sum "$script" "$disk_init" "$busybox" | awk '{ print $1 }'
)
if ((!force)) && [[ -f $out && -f $stamp ]] \
    && [[ $(stat -c %s "$out") == "$size" && $(cat "$stamp") == "$stamp_text" ]]; then
    echo "build-rootdisk.sh: $out is up to date"
    exit 0
fi

out_dir=$(dirname "$out")
mkdir -p "$out_dir"
# Stage next to OUT.img: the ballast is as big as the image, /tmp may be small.
work=$(mktemp -d "$out_dir/.rootdisk.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
if [[ -n $rootfs ]]; then
    # First, so that the tree's own /bin -> usr/bin links stay links (mkdir -p below leaves them alone).
    echo "build-rootdisk.sh: staging the tree in $rootfs ($((rootfs_bytes / MiB)) MiB)"
    mkdir -p "$root"
    cp -a "$rootfs/." "$root/"
fi
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,mnt,etc/lazyblk,var/lib/lazyblk} \
    "$root/usr/share/lazyblk-ballast"
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"

cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
# A tree of its own keeps its commands; busybox fills in only what it lacks (poweroff, for one).
while read -r applet; do
    case $applet in
        sbin/init|linuxrc|bin/busybox|"") continue ;;
    esac
    [[ -e $root/$applet || -L $root/$applet ]] || ln -s /bin/busybox "$root/$applet"
done < <("$busybox" --list-full)
[[ -L $root/bin/sh ]] || ln -s busybox "$root/bin/sh"
install -m 0755 "$disk_init" "$root/sbin/init"

echo "lazyblk-guest" >"$root/etc/hostname"
if [[ -z $rootfs ]]; then
    echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
    echo "root:x:0:" >"$root/etc/group"
fi
cat >"$root/etc/lazyblk/layout" <<EOF
# Written by build-rootdisk.sh; sourced by /sbin/init. Bytes.
image_bytes=$size
fs_bytes=$fs_bytes
scratch_off=$fs_bytes
scratch_bytes=$scratch
ballast_bytes=$ballast
EOF

echo "build-rootdisk.sh: staging $((ballast / MiB)) MiB of ballast ($ballast_source)"
# Deterministic per-file keystream: AES-128-CTR of zeros under a fixed key, the IV
# being the file number.
key=6c617a79626c6b2d62616c6c61737421
left=$ballast
i=0
while ((left > 0)); do
    n=$((left < CHUNK ? left : CHUNK))
    f=$(printf '%s/usr/share/lazyblk-ballast/%04d.bin' "$root" "$i")
    if [[ $ballast_source == openssl-aes-128-ctr ]]; then
        head -c "$n" /dev/zero \
            | openssl enc -aes-128-ctr -nosalt -K "$key" -iv "$(printf '%032x' "$i")" >"$f"
    else
        head -c "$n" /dev/urandom >"$f"
    fi
    [[ $(stat -c %s "$f") == "$n" ]] || die "short ballast file $f"
    left=$((left - n))
    i=$((i + 1))
done

# Fixed times, UUID and hash seed so that equal inputs give (nearly) equal images.
epoch=1700000000
find "$root" -exec touch -h -d "@$epoch" {} +
img="$work/disk.img"
truncate -s "$size" "$img"
# lazy_itable_init=0: no ext4lazyinit thread writing inode tables behind the
# guest's back after mount; the image's unused space stays sparse anyway.
E2FSPROGS_FAKE_TIME=$epoch SOURCE_DATE_EPOCH=$epoch mke2fs -q -F -t ext4 -b "$BLOCK" -L lazyblk-root \
    -U 6c617a79-626c-6b2d-726f-6f7464697363 -E lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0,hash_seed=6c617a79-626c-6b2d-6861-736873656564 \
    -d "$root" "$img" $((fs_bytes / BLOCK)) \
    || die "mke2fs failed (is --ballast too large for --size?)"
# mke2fs -d copies the staged files' ctimes (now, and not settable with touch).
if command -v debugfs >/dev/null; then
    (cd "$root" && find . -mindepth 1 -printf '/%P\n') | LC_ALL=C sort \
        | awk -v t="@$epoch" '{ print "set_inode_field " $0 " ctime " t }' >"$work/ctimes"
    echo "set_inode_field / ctime @$epoch" >>"$work/ctimes"
    E2FSPROGS_FAKE_TIME=$epoch debugfs -w -f "$work/ctimes" "$img" >/dev/null 2>"$work/debugfs.err" \
        || die "debugfs failed: $(head -n 3 "$work/debugfs.err")"
fi
command -v e2fsck >/dev/null && { e2fsck -fn "$img" >/dev/null 2>&1 || die "e2fsck found errors in the new image"; }

rm -f "$stamp"
mv "$img" "$out"
echo "$stamp_text" >"$stamp"
echo "build-rootdisk.sh: built $out ($((size / MiB)) MiB: $((fs_bytes / MiB)) MiB ext4 with $((ballast / MiB)) MiB ballast, $((scratch / MiB)) MiB scratch at byte $fs_bytes)"
