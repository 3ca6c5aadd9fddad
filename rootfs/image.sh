#!/bin/sh
# Build a root filesystem with rootfs/KIND.sh and register it as the image KIND in a node's
# image store, imported like any other image (lclusterd image import, its checks included).
#   rootfs/image.sh KIND STATE_DIR      (make rootfs ROOTFS=debian runs it)
# An image of the same name is replaced. PYTHON is the venv's python (make prep makes it).
set -eu
kind=${1:?usage: image.sh KIND STATE_DIR}
state=${2:?usage: image.sh KIND STATE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$here/../.venv/bin/python}
case "$kind" in
    busybox) echo "image.sh: busybox is the node's rootfs (rootfs/build.sh), listed as the image busybox" >&2; exit 2;;
    *) [ -f "$here/$kind.sh" ] || { echo "image.sh: no rootfs/$kind.sh to build the image $kind with" >&2; exit 2; };;
esac

# On disk, not /tmp: the tree is hundreds of MiB, and debootstrap runs its binaries in it.
work=$(mktemp -d /var/tmp/lclusterd-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
sh "$here/$kind.sh" "$work/rootfs"
[ -f "$work/rootfs/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost\n' > "$work/rootfs/etc/hosts"
cd "$here/.."  # python -m finds lclusterd from the checkout
# No Env: a job without PATH gets the runtime's default one (runtime/spec.py).
"$python" -m lclusterd.runtime.images.pack --cmd /bin/sh "$work/rootfs" "$work/layout"
"$python" -m lclusterd image import --replace --state-dir "$state" "$kind" "$work/layout"
