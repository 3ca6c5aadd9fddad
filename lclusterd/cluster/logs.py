"""Where a job's output lives on the node that ran it: <state-dir>/logs/<uuid>.out and .err.

Job ids come from etcd, which is input, and the daemon is root: a name here is made from a
well-formed job id and nothing else (anything else is a ValueError, never a path), the
directory is one only root can write (`prepare` checks it and every directory above it), and
no file is ever opened through a symlink. A job's first attempt on this node creates its
stdout file exclusively (O_CREAT|O_EXCL|O_NOFOLLOW), and the runtime its stderr file at the
first output there (a stream never written to has no file; reading it reads nothing); a
later attempt on this node (after the node was declared lost and the job re-queued) appends
to them. Once the job has ended for good here, its files are sealed (`seal`: no write
permission bit; root ignores the bit, so it is a mark this module reads): a record re-using
that id is refused rather than appended to the finished job's log.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

from lclusterd.records import JOB_ID

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO planted here never blocks an open


class LogsSealed(OSError):
    """The job's log files here belong to a job that has ended on this node."""


class LogFiles:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def prepare(self) -> None:
        """Make the directory (0700) and check that no one but root can change what is in it:
        it is root's (this process's user's) and not a symlink, and so is every directory above
        it, none writable by anyone else unless sticky (like /tmp). PermissionError otherwise."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.lstat(self.directory)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise PermissionError(f"the log directory {self.directory} must be a directory of uid {os.geteuid()}, "
                                  "not a symlink or another user's")
        if st.st_mode & 0o077:
            os.chmod(self.directory, 0o700)
        for parent in Path(os.path.realpath(self.directory)).parents:
            if not _root_only(os.lstat(parent)):
                raise PermissionError(f"the log directory {self.directory} is inside {parent}, which users other than "
                                      "root can write or which another user owns: choose a --state-dir only root can change")

    def stdout(self, job_id: str) -> Path:
        return self._path(job_id, "out")

    def stderr(self, job_id: str) -> Path:
        return self._path(job_id, "err")

    def _path(self, job_id: str, suffix: str) -> Path:
        if not JOB_ID.match(job_id):
            raise ValueError(f"not a job id: {job_id[:40]!r}")
        return self.directory / f"{job_id}.{suffix}"

    def create(self, job_id: str) -> None:
        """Create the stdout file before the job is handed to the runtime; its existence later
        means "this node may have started the job" (see Worker reconcile). The stderr file is
        made by the runtime at the job's first output there (runtime/relay.py: most jobs write
        none, and each file is an inode to allocate and later free). Existing ones (an earlier
        attempt's, appended to) are made new again for the log sweep. LogsSealed when they are a
        finished job's; OSError when they are not plain files."""
        try:
            os.close(os.open(self.stdout(job_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600))
            earlier = [self.stderr(job_id)]  # (one the log sweep left when it removed stdout's first)
        except FileExistsError:
            earlier = [self.stdout(job_id), self.stderr(job_id)]
        for path in earlier:
            try:
                fd = _open_plain(path, os.O_WRONLY)
            except FileNotFoundError:  # no stderr file: the job wrote nothing there
                continue
            try:
                if not os.fstat(fd).st_mode & stat.S_IWUSR:
                    raise LogsSealed(f"the log files of job {job_id} on this node belong to a job that has ended; "
                                     "a record re-using its id does not run here")
                os.utime(fd)
            finally:
                os.close(fd)

    def seal(self, job_id: str) -> None:
        """Mark the job's files as a finished job's (see the module docstring): called once its
        final record is written, or when its record turns out to be final (or gone) when this
        node lets go of it. Never raises."""
        for path in (self.stdout(job_id), self.stderr(job_id)):
            try:
                fd = _open_plain(path, os.O_RDONLY)
            except OSError:  # none (it never started here), or not a plain file: nothing to seal
                continue
            try:
                os.fchmod(fd, 0o400)
            except OSError:
                pass
            finally:
                os.close(fd)

    def last_stderr_line(self, job_id: str, limit: int = 200) -> str:
        """The job's last non-empty line on stderr (at most `limit` characters), or ""."""
        try:
            fd = _open_plain(self.stderr(job_id), os.O_RDONLY)
        except OSError:
            return ""
        with open(fd, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = [line for line in f.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip()[:limit] if lines else ""

    def read_new(self, job_id: str, offsets: list[int], chunk: int = 64 * 1024) -> Iterator[tuple[int, bytes]]:
        """What the job wrote since `offsets` (stdout's and stderr's, advanced as it reads), as
        (stream, bytes) with stream 0 for stdout and 1 for stderr; a missing file is empty."""
        for stream, path in enumerate((self.stdout(job_id), self.stderr(job_id))):
            try:
                fd = _open_plain(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            with open(fd, "rb") as f:
                f.seek(offsets[stream])
                while data := f.read(chunk):
                    offsets[stream] += len(data)
                    yield stream, data

    def exist(self, job_id: str) -> bool:
        """Whether this node made the job's files (False for what is not a job id: an
        assignment key's last element is input too)."""
        return bool(JOB_ID.match(job_id)) and os.path.lexists(self.stdout(job_id))

    def mark_ended(self, job_id: str) -> None:
        """Set both files' mtime to now: a job that wrote nothing for a long time keeps its logs
        for the retention period after it ended, not after its last write."""
        for path in (self.stdout(job_id), self.stderr(job_id)):
            try:
                fd = _open_plain(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.utime(fd)
            finally:
                os.close(fd)

    def written_before(self, cutoff: float) -> list[str]:
        """Ids of the jobs whose log files were all last written (or marked ended) before `cutoff`."""
        return [job_id for job_id, (_, mtime) in self.usage().items() if mtime < cutoff]

    def remove(self, job_id: str, cutoff: float) -> int:
        """Delete those of the job's log files still last written before `cutoff` (looked at
        again: the job may have written, ended or been started again since); how many went."""
        removed = 0
        for path in (self.stdout(job_id), self.stderr(job_id)):
            try:
                if os.lstat(path).st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def usage(self) -> dict[str, tuple[int, float]]:
        """Job id -> (bytes its log files take on disk, their newest mtime), for every job here."""
        found: dict[str, tuple[int, float]] = {}
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    job_id, dot, suffix = entry.name.rpartition(".")
                    if not (dot and suffix in ("out", "err") and JOB_ID.match(job_id)):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    size, mtime = found.get(job_id, (0, 0.0))
                    found[job_id] = (size + st.st_blocks * 512, max(mtime, st.st_mtime))
        except FileNotFoundError:
            pass
        return found

    def replace_output(self, job_id: str, note: bytes) -> int:
        """Replace an ended job's output by `note` (in stdout's file; stderr's goes), leaving
        the files' times as they were (the log sweep removes them after --keep); the bytes freed."""
        freed = 0
        for path, text in ((self.stdout(job_id), note), (self.stderr(job_id), None)):
            try:
                fd = _open_plain(path, os.O_RDWR)
            except OSError:  # gone, or not a plain file: nothing of the job's to free
                continue
            try:
                st = os.fstat(fd)
                freed += st.st_blocks * 512
                if text is None:
                    os.unlink(path)
                    continue
                os.ftruncate(fd, 0)
                os.write(fd, text)
                freed -= len(text)
                os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(fd)
        return freed


def _open_plain(path: Path, flags: int) -> int:
    """An fd of the regular file at `path`, never through a symlink (OSError: ELOOP) and never
    anything but a plain file (OSError naming it)."""
    fd = os.open(path, flags | _NOFOLLOW)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a plain file")
    return fd


def _root_only(st: os.stat_result) -> bool:
    """Whether only root (or this process's user) can change a directory's entries."""
    sticky = st.st_mode & stat.S_ISVTX
    others_write = st.st_mode & 0o002 and not sticky
    group_write = st.st_mode & 0o020 and st.st_gid != 0 and not sticky
    return st.st_uid in (0, os.geteuid()) and not others_write and not group_write
