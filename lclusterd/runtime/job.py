"""A job the fork server is running, and how the runtime ends one: SIGTERM to every
process, SIGKILL after a grace period (at once for a lone PID 1 that cannot catch it)."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Container

from lclusterd.runtime.cgroups.base import CgroupDriver, JobCgroup
from lclusterd.runtime.reasons import describe
from lclusterd.runtime.relay import LogRelay
from lclusterd.runtime.result import RunFacts
from lclusterd.runtime.spares import SpareInit
from lclusterd.runtime.spec import RuntimeSpec

if TYPE_CHECKING:  # network.py imports pyroute2, which a node without a job network never loads
    from lclusterd.runtime.network import BridgeNetwork, JobNet


@dataclass
class RunningJob:
    spec: RuntimeSpec
    cgroup: JobCgroup
    spare: SpareInit  # its socket is the job's status: an E line on failure, EOF at exec
    facts: RunFacts
    deadline: float | None  # monotonic time of TIMED_OUT
    relays: list[LogRelay] = field(default_factory=list)  # the output pipes still open
    status_buf: bytes = b""
    status_closed: bool = False
    kill_at: float | None = None  # monotonic time to escalate SIGTERM to SIGKILL
    net: JobNet | None = None  # its share of the node's bridge (net="bridge")
    rootfs_hold: int = -1  # the shared lock on its rootfs (images/inuse.py), closed once it is reaped

    @property
    def host_pid(self) -> int:
        return self.spare.pid

    @property
    def is_done(self) -> bool:
        return self.status_closed and self.facts.wait_status is not None and not self.relays


def begin_kill(job: RunningJob, reason: str, grace: float) -> None:
    """SIGTERM to every process of the job now, SIGKILL to what is left after grace."""
    if job.facts.end_reason is None:
        job.facts.end_reason = reason
    if job.kill_at is not None:
        return  # already ending; keep the earlier escalation time
    if grace <= 0:
        kill_now(job)
        return
    job.kill_at = time.monotonic() + grace
    job.cgroup.signal_all(signal.SIGTERM)
    if job.cgroup.pids() == [job.host_pid] and not catches(job.host_pid, signal.SIGTERM):
        # The kernel drops signals a PID-namespace init has no handler for, so a
        # lone `sleep 600` would sit out the whole grace period for nothing.
        kill_now(job)


def kill_now(job: RunningJob) -> None:
    """SIGKILL the job's PID 1, which takes its whole PID namespace with it (a process
    forked a moment ago included, and even before the job has joined its cgroup), then
    whatever else its cgroup holds. The pid cannot have been reused: it is the fork
    server's child and not reaped yet."""
    try:
        os.kill(job.host_pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    job.cgroup.kill_all()


def answer_network(network: BridgeNetwork, job: RunningJob, upper: str) -> None:
    """The job's init waits in its network step (plan.py): give its namespace its link,
    address, route and /etc files, then let it go on ("G"). If that fails, the init gives up
    ("X": it reports the step failed, this says why)."""
    assert job.net is not None
    ids = job.spare.slot.ids if job.spare.slot is not None else None
    try:
        network.connect(job.net, job.host_pid, ids, job.spec.effective_hostname, upper)
        answer = b"G"
    except Exception as error:  # noqa: BLE001 - whatever it was, the init must not wait forever
        job.facts.notes.append(f"setting up its network failed: {describe(error)}")
        answer = b"X"
    try:
        job.spare.sock.send(answer)
    except OSError:
        pass  # the init is gone: its end is reported as usual


def remove_empty_cgroup(cgroup: JobCgroup) -> None:
    """Remove a finished job's cgroup. Once the job's PID 1 has been reaped its PID
    namespace is empty, so the cgroup is too; kill_all is only the fallback for a
    cgroup the kernel still counts as busy."""
    try:
        cgroup.remove()
    except OSError:
        cgroup.kill_all()
        cgroup.remove()


def sweep_leftovers(driver: CgroupDriver, running: Container[str]) -> list[str]:
    """Kill and remove the job cgroups a previous fork server left under the driver's parent
    (it crashed, or the machine lost the daemon); their job ids. Jobs leave nothing else on
    the host: their mounts and scratch space died with their mount namespaces."""
    found = []
    for name in driver.job_names():
        if name not in running:
            cgroup = driver.open(name)
            cgroup.kill_all()
            cgroup.remove()
            found.append(name)
    return found


def failure_report(raw: bytes) -> dict[str, object]:
    """The job init's failure report (the JSON after its E), or a stand-in if unreadable."""
    try:
        report = json.loads(raw)
        if isinstance(report, dict):
            return report
    except ValueError:
        pass
    return {"step": "start", "detail": "the job init sent an unreadable failure report"}


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
