"""Host ids for jobs' user namespaces: each job's root is an unprivileged uid on the host.

A node's jobs take their ids from the subordinate range that /etc/subuid and /etc/subgid
give the user `lclusterd` (`make prep` adds it). The range is cut into slots of SLOT_SIZE
ids and each job gets a slot of its own while it runs: uid 0..65535 in the job are
host uids base..base+65535. One range per job, not per node, so two jobs never share a
host uid: a process that escaped its namespaces would still be a stranger to every
other job's files and processes (Kubernetes' user-namespaced pods and podman's
--userns=auto do the same).

Several nodes may share one host and one range, so a slot is claimed with an flock on a
file named after it under LOCK_DIR: the kernel drops the lock when its holder dies, so a
crashed node leaks nothing. Slots are handed out round robin, so a slot is not reused
the moment its job ends.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass

SLOT_SIZE = 65536  # every uid a 16-bit /etc/passwd can name, nobody (65534) included
USER = "lclusterd"
LOCK_DIR = "/run/lclusterd/userns"


@dataclass(frozen=True)
class IdRange:
    start: int
    count: int

    @staticmethod
    def parse(text: str) -> IdRange:
        """START:COUNT (the fork server's --userns-uids and --userns-gids)."""
        start, _, count = text.partition(":")
        return IdRange(int(start), int(count))


@dataclass(frozen=True)
class IdRanges:
    """The host uids and gids jobs' user namespaces are cut from."""

    uids: IdRange
    gids: IdRange


def subordinate_ranges(user: str = USER) -> IdRanges | None:
    """`user`'s ranges in /etc/subuid and /etc/subgid (`make prep` adds lclusterd's), or None."""
    uids, gids = subordinate_range(user, "/etc/subuid"), subordinate_range(user, "/etc/subgid")
    return IdRanges(uids, gids) if uids is not None and gids is not None else None


MISSING_RANGES = (f"no subordinate id range for the user {USER} in /etc/subuid and /etc/subgid "
                  "(make prep adds one)")


@dataclass(frozen=True)
class IdMap:
    """A job's ids: its 0..count-1 are the host's uid..uid+count-1 and gid..gid+count-1."""

    uid: int
    gid: int
    count: int = SLOT_SIZE


def subordinate_range(user: str = USER, path: str = "/etc/subuid") -> IdRange | None:
    """The first `user:start:count` entry of a subuid/subgid file, or None."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        name, _, rest = line.strip().partition(":")
        start, _, count = rest.partition(":")
        if name == user and start.isdigit() and count.isdigit():
            return IdRange(int(start), int(count))
    return None


@dataclass(frozen=True)
class Slot:
    index: int
    ids: IdMap
    lock_fd: int


class Slots:
    """Hands out per-job IdMaps from a uid and a gid range (see the module docstring)."""

    def __init__(self, uids: IdRange, gids: IdRange, lock_dir: str = LOCK_DIR):
        self.uids, self.gids = uids, gids
        self.count = min(uids.count, gids.count) // SLOT_SIZE
        if self.count < 1:
            raise ValueError(f"a subordinate range of {min(uids.count, gids.count)} ids holds no slot of {SLOT_SIZE}")
        self.lock_dir = lock_dir
        os.makedirs(lock_dir, 0o700, exist_ok=True)
        self._next = int.from_bytes(os.urandom(4), "little") % self.count  # nodes sharing a host start apart

    def acquire(self) -> Slot:
        """A free slot, locked until release(); OSError(EAGAIN) when every slot is taken."""
        for _ in range(self.count):
            index, self._next = self._next, (self._next + 1) % self.count
            fd = os.open(os.path.join(self.lock_dir, str(index)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            offset = index * SLOT_SIZE
            return Slot(index, IdMap(self.uids.start + offset, self.gids.start + offset), fd)
        raise OSError(errno.EAGAIN, f"all {self.count} user-namespace id slots are in use")

    @staticmethod
    def release(slot: Slot) -> None:
        os.close(slot.lock_fd)  # closing the only descriptor drops the flock
