#!/bin/sh
# A busybox root filesystem: /bin/sh and the usual applets, from the static busybox named by
# $BUSYBOX (make prep passes its musl build, see busybox-musl.sh), else the host's busybox-static.
set -eu
root=${1:?usage: busybox.sh DIR}
bb=${BUSYBOX:-$(command -v busybox || true)}
[ -n "$bb" ] && [ -x "$bb" ] || { echo "busybox.sh: busybox not found (${BUSYBOX:-apt-get install busybox-static})" >&2; exit 1; }
# A dynamically linked busybox would need the host's libc inside the tree.
if ldd "$bb" >/dev/null 2>&1; then
    echo "busybox.sh: $bb is dynamically linked; install busybox-static" >&2; exit 1
fi

mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" \
         "$root/var/tmp" "$root/home" "$root/root"
cp "$bb" "$root/bin/busybox"
for applet in $("$bb" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost\n' > "$root/etc/hosts"
: > "$root/etc/resolv.conf"
