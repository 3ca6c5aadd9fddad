#!/bin/sh
# Build a root filesystem for lclusterd jobs.
#   rootfs/build.sh busybox|debian DIR
# Idempotent: a tree already built by the same script version is left as it is.
# The tree is written to DIR.tmp and renamed into place, so a half-built tree is
# never mistaken for a finished one.
set -eu
kind=${1:?usage: build.sh busybox|debian DIR}
dir=${2:?usage: build.sh busybox|debian DIR}
here=$(cd "$(dirname "$0")" && pwd)
# The stamp names what built the tree: the scripts and, for busybox, the binary copied in.
binary=
[ "$kind" = busybox ] && binary=${BUSYBOX:-$(command -v busybox || true)}
stamp="$kind-$(cat "$here/build.sh" "$here/$kind.sh" ${binary:+"$binary"} | cksum | cut -d' ' -f1)"

if [ -f "$dir/.lclusterd-rootfs" ] && [ "$(cat "$dir/.lclusterd-rootfs")" = "$stamp" ]; then
    exit 0
fi
case "$kind" in busybox|debian) ;; *) echo "build.sh: unknown rootfs kind '$kind' (busybox or debian)" >&2; exit 2;; esac

tmp="$dir.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
sh "$here/$kind.sh" "$tmp"

# What every job expects, whatever the base.
mkdir -p "$tmp/proc" "$tmp/sys" "$tmp/dev" "$tmp/tmp" "$tmp/root" "$tmp/etc"
chmod 1777 "$tmp/tmp"
[ -f "$tmp/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost\n' > "$tmp/etc/hosts"
echo "$stamp" > "$tmp/.lclusterd-rootfs"

rm -rf "$dir.old"
[ -e "$dir" ] && mv "$dir" "$dir.old"
mv "$tmp" "$dir"
rm -rf "$dir.old"
echo "rootfs: built $kind in $dir"
