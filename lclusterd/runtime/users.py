"""The ids a job runs as: its User (RuntimeSpec.user, an image's config's `User`) resolved
against the /etc/passwd and /etc/group of the job's own root filesystem, the way runc's
libcontainer/user (which Docker and podman use) does it:

  "uid"         the passwd entry of that uid gives the gid, home and name; with no entry:
                gid 0, home "/"
  "name"        the passwd entry of that name (first match); none: the job fails
  "X:gid"       the gid as given, without reading /etc/group
  "X:group"     the group entry of that name; none: the job fails
  supplementary groups: with no group given and a passwd entry found, every group of
                /etc/group that lists the user's name (runc's "implicit form"); none else

"" (no User) is the job's root and reads nothing: the start path of most jobs stays as it
was (Docker reads root's entries even then, for root's supplementary groups).

The files are the rootfs's (the image's tree, or the node's --rootfs), never the host's: each
is opened with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) from a descriptor of the
rootfs, so an image whose /etc/passwd is a symbolic link to /etc/shadow or "../../.." reads
its own files, as the job would see them. Only a regular file is read, non-blocking (a FIFO
cannot stall the fork server), at most MAX_FILE_BYTES. This runs in the fork server, the
runtime layer that reads files, when the job starts; an image's tree does not change after
import, but the node's --rootfs can, and the ids are checked against this fork server's user
namespaces (every id must be mapped in the job's slot).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from lclusterd import limits
from lclusterd.errors import SetupFailed
from lclusterd.runtime import volumes
from lclusterd.runtime.userns import SLOT_SIZE

MAX_FILE_BYTES = 1 << 20  # far above any real passwd or group file
NGROUPS_MAX = 65536  # the kernel's: setgroups(2) takes no more


@dataclass(frozen=True)
class Credentials:
    """What the job runs as: the job init's op `ids` sets them (jobinit/users.c)."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()  # supplementary group ids
    home: str = "/"  # HOME, unless the job's environment names one

    @property
    def is_root(self) -> bool:
        return self.uid == 0


@dataclass(frozen=True)
class Entry:
    """One line of /etc/passwd (members empty) or /etc/group (home empty)."""

    name: str
    id: int
    gid: int = 0  # passwd: the primary group
    home: str = ""
    members: tuple[str, ...] = ()


def passwd_entries(data: bytes | None) -> list[Entry]:
    """name:password:uid:gid:gecos:home:shell lines; a line without a numeric uid and gid is
    skipped (glibc's files backend skips it too; runc would take it as uid 0)."""
    entries = []
    for fields in _lines(data):
        if len(fields) >= 4 and limits.is_id(fields[2]) and limits.is_id(fields[3]):
            entries.append(Entry(fields[0], int(fields[2]), int(fields[3]), fields[5] if len(fields) > 5 else ""))
    return entries


def group_entries(data: bytes | None) -> list[Entry]:
    """name:password:gid:member,member lines; a line without a numeric gid is skipped."""
    entries = []
    for fields in _lines(data):
        if len(fields) >= 3 and limits.is_id(fields[2]):
            members = tuple(m for m in fields[3].split(",") if m) if len(fields) > 3 else ()  # as runc: no trimming
            entries.append(Entry(fields[0], int(fields[2]), members=members))
    return entries


def _lines(data: bytes | None) -> list[list[str]]:
    text = (data or b"").decode("utf-8", "replace")
    return [line.strip().split(":") for line in text.splitlines() if line.strip() and not line.startswith("#")]


def lookup(user: str, passwd: list[Entry], groups: list[Entry] | None) -> Credentials:
    """`user` (a well-formed User, limits.parse_user) resolved against the entries (groups:
    None when /etc/group was not needed, resolve()). Pure. SetupFailed naming the user when
    a name is not in its file."""
    name, group = limits.parse_user(user)
    if limits.is_id(name):
        entry = next((e for e in passwd if e.id == int(name)), None)
    else:
        entry = next((e for e in passwd if e.name == name), None)
        if entry is None:
            raise SetupFailed(_step(user), "no such user in the image's /etc/passwd" if name == user
                              else f"no user {name!r} in the image's /etc/passwd")
    uid, gid, home = (entry.id, entry.gid, entry.home or "/") if entry else (int(name), 0, "/")
    if group:
        return Credentials(uid, _group_id(group, groups or [], user), (), home)
    if entry is None:
        return Credentials(uid, gid, (), home)
    supplementary = dict.fromkeys(g.id for g in groups or [] if entry.name in g.members)
    return Credentials(uid, gid, tuple(supplementary), home)


def _step(user: str) -> str:
    """The step a failure names: the User as written (limits.parse_user bounds it)."""
    return f"user {user}"


def _group_id(group: str, groups: list[Entry], user: str) -> int:
    if limits.is_id(group):
        return int(group)
    found = next((g for g in groups if g.name == group), None)
    if found is None:
        raise SetupFailed(_step(user), f"no group {group!r} in the image's /etc/group")
    return found.id


def check_range(creds: Credentials, user: str, max_id: int, userns: bool) -> None:
    """Every id must exist where the job runs: in its user namespace's 0..max_id (a slot), or
    a valid host id (limits.MAX_ID). SetupFailed otherwise."""
    where = f"the job's user namespace (ids 0-{max_id})" if userns else f"the valid ids (0-{max_id})"
    for what, value in (("uid", creds.uid), ("gid", creds.gid), *(("group", g) for g in creds.groups)):
        if value > max_id:
            raise SetupFailed(_step(user), f"{what} {value} is outside {where}")
    if len(creds.groups) > NGROUPS_MAX:
        raise SetupFailed(_step(user), f"in {len(creds.groups)} groups, more than the kernel's {NGROUPS_MAX}")


def resolve(rootfs: str, user: str, userns: bool) -> Credentials:
    """The job's credentials for `user` (not ""), its names looked up in `rootfs`'s own files,
    its ids within a user namespace's slot (userns) or valid host ids. SetupFailed with one
    line naming the user and the reason."""
    name, group = limits.parse_user(user)
    root = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        passwd = passwd_entries(read_in_root(root, "etc/passwd", user))
        # /etc/group only for a group named by name, or for the supplementary groups of a user
        # with an entry (runc reads it then too)
        wants_groups = not limits.is_id(group) if group else _has_entry(name, passwd)
        groups = group_entries(read_in_root(root, "etc/group", user)) if wants_groups else None
    finally:
        os.close(root)
    creds = lookup(user, passwd, groups)
    check_range(creds, user, SLOT_SIZE - 1 if userns else limits.MAX_ID, userns)
    return creds


def _has_entry(name: str, passwd: list[Entry]) -> bool:
    return any(e.id == int(name) if limits.is_id(name) else e.name == name for e in passwd)


def read_in_root(root: int, path: str, user: str) -> bytes | None:
    """The regular file `path` of the tree at `root`, resolved inside it (links and '..'
    included); None when it does not exist. SetupFailed for anything else."""
    shown, step = f"the image's /{path}", _step(user)
    try:
        fd = volumes.openat2(root, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY,
                             volumes.RESOLVE_IN_ROOT | volumes.RESOLVE_NO_MAGICLINKS)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise SetupFailed(step, f"{shown}: {os.strerror(error.errno or errno.EIO)}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SetupFailed(step, f"{shown} is not a regular file")
        chunks, size = [], 0
        while chunk := os.read(fd, MAX_FILE_BYTES + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise SetupFailed(step, f"{shown} is larger than {MAX_FILE_BYTES >> 20} MiB")
        return b"".join(chunks)
    finally:
        os.close(fd)
