"""Host-wide claims on job addresses and bridges, held with flock(2) on files under LOCK_DIR.

Several fork servers can share one host and one bridge (a node's daemon, the runtime CLI,
test runs), so what one of them hands out must be claimed where the others see it, and a
crashed holder must leak nothing: the kernel drops a dead process's locks. As userns.py's
id slots, with one difference: a lease file is removed when its lease ends (a /16 holds
65534 addresses; their files would pile up otherwise), so a taker checks, once it holds the
lock, that the file it locked is still the one at the path.

    LOCK_DIR/lock                  exclusive while a fork server sets up, sweeps or tears
                                   down a bridge (one at a time on the host)
    LOCK_DIR/<bridge>/users        shared while a fork server uses the bridge; the last user
                                   (the one that gets it exclusive) removes the bridge
    LOCK_DIR/<bridge>/<address>    exclusive while a job holds the address; a file nobody
                                   holds is a crashed fork server's: the sweep removes the
                                   job's link and rules, then the file
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass
from ipaddress import IPv4Address

LOCK_DIR = "/run/lclusterd/net"
USERS = "users"


@dataclass(frozen=True)
class Lease:
    address: IPv4Address
    path: str
    fd: int


def _lock(path: str, flags: int) -> int | None:
    """An fd holding `flags` (LOCK_EX/LOCK_SH, with LOCK_NB) on the file at `path`, created if
    missing, or None if another holds it. Retries while the file locked was removed meanwhile."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed it as we waited: lock the file now at the path


class Leases:
    """Address leases on one bridge, handed out round robin from a random start (nodes sharing
    a host start apart, and a freed address is not reused at once, while the kernel may still
    hold the previous job's connections to it)."""

    def __init__(self, bridge: str, addresses: range, lock_dir: str = LOCK_DIR):
        self.directory = os.path.join(lock_dir, bridge)
        os.makedirs(self.directory, 0o700, exist_ok=True)
        self.addresses = addresses
        self._next = int.from_bytes(os.urandom(4), "little") % len(addresses)

    def acquire(self, job_id: str) -> Lease:
        """A free address, held until release(); OSError(EAGAIN) when every one is taken. An
        address whose file exists is taken, also when nobody holds it: that is a crashed fork
        server's, whose link or rules may still be there until a sweep removes them."""
        for _ in range(len(self.addresses)):
            index, self._next = self._next, (self._next + 1) % len(self.addresses)
            address = IPv4Address(self.addresses[index])
            path = os.path.join(self.directory, str(address))
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            try:
                # A sweep may lock (and remove) a file between its creation and this lock.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    os.write(fd, job_id.encode() + b"\n")  # for a person reading the directory
                    return Lease(address, path, fd)
            except (BlockingIOError, FileNotFoundError):
                pass
            os.close(fd)
        raise OSError(errno.EAGAIN, f"all {len(self.addresses)} addresses of the subnet are in use")

    @staticmethod
    def release(lease: Lease) -> None:
        """Remove the lease's file, then let go of it (in this order: see _lock)."""
        try:
            os.unlink(lease.path)
        finally:
            os.close(lease.fd)

    def orphans(self) -> list[Lease]:
        """The leases nobody holds (their fork server died), now held by us: the caller removes
        what they stand for, then releases them."""
        found = []
        for name in os.listdir(self.directory):
            try:
                address = IPv4Address(name)
            except ValueError:
                continue  # the users file
            path = os.path.join(self.directory, name)
            fd = _lock(path, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if fd is not None:
                found.append(Lease(address, path, fd))
        return found

    def held(self) -> set[IPv4Address]:
        """Addresses whose lease file exists (a live job's, or an orphan not swept yet)."""
        found = set()
        for name in os.listdir(self.directory):
            try:
                found.add(IPv4Address(name))
            except ValueError:
                pass
        return found


class HostLock:
    """The host-wide set-up lock, held (exclusively) for the length of a `with`."""

    def __init__(self, lock_dir: str = LOCK_DIR):
        os.makedirs(lock_dir, 0o700, exist_ok=True)
        self.path = os.path.join(lock_dir, "lock")
        self.fd = -1

    def __enter__(self) -> HostLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # short: other fork servers' set-up or teardown
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def use_bridge(bridge: str, lock_dir: str = LOCK_DIR) -> int:
    """Hold the bridge's users file shared (call under HostLock); the fd keeps the hold."""
    directory = os.path.join(lock_dir, bridge)
    os.makedirs(directory, 0o700, exist_ok=True)
    fd = _lock(os.path.join(directory, USERS), fcntl.LOCK_SH)
    assert fd is not None  # a blocking lock returns a descriptor or raises
    return fd


def forget_bridge(bridge: str, lock_dir: str = LOCK_DIR) -> None:
    """Remove the bridge's directory once its last user is done with it (call under HostLock,
    holding the users file exclusively; the lease files are gone by then, or are orphans that
    keep the directory for the next sweep)."""
    directory = os.path.join(lock_dir, bridge)
    os.unlink(os.path.join(directory, USERS))
    try:
        os.rmdir(directory)
    except OSError:
        pass


def last_user(users_fd: int) -> bool:
    """Whether no other fork server uses the bridge (call under HostLock): our shared hold made
    exclusive. Either way the caller is done with the bridge and closes users_fd."""
    try:
        fcntl.flock(users_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
