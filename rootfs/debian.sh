#!/bin/sh
# A Debian minbase root filesystem (debootstrap), for jobs that need a real
# distribution (a compiler, a package manager). Takes minutes, needs the network.
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
debootstrap --variant=minbase "$suite" "$root" "$mirror"
