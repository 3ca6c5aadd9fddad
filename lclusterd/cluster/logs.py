"""Where a job's output lives on the node that ran it: <state-dir>/logs/<uuid>.out and .err."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator


class LogFiles:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def stdout(self, job_id: str) -> Path:
        return self.directory / f"{job_id}.out"

    def stderr(self, job_id: str) -> Path:
        return self.directory / f"{job_id}.err"

    def create(self, job_id: str) -> None:
        """Create both files before the job is handed to the runtime; their existence later
        means "this node may have started the job" (see Worker reconcile)."""
        for path in (self.stdout(job_id), self.stderr(job_id)):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:  # an earlier attempt's, appended to: new again for the log sweep
                os.utime(path)

    def last_stderr_line(self, job_id: str, limit: int = 200) -> str:
        """The job's last non-empty line on stderr (at most `limit` characters), or ""."""
        try:
            with open(self.stderr(job_id), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                lines = [line for line in f.read().decode(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        return lines[-1].strip()[:limit] if lines else ""

    def read_new(self, job_id: str, offsets: list[int], chunk: int = 64 * 1024) -> Iterator[tuple[int, bytes]]:
        """What the job wrote since `offsets` (stdout's and stderr's, advanced as it reads), as
        (stream, bytes) with stream 0 for stdout and 1 for stderr; a missing file is empty."""
        for stream, path in enumerate((self.stdout(job_id), self.stderr(job_id))):
            try:
                with open(path, "rb") as f:
                    f.seek(offsets[stream])
                    while data := f.read(chunk):
                        offsets[stream] += len(data)
                        yield stream, data
            except FileNotFoundError:
                continue

    def exist(self, job_id: str) -> bool:
        return self.stdout(job_id).exists()

    def mark_ended(self, job_id: str) -> None:
        """Set both files' mtime to now: a job that wrote nothing for a long time keeps its logs
        for the retention period after it ended, not after its last write."""
        for path in (self.stdout(job_id), self.stderr(job_id)):
            try:
                os.utime(path)
            except FileNotFoundError:
                pass

    def written_before(self, cutoff: float) -> list[str]:
        """Ids of the jobs whose log files were all last written (or marked ended) before `cutoff`."""
        newest: dict[str, float] = {}
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    job_id, dot, suffix = entry.name.rpartition(".")
                    if dot and suffix in ("out", "err"):
                        newest[job_id] = max(_mtime(entry), newest.get(job_id, 0.0))
        except FileNotFoundError:
            return []
        return [job_id for job_id, mtime in newest.items() if mtime < cutoff]

    def remove(self, job_id: str, cutoff: float) -> int:
        """Delete those of the job's log files still last written before `cutoff` (looked at
        again: the job may have written, ended or been started again since); how many went."""
        removed = 0
        for path in (self.stdout(job_id), self.stderr(job_id)):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


def _mtime(entry: os.DirEntry) -> float:
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:  # removed meanwhile: never the newest
        return 0.0
