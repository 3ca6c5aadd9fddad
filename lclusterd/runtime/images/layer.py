"""Applying one layer (a tar stream) onto an image's tree, safely.

The rules, for every member (paths.py takes its name apart, tree.py reaches its directory):
- a name that is absolute or has a '..' component, or whose directory is reached only
  through a link, or is not a directory: the layer is refused (Refused), and with it the
  import; nothing is written outside the tree, ever, because nothing is reached by path;
- an existing entry is replaced, never written through: it is removed first (a link
  itself, not its target) and the new one made with O_EXCL | O_NOFOLLOW;
- a symbolic link is made with whatever target it has: it is never followed here, and in
  a job it resolves inside the job's root;
- a hard link must point to an entry already in the tree (a file or link of this or a
  lower layer), reached like any other path;
- device nodes and FIFOs are dropped and reported: a job gets its devices from the
  runtime, and every mount it can write is nodev;
- ownership is the numeric uid and gid of the tar (its user and group names mean nothing
  on this host); modes are kept, setuid and setgid included (chmod after chown, which
  clears them): jobs run with no_new_privs on nosuid mounts, and the store's directory is
  root's alone (store.py), so no host user can run them either; extended attributes (file
  capabilities, ACLs) are not applied;
- whiteouts and opaque directories apply to the layers below only, as the OCI spec says:
  what this layer itself wrote stays.
"""

from __future__ import annotations

import os
import stat
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO

from lclusterd.runtime.images.paths import Parts, Refused, classify, link_target, show
from lclusterd.runtime.images.tree import Tree

CHUNK = 1 << 20
MAX_ID = 0xFFFFFFFE  # (uid_t)-1 means "leave unchanged" to chown
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Report:
    """What an import did not apply as given, for its output and the image's record."""

    dropped: list[tuple[str, str]] = field(default_factory=list)  # (path, what it was)
    _dropped_parts: set[Parts] = field(default_factory=set)

    def drop(self, parts: Parts, kind: str) -> None:
        self.dropped.append((show(parts), kind))
        self._dropped_parts.add(parts)

    def was_dropped(self, parts: Parts) -> bool:
        return parts in self._dropped_parts


def apply(tree: Tree, stream: BinaryIO, report: Report) -> None:
    """Apply the tar in `stream` onto `tree`; Refused for a member that breaks a rule."""
    LayerWriter(tree, report).apply(stream)


