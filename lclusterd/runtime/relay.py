"""LogRelay: one output stream of a job, from a pipe into its log file, up to a cap.

A job's stdout and stderr are pipes whose read ends the fork server holds; whatever the
job writes is moved into the log file with splice(2) (no copy through this process) until
`limit` bytes are in it. Then one marker line is written and the rest is spliced into
/dev/null as it comes, so the job goes on unaware and the node's disk stays bounded.
A relay reaches EOF when every process of the job that held the pipe has exited.
"""

from __future__ import annotations

import os

from lclusterd.units import format_size

CHUNK = 1 << 20  # most bytes moved per splice call


class LogRelay:
    def __init__(self, stream: str, read_fd: int, log_fd: int, limit: int, devnull_fd: int):
        """Takes ownership of read_fd (non-blocking) and log_fd (readable too, positioned
        where the job's output goes: the end of what earlier attempts wrote)."""
        self.stream = stream
        self.read_fd = read_fd
        self.log_fd = log_fd
        self.limit = limit
        self.devnull_fd = devnull_fd
        self.start = os.lseek(log_fd, 0, os.SEEK_CUR)
        self.written = 0
        self.dropped = 0
        self.at_eof = False

    def fileno(self) -> int:
        return self.read_fd

    def pump(self) -> bool:
        """Move what the pipe holds now; True once the pipe is at EOF (then call close)."""
        while not self.at_eof:
            room = self.limit - self.written
            target = self.log_fd if room > 0 else self.devnull_fd
            try:
                moved = os.splice(self.read_fd, target, min(CHUNK, room) if room > 0 else CHUNK,
                                  flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            except BlockingIOError:
                return False
            if moved == 0:
                self.at_eof = True
            elif room > 0:
                self.written += moved
                if self.written >= self.limit:
                    self._write_marker()
            else:
                self.dropped += moved
        return True

    def _write_marker(self) -> None:
        try:
            last = os.pread(self.log_fd, 1, self.start + self.written - 1)
        except OSError:
            last = b""
        lead = b"" if last == b"\n" else b"\n"
        note = f"[lclusterd: {self.stream} cut at {format_size(self.limit)} (--max-log-size); the rest is dropped]\n"
        os.write(self.log_fd, lead + note.encode())

    def close(self) -> None:
        for fd in (self.read_fd, self.log_fd):
            try:
                os.close(fd)
            except OSError:
                pass
