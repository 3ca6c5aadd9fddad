#!/bin/sh
# Build the default rootfs's busybox: Debian's own busybox source and its busybox-static
# configuration (the same applets as the busybox-static package), linked statically against
# musl instead of glibc.
#   rootfs/busybox-musl.sh OUT [WORKDIR]
#
# Why not busybox-static itself: a static glibc binary sizes the CPU caches with CPUID at
# every start, and on a virtual machine each CPUID is a trap to the hypervisor. Measured on
# the 2-core VM this project is developed on: `busybox sh -c true` costs 0.58 ms of CPU with
# busybox-static and 0.10 ms with this build, and every job in the default rootfs pays it
# for each command it starts.
#
# The source comes through apt from the Debian sources this host already uses (their deb
# lines, read as deb-src, in a private apt state under WORKDIR so the host's apt setup is
# left alone), so its hashes are checked against the signed Release file like any package.
set -eu
out=${1:?usage: busybox-musl.sh OUT [WORKDIR]}
work=${2:-/var/cache/lclusterd/busybox}
command -v musl-gcc >/dev/null || { echo "busybox-musl.sh: musl-gcc not found (apt-get install musl-tools)" >&2; exit 1; }
command -v dpkg-source >/dev/null || { echo "busybox-musl.sh: dpkg-source not found (apt-get install dpkg-dev)" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work/apt/lists/partial" "$work/apt/sources.list.d" "$work/src" "$work/include"
# deb-src twins of the host's deb entries, one-line (.list) and deb822 (.sources) styles.
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && sed -n 's/^deb \(.*\)/deb-src \1/p' "$f"
done > "$work/apt/sources.list"
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed 's/^Types:.*/Types: deb-src/' "$f" > "$work/apt/sources.list.d/$(basename "$f")"
done
apt_private() {
    apt-get -q -o Dir::Etc::SourceList="$work/apt/sources.list" \
        -o Dir::Etc::SourceParts="$work/apt/sources.list.d" \
        -o Dir::State::Lists="$work/apt/lists" -o APT::Sandbox::User=root "$@"
}
apt_private update >/dev/null
(cd "$work/src" && apt_private source --download-only busybox >/dev/null)
# apt has checked the files' hashes against the signed index; dpkg-source only notes that
# the host has no Debian keyring to check the .dsc's own signature with.
dpkg-source -x "$work"/src/busybox_*.dsc "$work/src/busybox" >/dev/null 2>"$work/dpkg-source.log" ||
    { cat "$work/dpkg-source.log" >&2; exit 1; }
src="$work/src/busybox"

# musl ships no kernel headers; the applets need Linux's uapi ones from linux-libc-dev.
multiarch=$(gcc -print-multiarch)
for d in linux asm-generic mtd; do ln -s "/usr/include/$d" "$work/include/$d"; done
ln -s "/usr/include/$multiarch/asm" "$work/include/asm"

cat "$src/debian/config/os/linux" "$src/debian/config/pkg/static" > "$src/.config"
# Two options need glibc's GNU regex API (re_search, RE_SYNTAX_*): grep's GNU extras (-z)
# and vi's regex search (vi falls back to plain-text search).
sed -i -e 's/^CONFIG_EXTRA_COMPAT=y/# CONFIG_EXTRA_COMPAT is not set/' \
       -e 's/^CONFIG_FEATURE_VI_REGEX_SEARCH=y/# CONFIG_FEATURE_VI_REGEX_SEARCH is not set/' "$src/.config"
yes "" | make -s -C "$src" oldconfig >/dev/null
make -s -C "$src" -j"$(nproc)" CC="musl-gcc -isystem $work/include" busybox >"$work/build.log" 2>&1 ||
    { tail -n 30 "$work/build.log" >&2; echo "busybox-musl.sh: build failed (log: $work/build.log)" >&2; exit 1; }
"$src/busybox" true  # it runs here, as it will in a job
mkdir -p "$(dirname "$out")"
cp "$src/busybox" "$out.tmp"
mv "$out.tmp" "$out"
rm -rf "$work"
echo "busybox-musl.sh: built $out: $("$out" | head -1)"
