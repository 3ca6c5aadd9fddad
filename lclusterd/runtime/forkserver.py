"""The single-threaded helper that starts every job: `python -m lclusterd.runtime.forkserver`.

The daemon runs gRPC and etcd threads, and a threaded Python process must not fork a
child that goes on running Python. So the launcher starts this helper as a fresh
process (fork + exec, safe from any thread) and sends it job specs over a socket. It
runs one select loop over: requests, SIGCHLD, each job's status socket, and timers
(timeouts and kill grace periods). Nothing in here blocks on a job.

A job's first process is `lclusterd-jobinit`, a small static C binary (jobinit/jobinit.c)
that executes a plan built in plan.py. The helper unshares CLONE_NEWPID (which applies
to its next child only), spawns the init with posix_spawn (vfork + exec: no copy of this
process's page tables) and returns to its own PID namespace with setns. Forking this
Python process instead cost about 2.5 ms of CPU per job in page-table copies and
copy-on-write faults on both sides, and the child's Python run of the set-up another
1 ms. And the spawn happens ahead of time: SPARES inits wait with their namespaces,
scratch tmpfs, loopback and bounding set ready, so a job start hands one its plan and
spawns the next spare after, off the start path.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from lclusterd.errors import LclusterdError, SetupFailed
from lclusterd.runtime import caps, channel, kernel, plan
from lclusterd.runtime.cgroups import Limits, detect
from lclusterd.runtime.cgroups.base import CgroupDriver, JobCgroup
from lclusterd.runtime.spec import (EXITED, FAILED, KILLED, OOM_KILLED, TIMED_OUT, RunResult,
                                    RuntimeSpec)


SPARES = 2  # one per core keeps two parallel streams off the spawn
# Reset in the init: an ignored signal survives exec, and the job gets a shell's defaults.
_DEFAULT_SIGNALS = [s for s in range(1, 32) if s not in (signal.SIGKILL, signal.SIGSTOP)]


@dataclass
class SpareInit:
    """A spawned job init waiting for its job's plan on `sock` (see plan.spare_plan)."""

    pid: int
    sock: socket.socket


@dataclass
class RunningJob:
    spec: RuntimeSpec
    cgroup: JobCgroup
    status: socket.socket  # the spare's socket: an E line on failure, EOF at exec
    host_pid: int
    started_at: float  # unix time
    deadline: float | None  # monotonic time of TIMED_OUT
    status_buf: bytes = b""
    status_closed: bool = False
    wait_status: int | None = None
    failure: dict[str, Any] | None = None
    end_reason: str | None = None  # KILLED or TIMED_OUT once the runtime started ending it
    kill_at: float | None = None  # monotonic time to escalate SIGTERM to SIGKILL

    @property
    def is_done(self) -> bool:
        return self.status_closed and self.wait_status is not None


