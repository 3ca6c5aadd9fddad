"""LogRelay: one output stream of a job, from a pipe into its log file, up to a cap.

A job's stdout and stderr are pipes whose read ends the fork server holds; whatever the
job writes is moved into the log file with splice(2) (no copy through this process) until
`limit` bytes are in it. Then one marker line is written and the rest is spliced into
/dev/null as it comes, so the job goes on unaware and the node's disk stays bounded.
A relay reaches EOF when every process of the job that held the pipe has exited.

The log file is opened, made if need be, only when the job first writes to the stream: a
stream the job never writes to costs no file to make and none to remove later. Making a
file allocates an inode, which on an ext4 without a journal (this project's VM) costs
0.3-1 ms for minutes after many files were deleted; most jobs write nothing on stderr. The
first bytes are read into this process to learn that there are some (a splice needs its
destination open); the rest is spliced. A file that cannot be opened then (the disk full,
a link planted under its name) drops the output, counted, and says why in `error`.
"""

from __future__ import annotations

import os

from lclusterd.units import format_size

CHUNK = 1 << 20  # most bytes moved per splice call
FIRST = 64 << 10  # most bytes read before the file is open
# How a log file is opened, by a relay and for a job writing to its file directly (stdio.py):
# made if missing, root's alone, never through a symlink (the name comes from a job id).
LOG_FLAGS = os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
LOG_MODE = 0o600


class LogRelay:
    def __init__(self, stream: str, read_fd: int, directory_fd: int, name: str, limit: int, devnull_fd: int):
        """Takes ownership of read_fd (non-blocking) and directory_fd (the log file's directory,
        O_PATH): the file `name` in it is opened once there is output, which goes after what
        earlier attempts wrote."""
        self.stream = stream
        self.read_fd = read_fd
        self.directory_fd, self.name = directory_fd, name
        self.log_fd = -1  # until the first output
        self.limit = limit
        self.devnull_fd = devnull_fd
        self.start = 0  # the file's size when opened: earlier attempts' output
        self.written = 0
        self.dropped = 0
        self.at_eof = False
        self.error = ""  # why the output could not be kept, if it could not

    def fileno(self) -> int:
        return self.read_fd

    def pump(self) -> bool:
        """Move what the pipe holds now; True once the pipe is at EOF (then call close)."""
        while not self.at_eof:
            room = 0 if self.error else self.limit - self.written
            if room > 0 and self.log_fd < 0:
                if not self._first_output(room):
                    return False
                continue
            try:
                moved = os.splice(self.read_fd, self.log_fd if room > 0 else self.devnull_fd,
                                  min(CHUNK, room) if room > 0 else CHUNK, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            except BlockingIOError:
                return False
            if moved == 0:
                self.at_eof = True
            elif room > 0:
                self._wrote(moved)
            else:
                self.dropped += moved
        return True

    def _first_output(self, room: int) -> bool:
        """Read what the pipe holds (False: nothing yet); with output, open the file and write it."""
        try:
            data = os.read(self.read_fd, min(room, FIRST))
        except BlockingIOError:
            return False
        if not data:
            self.at_eof = True
            return True
        try:
            self.log_fd = os.open(self.name, os.O_RDWR | LOG_FLAGS, LOG_MODE, dir_fd=self.directory_fd)
            self.start = os.lseek(self.log_fd, 0, os.SEEK_END)
        except OSError as error:
            self.error = f"{self.stream} dropped: its log file cannot be opened ({error.strerror})"
            self.dropped += len(data)
            return True
        view = memoryview(data)
        while view:
            view = view[os.write(self.log_fd, view):]
        self._wrote(len(data))
        return True

    def _wrote(self, count: int) -> None:
        self.written += count
        if self.written >= self.limit:
            self._write_marker()

    def _write_marker(self) -> None:
        try:
            last = os.pread(self.log_fd, 1, self.start + self.written - 1)
        except OSError:
            last = b""
        lead = b"" if last == b"\n" else b"\n"
        note = f"[lclusterd: {self.stream} cut at {format_size(self.limit)} (--max-log-size); the rest is dropped]\n"
        os.write(self.log_fd, lead + note.encode())

    def close(self) -> None:
        for fd in (self.read_fd, self.log_fd, self.directory_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
