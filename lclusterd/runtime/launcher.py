"""The daemon's handle on the runtime: starts the fork server and talks to it.

    launcher = Launcher(state_dir, on_event=callback)
    launcher.start()            # from the main thread, before other threads if you can
    launcher.submit(spec)       # returns at once; JobStarted / JobFinished follow
    result = launcher.wait(spec.job_id)
    launcher.close()

Events are delivered on the launcher's reader thread, in order per job.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from lclusterd.errors import InvalidSpec, RuntimeUnavailable
from lclusterd.runtime import channel, protocol
from lclusterd.runtime.cgroups import NodeLimits
from lclusterd.runtime.netconf import NetworkConfig
from lclusterd.runtime.protocol import ExecFinished, JobFinished, JobStarted
from lclusterd.runtime.spec import FAILED, RunResult, RuntimeSpec
from lclusterd.runtime.userns import IdRanges

__all__ = ["Event", "ExecFinished", "ExecSession", "IdRanges", "JobFinished", "JobStarted", "Launcher", "NetworkConfig"]

KEEP_RESULTS = 10_000  # finished results kept for wait(); the oldest go first

Event = JobStarted | JobFinished


class ExecSession:
    """A command running inside a job (Launcher.exec): its stdout and stderr are the read ends
    `stdout` and `stderr` (the caller's to read and close); `finished` holds its end."""

    def __init__(self, exec_id: str, stdout: int, stderr: int):
        self.exec_id, self.stdout, self.stderr = exec_id, stdout, stderr
        self.done = threading.Event()
        self.finished: ExecFinished | None = None

    def end(self, finished: ExecFinished) -> None:
        self.finished = finished
        self.done.set()


class Launcher:
    def __init__(self, state_dir: str | Path, cgroup_parent: str = "lclusterd",
                 on_event: Callable[[Event], None] | None = None,
                 on_helper_exit: Callable[[], None] | None = None,
                 userns: IdRanges | None = None, node_limits: NodeLimits | None = None,
                 network: NetworkConfig | None = None, volume_roots: list[str] | None = None):
        """on_event gets every JobStarted/JobFinished on the reader thread and must not
        block. on_helper_exit is called (on the reader thread) if the fork server dies
        without close(): its running jobs have then been reported FAILED, and every
        later submit raises RuntimeUnavailable. userns: run every job in a user namespace
        of its own with ids from these ranges (None: jobs' root is the host's root).
        node_limits: ceilings for all jobs together, on their parent cgroup. network: the
        node's bridge and subnet for jobs with net="bridge" (None: such jobs are refused).
        volume_roots: the directories jobs' volumes may come from (None or empty: a job with a
        volume fails, saying how to allow them); each must exist when the helper starts."""
        self.state_dir = str(state_dir)
        self.cgroup_parent = cgroup_parent
        self.userns = userns
        self.node_limits = node_limits
        self.network = network
        self.volume_roots = list(volume_roots or [])
        self.on_event = on_event
        self.on_helper_exit = on_helper_exit
        self.helper_pid: int | None = None
        self.cgroup_version: int | None = None
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._changed = threading.Condition()
        self._running: set[str] = set()
        self._results: OrderedDict[str, RunResult] = OrderedDict()
        self._swept: list[str] | None = None
        self._closed = False
        self._execs: dict[str, ExecSession] = {}  # exec id -> the session waiting for its end

    # -- life cycle ---------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Spawn the fork server and wait until it is ready. Raises RuntimeUnavailable
        with its reason (e.g. no usable cgroup controllers) if it cannot start."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        os.makedirs(self.state_dir, 0o700, exist_ok=True)
        self._process = subprocess.Popen(self._helper_argv(theirs.fileno()), pass_fds=[theirs.fileno()],
                                         stdin=subprocess.DEVNULL, close_fds=True)
        theirs.close()
        self._sock = ours
        ours.settimeout(timeout)
        try:
            ready = protocol.decode_event(channel.receive(ours))
        except (channel.ChannelClosed, OSError, ValueError) as error:
            self._process.kill()  # one that never said ready (a timeout) would otherwise be waited for forever
            self._process.wait()
            raise RuntimeUnavailable(f"the runtime helper did not start: {error or 'it exited'}") from None
        ours.settimeout(None)
        if not isinstance(ready, protocol.Ready):
            self._process.wait()
            reason = ready.reason if isinstance(ready, protocol.NotReady) else ready
            raise RuntimeUnavailable(f"the runtime helper could not start: {reason}")
        self.helper_pid = ready.pid
        self.cgroup_version = ready.cgroup_version
        self._reader = threading.Thread(target=self._read_events, name="lclusterd-launcher", daemon=True)
        self._reader.start()

    def _helper_argv(self, fd: int) -> list[str]:
        argv = [sys.executable, "-m", "lclusterd.runtime.forkserver", "--fd", str(fd),
                "--state-dir", self.state_dir, "--cgroup-parent", self.cgroup_parent]
        if self.userns is not None:
            for flag, ids in (("--userns-uids", self.userns.uids), ("--userns-gids", self.userns.gids)):
                argv += [flag, f"{ids.start}:{ids.count}"]
        limits = self.node_limits
        if limits is not None and limits.memory_bytes is not None:
            argv += ["--node-memory", str(limits.memory_bytes)]
        if limits is not None and limits.pids is not None:
            argv += ["--node-pids", str(limits.pids)]
        if self.network is not None:
            argv += self.network.to_args()
        for root in self.volume_roots:
            argv += ["--volume-root", root]
        return argv

    def close(self, kill_running: bool = True, timeout: float | None = 60.0) -> None:
        """Stop the helper: kill (or wait for) running jobs, which are cleaned up and
        reported as usual, then let it exit."""
        if self._closed or self._process is None:
            return
        self._closed = True
        try:
            self._send(protocol.Shutdown(kill_running))
        except RuntimeUnavailable:
            pass
        if self._reader is not None:
            self._reader.join(timeout)
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> Launcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs ---------------------------------------------------------------------------

    def submit(self, spec: RuntimeSpec, stdio: tuple[int, int, int] | None = None) -> None:
        """Validate and send a job. Raises InvalidSpec, or RuntimeUnavailable when the
        helper is gone; everything else arrives later as a FAILED result.
        stdio: open descriptors for the job's stdin, stdout and stderr, passed to the
        helper (the caller keeps its own copies); they replace the spec's stdin data
        and log paths."""
        spec.validate()
        with self._changed:
            if spec.job_id in self._running:
                raise InvalidSpec(f"job {spec.job_id} is already running")
            self._running.add(spec.job_id)
            self._results.pop(spec.job_id, None)
        try:
            self._send(protocol.Start(spec), list(stdio) if stdio else None)
        except RuntimeUnavailable:
            with self._changed:
                self._running.discard(spec.job_id)
            raise

    def kill(self, job_id: str, grace: float | None = None) -> None:
        """SIGTERM to every process of the job, SIGKILL after grace (default: the job's).
        A job that is not running is left alone."""
        if job_id in self._running:
            self._send(protocol.Kill(job_id, grace))

    def exec(self, job_id: str, argv: list[str], stdin: bytes = b"") -> ExecSession:
        """Run `argv` inside the running job `job_id` as one of its processes (execs.py), with
        `stdin` as its input (none: /dev/null). Its output comes on the session's pipes; its
        end (ExecFinished, with the reason when it could not run) in `finished`.
        RuntimeUnavailable when the helper is gone."""
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        session = ExecSession(uuid.uuid4().hex, out_r, err_r)
        with self._changed:
            self._execs[session.exec_id] = session
        given = [out_w, err_w]
        if stdin:  # a sealed in-memory file: the command reads it at its pace, nobody blocks writing
            given.append(_memory_file(stdin))
        try:
            self._send(protocol.Exec(session.exec_id, job_id, tuple(argv)), given)
        except RuntimeUnavailable:
            with self._changed:
                self._execs.pop(session.exec_id, None)
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            for fd in given:
                os.close(fd)
        return session

    def exec_kill(self, session: ExecSession) -> None:
        """End the command (SIGKILL; its end still comes in `finished`)."""
        if not session.done.is_set():
            self._send(protocol.ExecKill(session.exec_id))

    def wait(self, job_id: str, timeout: float | None = None) -> RunResult:
        """Block until the job has finished. Raises TimeoutError, or InvalidSpec for a
        job this launcher neither runs nor remembers."""
        with self._changed:
            if job_id not in self._running and job_id not in self._results:
                raise InvalidSpec(f"job {job_id} is not known to this runtime")
            if not self._changed.wait_for(lambda: job_id in self._results, timeout):
                raise TimeoutError(f"job {job_id} still running after {timeout} s")
            return self._results[job_id]

    def run(self, spec: RuntimeSpec, timeout: float | None = None,
            stdio: tuple[int, int, int] | None = None) -> RunResult:
        self.submit(spec, stdio)
        return self.wait(spec.job_id, timeout)

    def running(self) -> set[str]:
        with self._changed:
            return set(self._running)

    def sweep(self, timeout: float = 60.0) -> list[str]:
        """Kill and remove jobs a previous helper left behind; returns their ids."""
        with self._changed:
            self._swept = None
        self._send(protocol.Sweep())
        with self._changed:
            if not self._changed.wait_for(lambda: self._swept is not None, timeout):
                raise RuntimeUnavailable("the runtime helper did not finish the sweep")
            return list(self._swept or [])

    # -- plumbing -----------------------------------------------------------------------

    def _send(self, message: protocol.Request, fds: list[int] | None = None) -> None:
        if self._sock is None:
            raise RuntimeUnavailable("the runtime helper is not started")
        try:
            with self._send_lock:
                channel.send(self._sock, protocol.encode(message), fds)
        except OSError as error:
            raise RuntimeUnavailable(f"the runtime helper is gone: {error.strerror or error}") from None

    def _read_events(self) -> None:
        assert self._sock is not None
        try:
            while True:
                event = protocol.decode_event(channel.receive(self._sock))
                if isinstance(event, protocol.Bye):
                    break
                self._on_message(event)
        except (channel.ChannelClosed, OSError, ValueError):
            pass
        self._fail_running("the runtime helper exited")
        if not self._closed and self.on_helper_exit is not None:
            self.on_helper_exit()

    def _on_message(self, event: protocol.Event) -> None:
        if isinstance(event, protocol.Swept):
            with self._changed:
                self._swept = list(event.job_ids)
                self._changed.notify_all()
            return
        if isinstance(event, ExecFinished):
            with self._changed:
                session = self._execs.pop(event.exec_id, None)
            if session is not None:
                session.end(event)
            return
        if isinstance(event, JobFinished):
            self._record(event.result)
        if isinstance(event, (JobStarted, JobFinished)) and self.on_event is not None:
            self.on_event(event)

    def _record(self, result: RunResult) -> None:
        with self._changed:
            self._running.discard(result.job_id)
            self._results[result.job_id] = result
            while len(self._results) > KEEP_RESULTS:
                self._results.popitem(last=False)
            self._changed.notify_all()

    def _fail_running(self, reason: str) -> None:
        """The helper is gone: report every job it had as FAILED, and every command run in
        one as not run, so no caller hangs."""
        with self._changed:
            sessions, self._execs = list(self._execs.values()), {}
        for session in sessions:
            session.end(ExecFinished(session.exec_id, error=reason))
        for job_id in self.running():
            result = RunResult(job_id=job_id, status=FAILED, error=reason)
            self._record(result)
            if self.on_event is not None:
                self.on_event(JobFinished(result))


def _memory_file(data: bytes) -> int:
    fd = os.memfd_create("lclusterd-exec-stdin", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    return fd
