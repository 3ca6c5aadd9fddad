"""An image's tree while it is being written: every directory reached one component at a
time from a descriptor of the image's root, never through a link.

Each step is `openat(parent, NAME, O_DIRECTORY | O_NOFOLLOW)` with NAME a single
component that is never '.' or '..' (paths.py refused those): a symbolic link anywhere on
the way fails the step (ELOOP) instead of being followed, so no path, whatever links the
layers put in the tree, resolves outside it. No step goes through os.path: a check on a
path string says nothing about what the kernel will resolve it to. Entries are then made
and removed with the *at calls relative to the directory's descriptor, the last component
not followed either (O_NOFOLLOW | O_EXCL on create, AT_SYMLINK_NOFOLLOW elsewhere).

Only root writes the tree, and only the one import holding the store's lock, so nothing
moves under a held descriptor but what the tree itself removes, whose descriptors it
closes (never the removed entry's parent's, which callers go on using).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat

from lclusterd.runtime.images.paths import Parts, Refused, show

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
CACHED_DIRS = 64  # tar members come grouped by directory: a few open directories cover a layer


class Tree:
    """The root of an image being written. Use as a context manager; close() closes every
    descriptor it holds."""

    def __init__(self, root: str):
        self.root = root
        self.root_fd = os.open(root, DIR_FLAGS)
        self._dirs: dict[Parts, int] = {}

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._forget(())
        os.close(self.root_fd)

    def _forget(self, prefix: Parts) -> None:
        """Close the cached descriptors of `prefix` and of every directory below it."""
        for parts in [parts for parts in self._dirs if parts[:len(prefix)] == prefix]:
            os.close(self._dirs.pop(parts))

    def trim(self) -> None:
        """Close the cached descriptors if there are many. Only between entries: a caller
        may hold any descriptor dir() gave it until its entry is written."""
        if len(self._dirs) > CACHED_DIRS:
            self._forget(())

    def dir(self, parts: Parts, create: bool = False) -> int:
        """A descriptor (owned by the tree, do not close it; valid until trim() or the
        removal of the directory) of the directory at `parts`.
        create: make missing directories (root's, 0755, as a tar without directory entries
        expects). Refused if a component is a link or not a directory; FileNotFoundError if
        one is missing and not create."""
        if not parts:
            return self.root_fd
        cached = self._dirs.get(parts)
        if cached is not None:
            return cached
        parent = self.dir(parts[:-1], create)
        fd = self._open_dir(parent, parts, create)
        self._dirs[parts] = fd
        return fd

    def _open_dir(self, parent: int, parts: Parts, create: bool) -> int:
        name = parts[-1]
        try:
            return os.open(name, DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:  # ELOOP: a link (O_NOFOLLOW), ENOTDIR: a file
            raise self._why(parent, parts, exc) from None
        os.mkdir(name, 0o755, dir_fd=parent)
        return os.open(name, DIR_FLAGS, dir_fd=parent)

    def _why(self, parent: int, parts: Parts, exc: OSError) -> Exception:
        found = self.lstat(parent, parts[-1])
        if found is not None and stat.S_ISLNK(found.st_mode):
            return Refused(f"{show(parts)} is a symbolic link; nothing is written through links")
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            return Refused(f"{show(parts)} is not a directory")
        return exc

    def parent(self, parts: Parts, create: bool = True) -> int:
        """The directory an entry at `parts` lives in, for the *at calls."""
        return self.dir(parts[:-1], create)

    @staticmethod
    def lstat(dir_fd: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def remove(self, parts: Parts) -> bool:
        """Remove the entry at `parts`, a whole directory tree included, never following a
        link (a link itself goes). False if there was none. The parent must exist."""
        parent = self.dir(parts[:-1])
        found = self.lstat(parent, parts[-1])
        if found is None:
            return False
        if stat.S_ISDIR(found.st_mode):
            # rmtree with dir_fd walks by descriptor and never follows a link (Linux).
            shutil.rmtree(parts[-1], dir_fd=parent)
            self._forget(parts)
        else:
            os.unlink(parts[-1], dir_fd=parent)
        return True