class LayerWriter:
    def __init__(self, tree: Tree, report: Report):
        self.tree = tree
        self.report = report
        self.written: set[Parts] = set()  # this layer's entries and their directories
        self.dir_times: list[tuple[Parts, float]] = []

    def apply(self, stream: BinaryIO) -> None:
        # "r|": a stream, read once, front to back (the digests are taken on the way).
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                self.tree.trim()
                self.member(tar, member)
        # Last: making the entries of a directory changed its time.
        for parts, mtime in reversed(self.dir_times):
            self._restore_time(parts, mtime)

    def member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        entry = classify(member.name)
        if entry.kind == "meta":
            return
        if entry.kind == "whiteout":
            return self.whiteout(entry.parts)
        if entry.kind == "opaque":
            return self.opaque(entry.parent)
        if entry.kind == "root":
            if not member.isdir():
                raise Refused(f"entry {member.name!r} would replace the image's root with a non-directory")
            self.dir_times.append(((), member.mtime))
            return self._set_owner_mode(self.tree.root_fd, member)
        self._mark_written(entry.parts)
        if member.isdir():
            self.directory(entry.parts, member)
        elif member.isreg():
            self.file(entry.parts, member, tar)
        elif member.issym():
            self.symlink(entry.parts, member)
        elif member.islnk():
            self.hardlink(entry.parts, member)
        else:
            self.report.drop(entry.parts, _kind(member))

    def _mark_written(self, parts: Parts) -> None:
        for depth in range(1, len(parts) + 1):
            self.written.add(parts[:depth])

    # -- entries ---------------------------------------------------------------------

    def directory(self, parts: Parts, member: tarfile.TarInfo) -> None:
        parent = self.tree.parent(parts, create=True)
        found = self.tree.lstat(parent, parts[-1])
        if found is not None and not stat.S_ISDIR(found.st_mode):
            self.tree.remove(parts)
            found = None
        if found is None:
            os.mkdir(parts[-1], 0o700, dir_fd=parent)  # the image's mode comes with its owner below
        self._set_owner_mode(self.tree.dir(parts), member)
        self.dir_times.append((parts, member.mtime))

    def file(self, parts: Parts, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        parent = self._clear(parts)
        fd = os.open(parts[-1], FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            source = tar.extractfile(member)
            assert source is not None  # a regular member always has data, maybe none
            while chunk := source.read(CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            self._set_owner_mode(fd, member)
            _set_time(member, fd)
        finally:
            os.close(fd)

    def symlink(self, parts: Parts, member: tarfile.TarInfo) -> None:
        if not member.linkname or "\0" in member.linkname:
            raise Refused(f"symbolic link {show(parts)} has an empty or malformed target")
        parent = self._clear(parts)
        os.symlink(member.linkname, parts[-1], dir_fd=parent)
        os.chown(parts[-1], *_ids(member), dir_fd=parent, follow_symlinks=False)
        _set_time(member, parts[-1], parent)

    def hardlink(self, parts: Parts, member: tarfile.TarInfo) -> None:
        target = link_target(member.linkname)
        if target == parts:
            return  # a link to itself: the entry is there already
        if self.report.was_dropped(target):
            return self.report.drop(parts, f"hard link to {show(target)}, which was dropped")
        parent = self._clear(parts)
        try:
            source_dir = self.tree.parent(target, create=False)
        except FileNotFoundError:
            source_dir = None
        found = None if source_dir is None else self.tree.lstat(source_dir, target[-1])
        if found is None:
            raise Refused(f"hard link {show(parts)} points to {show(target)}, which is not in the image")
        if stat.S_ISDIR(found.st_mode):
            raise Refused(f"hard link {show(parts)} points to the directory {show(target)}")
        # follow_symlinks=False: linkat without AT_SYMLINK_FOLLOW links a link itself.
        os.link(target[-1], parts[-1], src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)

    def _clear(self, parts: Parts) -> int:
        """Make way for a new non-directory entry at `parts`: its directory's descriptor."""
        parent = self.tree.parent(parts, create=True)
        self.tree.remove(parts)
        return parent

    # -- whiteouts -------------------------------------------------------------------

    def whiteout(self, parts: Parts) -> None:
        """Remove what the layers below have at `parts` (never through a link)."""
        if parts in self.written:
            return  # the spec: a whiteout hides only the layers below
        try:
            self.tree.parent(parts, create=False)
        except FileNotFoundError:
            return  # nothing below to hide
        self.tree.remove(parts)

    def opaque(self, parts: Parts) -> None:
        """Empty the directory at `parts` of what the layers below put there."""
        self._mark_written(parts)
        self.tree.dir(parts, create=True)  # a marker may come before its directory's entry
        self._prune(parts)

    def _prune(self, parts: Parts) -> None:
        fd = self.tree.dir(parts)
        for name in os.listdir(fd):
            child = (*parts, name)
            if child not in self.written:
                self.tree.remove(child)
            elif stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                self._prune(child)

    # -- metadata --------------------------------------------------------------------

    def _set_owner_mode(self, fd: int, member: tarfile.TarInfo) -> None:
        os.fchown(fd, *_ids(member))
        os.fchmod(fd, stat.S_IMODE(member.mode))  # after chown, which clears setuid and setgid

    def _restore_time(self, parts: Parts, mtime: float) -> None:
        try:
            fd = self.tree.dir(parts)
        except (OSError, Refused):
            return  # a later entry of this layer removed or replaced it
        _set_time_ns(mtime, fd)


def _ids(member: tarfile.TarInfo) -> tuple[int, int]:
    if not (0 <= member.uid <= MAX_ID and 0 <= member.gid <= MAX_ID):
        raise Refused(f"entry {member.name!r} has an owner out of range ({member.uid}:{member.gid})")
    return member.uid, member.gid


def _set_time(member: tarfile.TarInfo, target: int | str, dir_fd: int | None = None) -> None:
    _set_time_ns(member.mtime, target, dir_fd)


def _set_time_ns(mtime: float, target: int | str, dir_fd: int | None = None) -> None:
    try:
        ns = int(mtime * 1_000_000_000)
        if isinstance(target, int):
            os.utime(target, ns=(ns, ns))
        else:
            os.utime(target, ns=(ns, ns), dir_fd=dir_fd, follow_symlinks=False)
    except (OverflowError, ValueError, OSError):
        pass  # a time the filesystem cannot hold: the entry keeps the time it was made at


def _kind(member: tarfile.TarInfo) -> str:
    if member.ischr() or member.isblk():
        kind = "character" if member.ischr() else "block"
        return f"{kind} device {member.devmajor}:{member.devminor}"
    if member.isfifo():
        return "FIFO"
    return f"tar entry of type {member.type!r}"
