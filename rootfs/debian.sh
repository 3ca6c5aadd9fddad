#!/bin/sh
# A Debian minbase root filesystem (debootstrap) with python3 and a C compiler (gcc,
# libc6-dev), for jobs that need a real distribution: `make rootfs ROOTFS=debian` registers
# it as the image debian (rootfs/image.sh). Takes a minute or more, needs the network.
# The mirror is the first one this host's own apt sources use.
set -eu
root=${1:?usage: debian.sh DIR}
command -v debootstrap >/dev/null || { echo "debian.sh: debootstrap not found (apt-get install debootstrap)" >&2; exit 1; }
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
         | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }')
if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { print $2; exit }')
fi
[ -n "$mirror" ] || { echo "debian.sh: no Debian mirror found in /etc/apt/sources.list*" >&2; exit 1; }
debootstrap --variant=minbase --include=python3,gcc,libc6-dev "$suite" "$root" "$mirror"
# Jobs have no network: the downloaded packages and indexes would only take space. Nor is
# the build host's name or resolver any business of the image.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
: > "$root/etc/resolv.conf"
echo localhost > "$root/etc/hostname"
