"""Commands run inside a running job (`lclient -exec`), on the fork server's side.

An Exec request names a job this fork server runs and a command, and brings the command's
stdout and stderr as descriptors. The fork server spawns `lclusterd-jobinit` on the host
with an exec plan (plan.exec_plan, jobinit/enter.c): it joins the job's PID namespace for a
child and waits for it; the child joins the job's cgroup, its other namespaces and its user
namespace, becomes the job's user with the job's bounding set, capabilities and seccomp
filter, and execs the command, as a process of the job (its memory and pids limits count
it, a kill of the job ends it, and it ends with the job). Its stdin is what came with the
request (a sealed memory file), or /dev/null.

The spawned parent is the fork server's child and ends as its child did; when it is reaped,
ExecFinished reports the command's exit code or the signal that ended it (ExecKill's SIGKILL
too: the child follows its parent), or why it never ran (the job init's failure report: a
command not in the job's root, say).
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass
from typing import Callable

from lclusterd.errors import LclusterdError
from lclusterd.runtime import kernel, plan, protocol, users
from lclusterd.runtime.job import RunningJob, failure_report
from lclusterd.runtime.reasons import close_all, reason
from lclusterd.runtime.spares import DEFAULT_SIGNALS, SpareSetup


@dataclass
class RunningExec:
    exec_id: str
    job_id: str
    pid: int
    sock: socket.socket  # the child's status: an E line when it failed before its exec


class Execs:
    def __init__(self, setup: SpareSetup, devnull: int, send: Callable[[protocol.Event], None]):
        self.setup, self.devnull, self.send = setup, devnull, send
        self.by_pid: dict[int, RunningExec] = {}

    def start(self, request: protocol.Exec, fds: list[int], job: RunningJob | None) -> None:
        """Spawn the command in `job` (ours to close: `fds`, its stdout, stderr and maybe stdin),
        or say at once why it cannot run."""
        try:
            if len(fds) not in (2, 3):
                raise LclusterdError(f"expected the command's stdout, stderr and stdin, got {len(fds)} descriptors")
            self._spawn(request, fds, self._prepared(request, job))
        except (LclusterdError, OSError) as error:
            self.send(protocol.ExecFinished(request.exec_id, error=reason(error)))
        finally:
            close_all(fds)

    def _prepared(self, request: protocol.Exec, job: RunningJob | None) -> plan.PreparedExec:
        if job is None:
            raise LclusterdError(f"job {request.job_id} is not running on this node")
        if not job.status_closed or job.facts.failure is not None or job.facts.wait_status is not None:
            raise LclusterdError(f"job {request.job_id} is not running (it is starting or has ended)")
        spec, userns = job.spec, self.setup.slots is not None
        user = users.resolve(spec.rootfs, spec.user, userns) if spec.user else None
        return plan.PreparedExec(
            job_pid=job.host_pid, user_namespace=userns, cgroup_procs=tuple(job.cgroup.procs_files),
            argv=request.argv, env=spec.job_environment(user.home) if user else spec.job_environment(),
            cwd=spec.cwd, keep_caps=self.setup.keep_caps, cap_last=self.setup.cap_last, user=user)

    def _spawn(self, request: protocol.Exec, fds: list[int], prepared: plan.PreparedExec) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            argv = [self.setup.jobinit, *plan.exec_plan(prepared)]
            stdin = fds[2] if len(fds) == 3 else self.devnull
            pid = kernel.posix_spawn(self.setup.jobinit, argv, [(stdin, 0), (fds[0], 1), (fds[1], 2),
                                                                (theirs.fileno(), 3)], DEFAULT_SIGNALS)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.by_pid[pid] = RunningExec(request.exec_id, request.job_id, pid, ours)

    def kill(self, exec_id: str) -> None:
        for running in self.by_pid.values():
            if running.exec_id == exec_id:
                try:
                    os.kill(running.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def kill_all(self) -> None:
        for running in list(self.by_pid.values()):
            self.kill(running.exec_id)

    def reaped(self, pid: int, status: int) -> bool:
        """`pid` was reaped: if it was an exec's, report its end (True); else False."""
        running = self.by_pid.pop(pid, None)
        if running is None:
            return False
        report = _drain(running.sock)  # every holder of its status socket has exited
        if report.startswith(b"E"):
            failure = failure_report(report[1:])
            finished = protocol.ExecFinished(running.exec_id, error=f"{failure.get('step')}: {failure.get('detail')}")
        elif os.WIFSIGNALED(status):  # the parent ends by its child's signal (or by ExecKill's)
            finished = protocol.ExecFinished(running.exec_id, signal=os.WTERMSIG(status))
        else:
            finished = protocol.ExecFinished(running.exec_id, exit_code=os.WEXITSTATUS(status))
        self.send(finished)
        return True


def _drain(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    except OSError:
        pass
    finally:
        sock.close()
    return b"".join(chunks)