@dataclass
class ForkServer:
    sock: socket.socket
    state_dir: str
    driver: CgroupDriver
    keep_caps: int = caps.mask_of(caps.DEFAULT_KEEP)
    cap_last: int = field(default_factory=caps.last_cap)
    jobs: dict[str, RunningJob] = field(default_factory=dict)
    by_pid: dict[int, RunningJob] = field(default_factory=dict)
    spares: deque[SpareInit] = field(default_factory=deque)
    own_pid_ns: int = -1  # fd of this process's PID namespace, to return to after each spawn
    stopping: bool = False
    spare_error: str = ""  # the last reason a spare could not be spawned, reported once
    jobinit: str = str(plan.JOBINIT)

    @property
    def mount_point(self) -> str:
        """Where every job mounts its scratch tmpfs and overlay. One directory serves all
        jobs: each mounts in its own mount namespace, so none sees another's mounts."""
        return os.path.join(self.state_dir, "root")

    # -- the loop ---------------------------------------------------------------------

    def serve(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)  # the wakeup fd carries the news
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sock, selectors.EVENT_READ, "control")
        self.selector.register(wake_r, selectors.EVENT_READ, "signal")
        self._send({"event": "ready", "pid": os.getpid(), "cgroup_version": self.driver.version})
        while not (self.stopping and not self.jobs):
            for key, _ in self.selector.select(self._next_timer()):
                # One failing event (a kernel file gone, a job's socket in a state we
                # did not foresee) must not take every other job's helper down.
                try:
                    if key.data == "control":
                        self._on_request()
                    elif key.data == "signal":
                        self._on_signals(os.read(wake_r, 512))
                    else:
                        self._on_status(key.data)
                except Exception:  # noqa: BLE001
                    traceback.print_exc()
            self._fire_timers()
            self._refill_spares()
        self._end_spares()
        try:
            self.driver.remove_parent()
        except OSError as error:
            print(f"lclusterd forkserver: {describe(error)}", file=sys.stderr)
        self._send({"event": "bye"})

    def _on_signals(self, signums: bytes) -> None:
        if signal.SIGTERM in signums or signal.SIGINT in signums:
            self._stop(kill=True)
        self._reap()

    def _on_request(self) -> None:
        try:
            request, fds = channel.receive_with_fds(self.sock)
        except (channel.ChannelClosed, ConnectionError):
            # The launcher is gone: nobody will collect results, so end every job.
            self.selector.unregister(self.sock)
            self._stop(kill=True)
            return
        try:
            self._handle(request, fds)
        except Exception as error:  # noqa: BLE001 - one bad request must not stop every job
            print(f"lclusterd forkserver: request {request.get('op')!r} failed: {error!r}", file=sys.stderr)
            if request.get("op") == "start":
                job_id = str(request.get("spec", {}).get("job_id", ""))
                self._send_result(RunResult(job_id=job_id, status=FAILED, error=f"bad start request: {error}"))

    def _handle(self, request: dict[str, Any], fds: list[int]) -> None:
        op = request.get("op")
        if op == "start":
            self._start(RuntimeSpec.from_json(request["spec"]), fds)
        elif op == "kill":
            job = self.jobs.get(request["job_id"])
            if job is not None:
                grace = request.get("grace")
                self._begin_kill(job, KILLED, job.spec.grace if grace is None else grace)
        elif op == "sweep":
            self._send({"event": "swept", "job_ids": self._sweep()})
        elif op == "shutdown":
            self._stop(kill=bool(request.get("kill", True)))
        else:
            print(f"lclusterd forkserver: unknown request {op!r}", file=sys.stderr)

    def _send(self, message: dict[str, Any]) -> None:
        try:
            channel.send(self.sock, message)
        except OSError:
            pass  # launcher gone; _on_request notices the EOF and stops

    # -- starting -----------------------------------------------------------------------

    def _start(self, spec: RuntimeSpec, stdio: list[int]) -> None:
        """stdio: the job's stdin, stdout and stderr as open fds (ours to close), or
        empty to use the spec's stdin data and log paths."""
        started_at = time.time()
        try:
            spec.validate()
            if spec.job_id in self.jobs:
                raise SetupFailed("start", f"job {spec.job_id} is already running")
            if stdio and len(stdio) != 3:
                raise SetupFailed("start", f"expected 3 stdio descriptors, got {len(stdio)}")
            self._start_job(spec, started_at, stdio)
        except (LclusterdError, OSError) as error:
            for fd in stdio:
                _close_quietly(fd)
            self._send_result(RunResult(job_id=spec.job_id, status=FAILED, error=_reason(error),
                                        started_at=started_at, finished_at=time.time()))

    def _start_job(self, spec: RuntimeSpec, started_at: float, stdio: list[int]) -> None:
        """Make the job's cgroup and open its files, then hand it to a spare init.
        Everything that can fail on bad input fails here, before the job has a process.
        The job has no directory on the host: its overlay's upper and work directories
        live on a tmpfs in its own mount namespace (plan.spare_plan), gone with it."""
        if not os.path.isdir(spec.rootfs):
            raise SetupFailed("rootfs", f"rootfs {spec.rootfs} does not exist (build it with `make rootfs`)")
        opened: list[int] = list(stdio)
        cgroup: JobCgroup | None = None
        try:
            cgroup = self.driver.create(spec.job_id, Limits(spec.memory_bytes, spec.cpus, spec.pids))
            if stdio:
                stdin_fd, stdout_fd, stderr_fd = stdio
            else:
                stdin_fd = _open_stdin(spec, opened)
                stdout_fd = _open_log(spec.stdout_path, opened)
                stderr_fd = _open_log(spec.stderr_path, opened)
            prepared = plan.PreparedJob(
                job_id=spec.job_id, argv=spec.argv, env=spec.job_environment(), cwd=spec.cwd,
                hostname=spec.effective_hostname, rootfs=spec.rootfs,
                cgroup_procs=cgroup.procs_files, keep_caps=self.keep_caps)
            spare = self._hand_over(prepared, [stdin_fd, stdout_fd, stderr_fd])
        except BaseException as error:
            for fd in opened:
                _close_quietly(fd)
            del opened[:]
            _note_cleanup(error, lambda: cgroup.remove() if cgroup else None)
            raise
        for fd in opened:
            os.close(fd)
        deadline = time.monotonic() + spec.timeout if spec.timeout else None
        job = RunningJob(spec=spec, cgroup=cgroup, status=spare.sock,
                         host_pid=spare.pid, started_at=started_at, deadline=deadline)
        self.jobs[spec.job_id] = job
        self.by_pid[spare.pid] = job
        self.selector.register(spare.sock, selectors.EVENT_READ, job)

    # -- following a job ------------------------------------------------------------------

    def _hand_over(self, prepared: plan.PreparedJob, stdio: list[int]) -> SpareInit:
        """Give the job's plan to a waiting spare (or a new one). A spare that died while
        waiting is dropped and a fresh one spawned."""
        message = plan.encode(plan.job_plan(prepared, self.mount_point))
        spare = self.spares.popleft() if self.spares else self._spawn_spare()
        try:
            channel.send_bytes(spare.sock, message, stdio)
        except OSError:
            self._discard_spare(spare)
            spare = self._spawn_spare()
            channel.send_bytes(spare.sock, message, stdio)
        return spare

    def _spawn_spare(self) -> SpareInit:
        """A new job init, PID 1 of a new PID namespace, running the spare's plan; its
        socket is its fd 3."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [self.jobinit, *plan.spare_plan(self.mount_point, self.keep_caps, self.cap_last)]
        try:
            kernel.unshare(kernel.CLONE_NEWPID)
            try:
                pid = os.posix_spawn(self.jobinit, argv, {}, file_actions=[(os.POSIX_SPAWN_DUP2, theirs.fileno(), 3)],
                                     setsigmask=(), setsigdef=_DEFAULT_SIGNALS)
            finally:  # later children go back to our own namespace
                kernel.setns(self.own_pid_ns, kernel.CLONE_NEWPID)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return SpareInit(pid, ours)

    def _refill_spares(self) -> None:
        while len(self.spares) < SPARES and not self.stopping:
            try:
                self.spares.append(self._spawn_spare())
                self.spare_error = ""
            except OSError as error:  # e.g. out of pids: jobs spawn on demand instead
                if describe(error) != self.spare_error:  # say it once, not every loop
                    self.spare_error = describe(error)
                    print(f"lclusterd forkserver: cannot spawn a spare: {self.spare_error}", file=sys.stderr)
                return

    def _discard_spare(self, spare: SpareInit) -> None:
        spare.sock.close()  # an idle spare exits when its socket closes
        try:
            os.kill(spare.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _end_spares(self) -> None:
        while self.spares:
            spare = self.spares.popleft()
            self._discard_spare(spare)
            try:
                os.waitpid(spare.pid, 0)
            except ChildProcessError:
                pass

    def _on_status(self, job: RunningJob) -> None:
        try:
            data = job.status.recv(4096)
        except ConnectionResetError:
            # Killed before it read its job: a socket closed with unread data resets.
            data = b""
        if data:
            job.status_buf += data
            return
        self.selector.unregister(job.status)
        job.status.close()
        job.status_closed = True
        if job.status_buf.startswith(b"E"):
            job.failure = json.loads(job.status_buf[1:])
        else:
            self._send({"event": "started", "job_id": job.spec.job_id, "host_pid": job.host_pid,
                        "started_at": job.started_at})
        self._finish_if_done(job)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job = self.by_pid.pop(pid, None)
            if job is None:  # a spare that died waiting (it is never in by_pid)
                for spare in [sp for sp in self.spares if sp.pid == pid]:
                    self.spares.remove(spare)
                    spare.sock.close()
            else:
                job.wait_status = status
                self._finish_if_done(job)

    def _finish_if_done(self, job: RunningJob) -> None:
        if job.is_done and job.spec.job_id in self.jobs:
            self._finish(job)

    def _finish(self, job: RunningJob) -> None:
        """Read the job's accounting, then remove everything it had: the cgroup (after
        killing anything left in it) and its directory. Its mounts went with its mount
        namespace when its last process exited."""
        del self.jobs[job.spec.job_id]
        result = RunResult(job_id=job.spec.job_id, status=EXITED, host_pid=job.host_pid,
                           started_at=job.started_at)
        notes: list[str] = []
        try:
            stats = job.cgroup.stats()
            result.oom_kills = stats.oom_kills
            result.peak_memory_bytes = stats.peak_memory_bytes
            result.cpu_seconds = stats.cpu_seconds
        except OSError as error:
            notes.append(f"reading cgroup statistics failed: {describe(error)}")
        try:
            _remove_empty_cgroup(job.cgroup)
        except OSError as error:
            notes.append(f"removing the cgroup failed: {describe(error)}")
            print(f"lclusterd forkserver: job {job.spec.job_id}: {notes[-1]}", file=sys.stderr)
        if job.wait_status is not None:
            if os.WIFSIGNALED(job.wait_status):
                result.signal = os.WTERMSIG(job.wait_status)
            else:
                result.exit_code = os.waitstatus_to_exitcode(job.wait_status)
        if job.failure is not None:
            result.status, result.exit_code, result.signal = FAILED, None, None
            result.error = f"{job.failure['step']}: {job.failure['detail']}"
        elif job.end_reason == TIMED_OUT:
            result.status = TIMED_OUT
            result.error = f"timed out after {job.spec.timeout:g} s"
        elif job.end_reason == KILLED:
            result.status = KILLED
        elif result.oom_kills:
            result.status = OOM_KILLED
            result.error = f"{result.oom_kills} process(es) killed by the kernel OOM killer"
        elif result.signal is not None:
            result.status = KILLED
        if notes:
            result.error = "; ".join([result.error, *notes] if result.error else notes)
        result.finished_at = time.time()
        self._send_result(result)

    def _send_result(self, result: RunResult) -> None:
        self._send({"event": "finished", "result": result.to_json()})

    # -- ending jobs ----------------------------------------------------------------------

    def _begin_kill(self, job: RunningJob, reason: str, grace: float) -> None:
        """SIGTERM to every process of the job now, SIGKILL to what is left after grace."""
        if job.end_reason is None:
            job.end_reason = reason
        if job.kill_at is not None:
            return  # already ending; keep the earlier escalation time
        if grace <= 0:
            self._kill_now(job)
            return
        job.kill_at = time.monotonic() + grace
        job.cgroup.signal_all(signal.SIGTERM)
        if job.cgroup.pids() == [job.host_pid] and not catches(job.host_pid, signal.SIGTERM):
            # The kernel drops signals a PID-namespace init has no handler for, so a
            # lone `sleep 600` would sit out the whole grace period for nothing.
            self._kill_now(job)

    def _kill_now(self, job: RunningJob) -> None:
        """SIGKILL the job's PID 1, which takes its whole PID namespace with it (a
        process forked a moment ago included, and even before the job has joined its
        cgroup), then whatever else its cgroup holds. The pid cannot have been reused:
        it is our child and not reaped yet."""
        try:
            os.kill(job.host_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        job.cgroup.kill_all()

    def _next_timer(self) -> float | None:
        times = [t for job in self.jobs.values() for t in (job.deadline, job.kill_at) if t is not None]
        if not times:
            return None
        return max(0.0, min(times) - time.monotonic())

    def _fire_timers(self) -> None:
        now = time.monotonic()
        for job in list(self.jobs.values()):
            if job.kill_at is not None and now >= job.kill_at:
                job.kill_at = None
                job.deadline = None
                self._kill_now(job)
            elif job.deadline is not None and now >= job.deadline:
                job.deadline = None
                self._begin_kill(job, TIMED_OUT, job.spec.grace)

    def _stop(self, kill: bool) -> None:
        self.stopping = True
        if kill:
            for job in list(self.jobs.values()):
                self._begin_kill(job, KILLED, job.spec.grace)

    def _sweep(self) -> list[str]:
        """Kill and remove the job cgroups a previous helper left under our cgroup
        parent (it crashed, or the machine lost the daemon). Returns their job ids.
        Jobs leave nothing else on the host: their mounts and scratch space died with
        their mount namespaces."""
        found = []
        for name in self.driver.job_names():
            if name not in self.jobs:
                cgroup = self.driver.open(name)
                cgroup.kill_all()
                cgroup.remove()
                found.append(name)
        return found


def _remove_empty_cgroup(cgroup: JobCgroup) -> None:
    """Remove a finished job's cgroup. Once the job's PID 1 has been reaped its PID
    namespace is empty, so the cgroup is too; kill_all is only the fallback for a
    cgroup the kernel still counts as busy."""
    try:
        cgroup.remove()
    except OSError:
        cgroup.kill_all()
        cgroup.remove()


def _open_stdin(spec: RuntimeSpec, opened: list[int]) -> int:
    """/dev/null, or the spec's stdin data in a memory file (no disk, nothing to remove)."""
    if spec.stdin_data is None:
        fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    else:
        fd = os.memfd_create(f"lclusterd-stdin-{spec.job_id}", os.MFD_CLOEXEC)
        opened.append(fd)
        view = memoryview(spec.stdin_data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
        return fd
    opened.append(fd)
    return fd


def _open_log(path: str | None, opened: list[int]) -> int:
    if path is None:
        fd = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
    else:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        except OSError as error:
            raise SetupFailed("log file", f"cannot open {path}: {error.strerror}", error.errno) from error
    opened.append(fd)
    return fd


def catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for signum (the SigCgt mask of its status)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    except FileNotFoundError:
        pass
    return False


def describe(error: BaseException) -> str:
    """A one-line reason: OSErrors without the "[Errno N]" prefix, with the file named."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return str(error) or type(error).__name__


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _reason(error: BaseException) -> str:
    return str(error) if isinstance(error, LclusterdError) else describe(error)


def _note_cleanup(error: BaseException, cleanup: Any) -> None:
    """Run a cleanup step; its failure is added to the error as a note, never replaces it."""
    try:
        cleanup()
    except OSError as cleanup_error:
        error.add_note(f"cleanup also failed: {describe(cleanup_error)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lclusterd.runtime.forkserver")
    parser.add_argument("--fd", type=int, required=True, help="the launcher's socket")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--cgroup-parent", default="lclusterd")
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    kernel.set_process_name("lclusterd:fork")
    # Python ignores these at start-up, and an ignored signal survives exec: keep the
    # defaults a shell would give, so jobs inherit them (sends use MSG_NOSIGNAL).
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    # If the daemon dies without telling us, end the jobs rather than orphan them.
    kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGTERM)
    try:
        if not os.access(plan.JOBINIT, os.X_OK):
            raise SetupFailed("job init", f"{plan.JOBINIT} is missing or not executable (build it with `make prep`)")
        driver = detect(parent=args.cgroup_parent)
        os.makedirs(os.path.join(args.state_dir, "root"), 0o700, exist_ok=True)
    except (LclusterdError, OSError) as error:
        channel.send(sock, {"event": "error", "message": _reason(error)})
        return 1
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    ForkServer(sock=sock, state_dir=args.state_dir, driver=driver, own_pid_ns=own_pid_ns).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
