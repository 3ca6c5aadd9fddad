"""The result journal: a job's terminal record, kept on this node's disk from just before the
reporter first tries to write it to etcd until etcd has it. A result that cannot be written
(etcd down, the daemon stopping or dying meanwhile) is therefore not lost: the reporter
writes it once etcd answers again, and after a restart the worker's reconcile writes it
instead of recording the job LOST.

One file per job in <state-dir>/journal (0700, root's), named after the job id (validated: 32
hex digits, so a record's id can never name a path elsewhere), holding the record's JSON.
Entries are written through a temporary file created exclusively without following symlinks,
then renamed into place, so an entry is whole or absent. An entry that is malformed, someone
else's, for another node or not a terminal record is skipped and logged, never breaks a start.

No fsync: the journal covers the daemon and etcd dying, not the host (a host that goes down
ends its jobs too); a torn entry after a power loss is skipped like any malformed one.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from lclusterd.errors import InvalidSpec
from lclusterd.model import JobRecord, parse_job_id

log = logging.getLogger(__name__)

MAX_ENTRY_BYTES = 4 << 20  # a record holds at most 512 KiB of stdin and 64 KiB of command
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _valid_id(name: str) -> bool:
    try:
        return parse_job_id(name) == name
    except InvalidSpec:
        return False


class Journal:
    """The journal of node `node` in `directory`. open() before use; the methods are safe from
    any thread (each is a few system calls on the directory's descriptor)."""

    def __init__(self, directory: str | Path, node: str):
        self.directory = Path(directory)
        self.node = node
        self._dir_fd = -1

    def open(self) -> None:
        """Make the directory (0700) if it is missing and hold it open; OSError if it is not a
        directory of this user's (a symlink, say)."""
        try:
            os.mkdir(self.directory, 0o700)
        except FileExistsError:
            pass
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            os.close(fd)
            raise PermissionError(f"{self.directory} belongs to uid {info.st_uid}, not to this daemon's")
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
        self._dir_fd = fd

    def close(self) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1

    def put(self, record: JobRecord) -> None:
        """Keep `record` (terminal, this node's) as its job's entry, replacing any; OSError if it
        cannot be written, ValueError for an id that is not a job id."""
        if not _valid_id(record.id):
            raise ValueError(f"not a job id: {record.id!r}")
        tmp = f".{record.id}.tmp"
        try:
            os.unlink(tmp, dir_fd=self._dir_fd)  # left by a put that died half-way
        except FileNotFoundError:
            pass
        fd = os.open(tmp, _CREATE, 0o600, dir_fd=self._dir_fd)
        try:
            data = record.to_bytes()
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
        os.rename(tmp, record.id, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)

    def remove(self, job_id: str) -> None:
        """Forget the job's entry (etcd has its result, or the result was rejected)."""
        if not _valid_id(job_id):
            return
        try:
            os.unlink(job_id, dir_fd=self._dir_fd)
        except FileNotFoundError:
            pass
        except OSError as exc:  # the entry stays; the next start finds etcd has the result and drops it
            log.warning("journal %s: cannot remove the entry of job %s: %s", self.directory, job_id, exc.strerror)

    def entries(self) -> dict[str, JobRecord]:
        """Every usable entry, by job id; the others are logged and left alone (an operator may
        want to look at them)."""
        found = {}
        for name in sorted(os.listdir(self._dir_fd)):
            if name.startswith("."):  # a put's temporary file
                continue
            try:
                found[name] = self._read(name)
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                log.warning("journal %s: skipping the entry %r: %s", self.directory, name, exc)
        return found

    def _read(self, name: str) -> JobRecord:
        if not _valid_id(name):
            raise ValueError("its name is not a job id")
        fd = os.open(name, _READ, dir_fd=self._dir_fd)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                raise ValueError("not a regular file of this daemon's")
            if info.st_size > MAX_ENTRY_BYTES:
                raise ValueError(f"{info.st_size} bytes, more than a record can be")
            raw = os.read(fd, MAX_ENTRY_BYTES + 1)
        finally:
            os.close(fd)
        record = JobRecord.from_bytes(raw)
        if record.id != name or record.node != self.node or not record.terminal:
            raise ValueError(f"not a terminal record of job {name} on node {self.node} "
                             f"(job {record.id}, node {record.node or '-'}, {record.state})")
        return record
