"""The helper that starts every job, one loop: `python -m lclusterd.runtime.forkserver`.

The daemon runs gRPC and etcd threads, and a threaded Python process must not fork a
child that goes on running Python. So the launcher starts this helper as a fresh process
(fork + exec, safe from any thread) and talks to it over a socket (protocol.py). It runs
one select loop over: requests, signals, each job's status socket and output pipes, and
timers (timeouts and kill grace periods). Nothing in here blocks on a job.

A job's first process is `lclusterd-jobinit`, a small static C binary (jobinit/jobinit.c)
that executes a plan built in plan.py; spares.py keeps some spawned ahead (its own thread).
Starting a job clones its volumes (volumes.py), makes its cgroup, opens its stdio (its output
through log relays when it has a log cap) and hands a spare the job's plan.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import selectors
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING

from lclusterd.errors import LclusterdError, SetupFailed
from lclusterd.runtime import channel, kernel, plan, protocol, users, volumes
from lclusterd.runtime.cgroups import Limits
from lclusterd.runtime.cgroups.base import CgroupDriver, JobCgroup
from lclusterd.runtime.execs import Execs
from lclusterd.runtime.images import inuse
from lclusterd.runtime.mounts import Scratch
from lclusterd.runtime.job import (RunningJob, answer_network, begin_kill, failure_report, kill_now, remove_empty_cgroup,
                                   sweep_leftovers)
from lclusterd.runtime.netconf import DEFAULT_BRIDGE, NoNetwork
from lclusterd.runtime.reasons import close_all as _close_all, describe, note_cleanup as _note_cleanup, reason as _reason
from lclusterd.runtime.relay import LogRelay
from lclusterd.runtime.result import RunFacts, result_of
from lclusterd.runtime.serversetup import setup
from lclusterd.runtime.spares import SpareInit, SparePool
from lclusterd.runtime.spec import FAILED, KILLED, TIMED_OUT, RunResult, RuntimeSpec
from lclusterd.runtime.stdio import open_stdio
from lclusterd.runtime.userns import IdRange

if TYPE_CHECKING:  # imported at start only by a fork server with a job network (pyroute2 is big)
    from lclusterd.runtime.network import BridgeNetwork

log = logging.getLogger("lclusterd.forkserver")

MAX_SELECT_WAIT = 3600.0


class ForkServer:
    def __init__(self, sock: socket.socket, driver: CgroupDriver, pool: SparePool, keep_caps: int, cap_last: int,
                 network: BridgeNetwork | NoNetwork, volume_roots: volumes.VolumeRoots):
        self.sock, self.volume_roots = sock, volume_roots  # volume roots: where jobs' volumes may come from
        self.network = network  # the node's bridge for jobs with net="bridge", or none to refuse them
        self.driver = driver
        self.pool = pool
        self.scratch: Scratch = pool.setup.scratch
        self.keep_caps = keep_caps
        self.cap_last = cap_last
        self.jobs: dict[str, RunningJob] = {}
        self.by_pid: dict[int, RunningJob] = {}
        self.stopping = False
        self.selector = selectors.DefaultSelector()
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)  # where capped output goes; execs' stdin
        self.execs = Execs(pool.setup, self.devnull, self._send)  # commands run inside running jobs (execs.py)

    # -- the loop ---------------------------------------------------------------------

    def serve(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)  # the wakeup fd carries the news
        self.selector.register(self.sock, selectors.EVENT_READ, self._on_request)
        self.selector.register(wake_r, selectors.EVENT_READ, lambda: self._on_signals(os.read(wake_r, 512)))
        if self.network.watch is not None:  # the kernel removed finished jobs' veths: their addresses are free
            self.selector.register(self.network.watch, selectors.EVENT_READ, self.network.on_links)
        self._send(protocol.Ready(os.getpid(), self.driver.version))
        while not (self.stopping and not self.jobs):
            for key, _ in self.selector.select(self._next_timer()):
                # One failing event (a kernel file gone, a job's socket in a state we
                # did not foresee) must not take every other job's helper down.
                try:
                    key.data()
                except Exception:  # noqa: BLE001
                    log.exception("handling an event failed")
            self._fire_timers()
            if not self.stopping:
                self.pool.refill()
        self.pool.end_all()
        try:
            self.driver.leave_device_rules()
            self.driver.remove_parent()
        except OSError as error:
            log.warning("%s", describe(error))
        try:  # apart: a busy cgroup must not leave the network's addresses and bridge behind
            self.network.close()
        except OSError as error:
            log.warning("%s", describe(error))
        self._send(protocol.Bye())

    def _on_signals(self, signums: bytes) -> None:
        if signal.SIGTERM in signums or signal.SIGINT in signums:
            self._stop(kill=True)
        self._reap()

    def _on_request(self) -> None:
        try:
            data, fds = channel.receive_with_fds(self.sock)
        except (channel.ChannelClosed, ConnectionError):
            # The launcher is gone: nobody will collect results, so end every job.
            self.selector.unregister(self.sock)
            self._stop(kill=True)
            return
        try:
            request = protocol.decode_request(data)
        except protocol.ProtocolError as error:
            _close_all(fds)
            self._refuse(data, str(error))
            return
        if isinstance(request, protocol.Start):
            self._start(request.spec, fds)
            return
        if isinstance(request, protocol.Exec):
            self.execs.start(request, fds, self.jobs.get(request.job_id))
            return
        _close_all(fds)
        if isinstance(request, protocol.Kill):
            job = self.jobs.get(request.job_id)
            if job is not None:
                begin_kill(job, KILLED, job.spec.grace if request.grace is None else request.grace)
        elif isinstance(request, protocol.ExecKill):
            self.execs.kill(request.exec_id)
        elif isinstance(request, protocol.Sweep):
            self._send(protocol.Swept(tuple(sweep_leftovers(self.driver, self.jobs))))
        else:
            self._stop(kill=request.kill)

    def _refuse(self, data: object, reason: str) -> None:
        """A request we cannot decode; a start is answered FAILED so its caller never waits."""
        log.warning("refusing a malformed request: %s", reason)
        spec = data.get("spec") if isinstance(data, dict) else None
        job_id = spec.get("job_id") if isinstance(spec, dict) else None
        if isinstance(data, dict) and data.get("type") == "Start" and isinstance(job_id, str):
            self._send_result(RunResult(job_id=job_id, status=FAILED, error=f"bad start request: {reason}"))

    def _send(self, message: protocol.Event) -> None:
        try:
            channel.send(self.sock, protocol.encode(message))
        except OSError:
            pass  # launcher gone; _on_request notices the EOF and stops

    def _send_result(self, result: RunResult) -> None:
        self._send(protocol.JobFinished(result))

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
            with inuse.holding(spec.rootfs) as hold:  # first: a missing rootfs, or one being removed, starts nothing
                self._start_job(spec, started_at, stdio, hold)
        except (LclusterdError, OSError) as error:
            _close_all(stdio)
            self._send_result(RunResult(job_id=spec.job_id, status=FAILED, error=_reason(error),
                                        started_at=started_at, finished_at=time.time()))

    def _start_job(self, spec: RuntimeSpec, started_at: float, stdio: list[int], hold: int) -> None:
        """Make the job's cgroup and open its stdio, then hand it to a spare init; `hold` (its
        rootfs held in use) is the job's once it is started, else still the caller's.
        Everything that can fail on bad input fails here, before the job has a process."""
        # no User, no file read; with user namespaces every id must be in the job's slot
        user = users.resolve(spec.rootfs, spec.user, self.pool.setup.slots is not None) if spec.user else None
        opened = stdio  # one list: whatever is opened here is closed with the caller's fds
        relays: list[LogRelay] = []
        cgroup: JobCgroup | None = None
        trees: list[int] = []  # the volumes' detached mounts (volumes.py)
        net = self.network.reserve(spec)  # first: a port in use refuses the job before anything is made
        try:
            trees = volumes.open_all(self.volume_roots, spec.volumes) if spec.volumes else []
            cgroup = self.driver.create(spec.job_id, Limits(spec.memory_bytes, spec.cpus, spec.pids))
            fds = stdio or open_stdio(spec, opened, relays, self.devnull)
            spare = self._hand_over(spec, cgroup, fds + trees, net is not None, user)
        except BaseException as error:
            _close_all(trees)
            _close_all(opened)
            for relay in relays:
                relay.close()
            _note_cleanup(error, lambda: cgroup.remove() if cgroup else None)
            _note_cleanup(error, lambda: self.network.release(net))
            raise
        _close_all(trees)
        _close_all(opened)  # the job holds its own copies now
        deadline = time.monotonic() + spec.timeout if spec.timeout else None
        facts = RunFacts(spec.job_id, spare.pid, started_at, spec.timeout, address=net and str(net.address))
        job = RunningJob(spec, cgroup, spare, facts, deadline, relays, net=net, rootfs_hold=hold)
        self.jobs[spec.job_id] = self.by_pid[spare.pid] = job
        self.selector.register(spare.sock, selectors.EVENT_READ, lambda: self._on_status(job))
        for relay in relays:
            self.selector.register(relay.fileno(), selectors.EVENT_READ, functools.partial(self._on_output, job, relay))

    def _hand_over(self, spec: RuntimeSpec, cgroup: JobCgroup, fds: list[int], network: bool,
                   user: users.Credentials | None) -> SpareInit:
        """Give the job's plan and `fds` (stdio, then the volumes' mounts) to a waiting spare (or a
        new one). A spare that died waiting is dropped and a fresh one spawned (the plan rebuilt)."""
        env = spec.job_environment(user.home) if user else spec.job_environment()
        for attempt in (1, 2):
            spare = self.pool.take()
            prepared = plan.PreparedJob(
                job_id=spec.job_id, argv=spec.argv, env=env, cwd=spec.cwd, user=user,
                hostname=spec.effective_hostname, rootfs=spec.rootfs, cgroup_procs=cgroup.procs_files,
                keep_caps=self.keep_caps, cap_last=self.cap_last, ids=spare.slot.ids if spare.slot else None,
                writable_bytes=spec.memory_bytes // 2 if spec.memory_bytes else None, network=network,
                volumes=volumes.places(spec.volumes))
            try:
                channel.send_bytes(spare.sock, plan.encode(plan.job_plan(prepared, self.scratch)), fds)
                return spare
            except OSError:
                self.pool.discard(spare)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # -- following a job ------------------------------------------------------------------

    def _on_status(self, job: RunningJob) -> None:
        try:
            data = job.spare.sock.recv(4096)
        except ConnectionResetError:
            # Killed before it read its job: a socket closed with unread data resets.
            data = b""
        if data[:1] == b"N" and job.net is not None and not job.status_buf:  # its init waits in op network
            answer_network(self.network, job, self.scratch.upper)
            if len(data) == 1:
                return
            data = data[1:]
        if data:
            job.status_buf += data
            return
        self.selector.unregister(job.spare.sock)
        job.spare.sock.close()
        job.status_closed = True
        if job.status_buf.startswith(b"E"):
            job.facts.failure = failure_report(job.status_buf[1:])
        else:
            self._send(protocol.JobStarted(job.spec.job_id, job.host_pid, job.facts.started_at, job.facts.address))
        self._finish_if_done(job)

    def _on_output(self, job: RunningJob, relay: LogRelay) -> None:
        if not relay.pump():
            return
        self.selector.unregister(relay.fileno())
        relay.close()
        job.relays.remove(relay)
        job.facts.written[relay.stream] = relay.written
        if relay.dropped:
            job.facts.dropped[relay.stream] = relay.dropped
        if relay.error:
            job.facts.notes.append(relay.error)
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
            if job is not None:
                job.facts.wait_status = status
                self._finish_if_done(job)
            elif not self.execs.reaped(pid, status):
                self.pool.reaped(pid)  # a spare that died waiting

    def _finish_if_done(self, job: RunningJob) -> None:
        if job.is_done and job.spec.job_id in self.jobs:
            self._finish(job)

    def _finish(self, job: RunningJob) -> None:
        """Read the job's accounting, then remove its cgroup and free its ids. Its mounts
        went with its mount namespace when its last process exited."""
        del self.jobs[job.spec.job_id]
        try:
            job.facts.stats = job.cgroup.stats()
        except OSError as error:
            job.facts.notes.append(f"reading cgroup statistics failed: {describe(error)}")
        try:
            remove_empty_cgroup(job.cgroup)
        except OSError as error:
            job.facts.notes.append(f"removing the cgroup failed: {describe(error)}")
            log.warning("job %s: %s", job.spec.job_id, job.facts.notes[-1])
        SparePool.release(job.spare)
        os.close(job.rootfs_hold)
        try:
            self.network.release(job.net)
        except OSError as error:
            job.facts.notes.append(f"releasing the job's network failed: {describe(error)}")
        self._send_result(result_of(job.facts, time.time()))

    # -- ending jobs ----------------------------------------------------------------------

    def _next_timer(self) -> float | None:
        times = [t for job in self.jobs.values() for t in (job.deadline, job.kill_at) if t is not None]
        if self.network.deadline is not None:  # a finished job's veth to delete
            times.append(self.network.deadline)
        if not times:
            return None
        # epoll takes its timeout in int milliseconds (under 25 days): wake up now and then
        # and look again rather than overflow it with a long job timeout.
        return min(max(0.0, min(times) - time.monotonic()), MAX_SELECT_WAIT)

    def _fire_timers(self) -> None:
        now = time.monotonic()
        self.network.expire(now)
        for job in list(self.jobs.values()):
            if job.kill_at is not None and now >= job.kill_at:
                job.kill_at = None
                job.deadline = None
                kill_now(job)
            elif job.deadline is not None and now >= job.deadline:
                job.deadline = None
                begin_kill(job, TIMED_OUT, job.spec.grace)

    def _stop(self, kill: bool) -> None:
        self.stopping = True
        self.execs.kill_all()
        if kill:
            for job in list(self.jobs.values()):
                begin_kill(job, KILLED, job.spec.grace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lclusterd.runtime.forkserver")
    parser.add_argument("--fd", type=int, required=True, help="the launcher's socket")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--cgroup-parent", default="lclusterd")
    parser.add_argument("--userns-uids", type=IdRange.parse, help="START:COUNT host uids for jobs' user namespaces")
    parser.add_argument("--userns-gids", type=IdRange.parse, help="START:COUNT host gids for jobs' user namespaces")
    parser.add_argument("--node-memory", type=int, help="memory ceiling of all jobs together (bytes)")
    parser.add_argument("--node-pids", type=int, help="pids ceiling of all jobs together")
    parser.add_argument("--bridge", default=DEFAULT_BRIDGE, help="the job network's bridge (with --subnet)")
    parser.add_argument("--subnet", help="the job network's IPv4 subnet: jobs with net=bridge get addresses of it")
    parser.add_argument("--volume-root", action="append", default=[], help="a directory jobs' volumes may come from")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="lclusterd: forkserver: %(levelname)s %(message)s")
    sock = socket.socket(fileno=args.fd)
    kernel.set_process_name("lclusterd:fork")
    # Python ignores these at start-up, and an ignored signal survives exec: keep the
    # defaults a shell would give, so jobs inherit them (sends use MSG_NOSIGNAL).
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    # If the daemon dies without telling us, end the jobs rather than orphan them.
    kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGTERM)
    try:
        roots = volumes.VolumeRoots.checked(args.volume_root)  # a missing root fails the start, naming it
        driver, pool, network = setup(args)
    except (LclusterdError, OSError, ValueError) as error:
        channel.send(sock, protocol.encode(protocol.NotReady(_reason(error))))
        return 1
    server = ForkServer(sock, driver, pool, pool.setup.keep_caps, pool.setup.cap_last, network, roots)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
