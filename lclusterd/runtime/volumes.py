"""A job's volumes on the host side: each HOST directory found beneath one of the node's
`--volume-root` directories and cloned into a detached mount, in the fork server (the host's
mount namespace), before the job has a process (docs/container.md, "Volumes").

Resolution never leaves the root: the root is opened, and HOST's remaining path resolved
relative to it with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), so a symbolic link or
'..' that leads out of it (absolute links too) fails there. The mount is cloned from that
one descriptor (open_tree), so what was checked is what is mounted: a link swapped in a
moment later cannot redirect it. mount_setattr then makes the clone nosuid, nodev, private
(nothing the job's mounts do reaches the host's, nor the other way) and, with :ro,
read-only in the kernel. The job init moves each clone onto its place in the job's root
(jobinit/mounts.c, op volume). Closing a clone that was never attached dissolves it.

open_tree and mount_setattr are glibc's (2.36, kernel.py); openat2 has no libc wrapper and is
called here by its number, the same on every architecture (the generic syscall table's 437).
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass

from lclusterd import limits
from lclusterd.errors import SetupFailed
from lclusterd.runtime import kernel

SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10  # users.py: an image's /etc/passwd, its links resolved inside the image
MS_PRIVATE = 1 << 18
NO_VOLUMES = "this node allows no volumes: start lclusterd with --volume-root DIR"


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


# With RESOLVE_BENEATH or RESOLVE_IN_ROOT the kernel answers EAGAIN when a rename or a mount
# anywhere on the host raced a '..' of the walk, and asks the caller to retry (openat2(2)):
# under load (other jobs starting, renaming) a few percent of such walks hit it.
OPENAT2_TRIES = 64


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """openat2(2), by number: glibc has no wrapper. OSError naming the call otherwise."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    for _ in range(OPENAT2_TRIES):
        ret = _libc.syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(os.fsencode(path)),
                            ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if ret >= 0:
            return ret
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            break
    raise OSError(err, f"openat2({path}, resolve {resolve:#x}): {os.strerror(err)}")


def clone_tree(fd: int, read_only: bool) -> int:
    """A detached clone of the mount tree at `fd` (its submounts too, as the host sees them),
    nosuid, nodev, private, and read-only if asked. The caller owns the descriptor."""
    tree = kernel.open_tree(fd, kernel.OPEN_TREE_CLONE | kernel.AT_RECURSIVE | os.O_CLOEXEC)
    attrs = kernel.MOUNT_ATTR_NOSUID | kernel.MOUNT_ATTR_NODEV | (kernel.MOUNT_ATTR_RDONLY if read_only else 0)
    try:
        kernel.mount_setattr(tree, kernel.AT_RECURSIVE, kernel.MountAttr(attrs, 0, MS_PRIVATE, 0))
    except OSError:
        os.close(tree)
        raise
    return tree


@dataclass(frozen=True)
class VolumeRoots:
    """The directories a node's jobs may take volumes from (`--volume-root`, repeatable)."""

    roots: tuple[str, ...] = ()

    @staticmethod
    def checked(roots: list[str]) -> VolumeRoots:
        """The roots, each an existing absolute directory; ValueError with a sentence otherwise."""
        for root in roots:
            if not os.path.isabs(root) or os.path.normpath(root) != root or root == "/":
                raise ValueError(f"--volume-root must be an absolute, normalised directory other than /, not {root!r}")
            if not os.path.isdir(root):
                raise ValueError(f"--volume-root {root} is not an existing directory")
        return VolumeRoots(tuple(roots))

    def root_of(self, host: str) -> str | None:
        """The longest root `host` lies in (or is), by its path as written."""
        inside = [root for root in self.roots if host == root or host.startswith(root.rstrip("/") + "/")]
        return max(inside, key=len, default=None)

    def open(self, volume: limits.Volume) -> int:
        """The volume's host directory, found beneath its root, as a detached mount the caller
        owns. SetupFailed with the reason a user can act on."""
        what = f"volume {volume.host}"
        if not self.roots:
            raise SetupFailed(what, NO_VOLUMES)
        root = self.root_of(volume.host)
        if root is None:
            raise SetupFailed(what, f"not under any --volume-root of this node (allowed: {', '.join(self.roots)})")
        rest = os.path.relpath(volume.host, root)
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            found = openat2(root_fd, rest, os.O_PATH | os.O_DIRECTORY, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
        except OSError as error:
            raise SetupFailed(what, _why(error.errno, root)) from None
        finally:
            os.close(root_fd)
        try:
            return clone_tree(found, volume.read_only)
        finally:
            os.close(found)


def _why(err: int | None, root: str) -> str:
    if err == errno.EXDEV:
        return f"leads out of --volume-root {root} (a symbolic link or '..' on its way points outside)"
    if err == errno.ELOOP:
        return f"has a symbolic link on its way that cannot be followed beneath {root}"
    if err == errno.ENOENT:
        return "does not exist"
    if err == errno.ENOTDIR:
        return "is not a directory"
    return os.strerror(err or errno.EIO)


def places(entries: list[str]) -> tuple[str, ...]:
    """Where each volume goes in the job, in the entries' order."""
    return tuple(limits.parse_volume(entry).path for entry in entries)


def open_all(roots: VolumeRoots, entries: list[str]) -> list[int]:
    """A detached mount per volume entry, in order; none left open if one fails."""
    trees: list[int] = []
    try:
        for volume in limits.check_volumes(entries):
            trees.append(roots.open(volume))
    except BaseException:
        for tree in trees:
            os.close(tree)
        raise
    return trees
