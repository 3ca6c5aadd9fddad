"""The one interface both cgroup drivers implement. Callers never check the version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None = None
    cpus: float | None = None  # fraction of cores, becomes a CFS quota over a 100 ms period
    pids: int | None = None


@dataclass(frozen=True)
class NodeLimits:
    """Hard ceilings for a node's jobs together, on the driver's parent cgroup (the
    kernel charges every job below it there too). None is no ceiling: the kernel's
    default is written back, so a ceiling an earlier run set does not linger."""

    memory_bytes: int | None = None
    pids: int | None = None


@dataclass(frozen=True)
class CgroupStats:
    """Read once at the job's end, before the cgroup is removed."""

    oom_kills: int  # processes the kernel OOM killer killed inside this cgroup
    peak_memory_bytes: int | None  # None where the kernel does not keep a peak
    cpu_seconds: float | None


class JobCgroup(Protocol):
    """The cgroup (v2) or set of per-controller cgroups (v1) of one job."""

    name: str

    @property
    def procs_files(self) -> list[str]:
        """Files a process writes "0" into to move itself into this cgroup: the job init
        does so first thing (plan.job_plan)."""
        ...

    def join_self(self) -> None:
        """Move the calling process into the cgroup (b"0" to each procs file), as the job
        init does; for a forked child that does not go through the init."""
        ...

    def pids(self) -> list[int]:
        """Host pids of every process in the cgroup."""
        ...

    def is_empty(self) -> bool: ...

    def signal_all(self, sig: int) -> None:
        """Send sig to every process in the cgroup; processes already gone are fine."""
        ...

    def kill_all(self) -> None:
        """SIGKILL every process, atomically against forks (v2 cgroup.kill; v1 freeze,
        kill, thaw), and return once the cgroup is empty or after a few seconds."""
        ...

    def stats(self) -> CgroupStats: ...

    def remove(self) -> None:
        """Remove the cgroup directories; retries briefly while the kernel still
        counts exiting tasks. Missing directories are fine."""
        ...


class CgroupDriver(Protocol):
    """Creates job cgroups under one parent (e.g. "lclusterd") of one hierarchy layout.
    Made by detect(), which only reads: a driver is also a cheap query (job_names, open)."""

    version: int  # 1 or 2
    parent: str

    def prepare(self, node: NodeLimits | None = None) -> None:
        """Make the parent (mkdir -p; v2 enables memory, pids and cpu down the path), keep
        its jobs off every device but those of devices.py, and write the node's ceilings
        on the parent's last path component when `node` is given (None leaves the
        parent's limits as they are). Again on a prepared parent is fine."""
        ...

    def device_procs_files(self) -> list[str]:
        """cgroup.procs files a job's init writes "0" into, besides its own cgroup's, to
        come under the device rules: v1 the parent's in the devices hierarchy; v2 none
        (the job's cgroup inherits the parent's device program)."""
        ...

    def enter_device_rules(self) -> None:
        """Move the calling process under the device rules (v1: into the parent's devices
        cgroup; v2: nothing). The fork server does so once at start, so that every job init
        it spawns is born under them: one cgroup migration per job fewer, and on v1 each
        migration waits for the kernel's cgroup_threadgroup_rwsem."""
        ...

    def leave_device_rules(self) -> None:
        """Move the calling process back to the devices hierarchy's root (v1; v2: nothing),
        so that remove_parent can remove the parent."""
        ...

    def create(self, name: str, limits: Limits) -> JobCgroup:
        """Make the job's cgroup with its limits written (unset limits keep the kernel's
        default). The first call prepare()s the parent, with no node ceilings, when
        nobody has yet. Raises OSError naming the file, FileExistsError when the
        cgroup exists; on failure nothing of the job's cgroup is left."""
        ...

    def open(self, name: str) -> JobCgroup:
        """The cgroup of an existing job (for kill and clean-up after a restart).
        Touches nothing: a cgroup that does not exist reads as empty."""
        ...

    def remove_parent(self) -> None:
        """rmdir the parent, and its own parents up the path, while they are empty
        (another runtime's jobs keep a shared ancestor in place)."""
        ...

    def job_names(self) -> list[str]:
        """Names of the job cgroups that exist under the parent (for the start-up sweep)."""
        ...
