"""Where a job's output lives on the node that ran it: <state-dir>/logs/<uuid>.out and .err."""

from __future__ import annotations

import os
from pathlib import Path


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
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))

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

    def exist(self, job_id: str) -> bool:
        return self.stdout(job_id).exists()
