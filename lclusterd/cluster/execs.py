"""Commands run inside this node's running jobs (`lclient -exec`): the API's way to the runtime
(launcher.exec, runtime/execs.py) and the stream of what the command writes, then its end."""

from __future__ import annotations

import os
import select
from typing import Iterator

from lclusterd import limits, metrics
from lclusterd.runtime.launcher import ExecFinished, ExecSession, Launcher

STDOUT, STDERR = 0, 1
READ = 64 * 1024
IDLE = 0.2  # how often an idle command's end is looked for
END_WAIT = 30.0  # the end comes right after the output closes; a stuck runtime is not waited for forever


class Execs:
    def __init__(self, launcher: Launcher):
        self.launcher = launcher

    def start(self, job_id: str, command: str, stdin: bytes = b"") -> ExecSession:
        """The command started in `job_id` with `stdin` (InvalidSpec for a command or an input
        the API refuses for a job, RuntimeUnavailable when the runtime is gone)."""
        limits.check_command(command)
        limits.check_sizes(command, {}, stdin)
        session = self.launcher.exec(job_id, ["/bin/sh", "-c", command], stdin)
        metrics.exec_started()
        return session

    def kill(self, session: ExecSession) -> None:
        try:
            self.launcher.exec_kill(session)
        except Exception:  # noqa: BLE001 - the runtime gone ends it too
            pass

    @staticmethod
    def output(session: ExecSession) -> Iterator[tuple[int, bytes] | ExecFinished]:
        """(stream, bytes) as the command writes them, then its ExecFinished. Closes the pipes.
        Once the command has ended, what is still open is a background process it left in the
        job: what that writes after the command's end is not waited for (docker exec alike)."""
        fds = {session.stdout: STDOUT, session.stderr: STDERR}
        try:
            while fds:
                ready, _, _ = select.select(list(fds), [], [], IDLE)
                if not ready and session.done.is_set():
                    break
                for fd in ready:
                    data = os.read(fd, READ)
                    if data:
                        yield fds[fd], data
                    else:
                        del fds[fd]
                        os.close(fd)
        finally:
            for fd in fds:
                os.close(fd)
        if not session.done.wait(END_WAIT):
            yield ExecFinished(session.exec_id, error="the runtime did not say how the command ended")
            return
        yield session.finished
