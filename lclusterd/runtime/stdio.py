"""A job's stdin, stdout and stderr, opened by the fork server before the job has a process.

stdin: /dev/null, or the spec's stdin data in a memory file (no disk, nothing to remove).
stdout and stderr: the spec's log files; with a log cap (spec.max_log_bytes) each is a pipe
whose read end a LogRelay moves into the file, up to the cap (made at the stream's first
output: a job that writes nothing to a stream leaves no file for it).
"""

from __future__ import annotations

import os

from lclusterd.errors import SetupFailed
from lclusterd.runtime.relay import LOG_FLAGS, LOG_MODE, LogRelay
from lclusterd.runtime.spec import RuntimeSpec


def open_stdio(spec: RuntimeSpec, opened: list[int], relays: list[LogRelay], devnull: int) -> list[int]:
    """The job's three descriptors. Every descriptor made is added to `opened` (the caller
    closes them once the job holds its copies) or owned by a relay added to `relays`."""
    fds = [_open_stdin(spec, opened)]
    for stream, path in (("stdout", spec.stdout_path), ("stderr", spec.stderr_path)):
        if path is None:
            fds.append(_track(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC), opened))
        elif spec.max_log_bytes is None:
            fds.append(_track(_open_log(path, os.O_WRONLY | os.O_APPEND), opened))
        else:
            fds.append(_relayed(stream, path, spec.max_log_bytes, opened, relays, devnull))
    return fds


def _relayed(stream: str, path: str, limit: int, opened: list[int], relays: list[LogRelay], devnull: int) -> int:
    """The pipe's write end; the relay opens the file itself at the job's first output on
    the stream (relay.py), in the directory opened here (a missing one fails the start)."""
    directory, name = os.path.split(path)
    try:
        directory_fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise SetupFailed("log file", f"cannot open {path}: {error.strerror}", error.errno) from error
    try:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    except OSError:
        os.close(directory_fd)
        raise
    os.set_blocking(read_fd, False)  # the job's end stays blocking
    relays.append(LogRelay(stream, read_fd, directory_fd, name, limit, devnull))
    return _track(write_fd, opened)


def _open_stdin(spec: RuntimeSpec, opened: list[int]) -> int:
    if spec.stdin_data is None:
        return _track(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), opened)
    fd = _track(os.memfd_create(f"lclusterd-stdin-{spec.job_id}", os.MFD_CLOEXEC), opened)
    view = memoryview(spec.stdin_data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _open_log(path: str, flags: int) -> int:
    """A log file the job writes to directly (no cap: the runtime's own CLI, which may be
    given any path, /dev/null too); with a cap the relay opens it (relay.py)."""
    try:
        return os.open(path, flags | LOG_FLAGS, LOG_MODE)
    except OSError as error:
        raise SetupFailed("log file", f"cannot open {path}: {error.strerror}", error.errno) from error


def _track(fd: int, opened: list[int]) -> int:
    opened.append(fd)
    return fd
