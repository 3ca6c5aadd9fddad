"""cgroup v2 driver: one directory per job, `<root>/<parent>/<name>`, in the unified tree.

cgroup v2 has no devices controller: devices are filtered by a BPF program
(device_filter.py) that prepare() attaches to the parent. The kernel runs, for a
process's access to a device, the programs of its own cgroup or, where that has none,
of its nearest ancestor that has one, so a program on the parent covers every job
cgroup below it, made before or after the attach, exactly as one attached to each job
would, with no bpf() calls on a job's start path. Attached with flags 0, it also keeps
anything below from attaching a program of its own (EPERM).
"""

from __future__ import annotations

import os
from pathlib import Path

from lclusterd.errors import SetupFailed
from lclusterd.runtime import bpf
from lclusterd.runtime.devices import ALLOWED

from .base import CgroupStats, Limits, NodeLimits
from .device_filter import build_program

# The file helpers are shared by both drivers; they live with the older one.
from .v1 import (
    CFS_PERIOD_US,
    KILL_TIMEOUT_S,
    check_name,
    kill_until_empty,
    remove_empty_ancestors,
    make_dir,
    make_dirs,
    read_file,
    read_key,
    read_optional,
    read_pids,
    remove_dir,
    signal_pids,
    wait_until,
    write_file,
)

CONTROLLERS = ("memory", "pids", "cpu")
FREEZE_TIMEOUT_S = 1.0
DEVICE_PROGRAM = build_program(ALLOWED)
DEVICE_PROGRAM_NAME = "lclusterd_dev"  # as bpftool lists it


class V2Cgroup:
    """One job's cgroup directory (`path`)."""

    def __init__(self, name: str, path: Path):
        self.name = name
        self.path = path
        self._procs_file = str(path / "cgroup.procs")  # the job init joins through it

    @property
    def procs_files(self) -> list[str]:
        return [self._procs_file]

    def join_self(self) -> None:
        write_file(self._procs_file, b"0")

    def pids(self) -> list[int]:
        return read_pids(self.path / "cgroup.procs")

    def is_empty(self) -> bool:
        return not self.pids()

    def signal_all(self, sig: int) -> None:
        signal_pids(self.pids(), sig)

    def _event(self, key: str) -> int | None:
        return read_key(read_optional(self.path / "cgroup.events"), key)

    def kill_all(self) -> None:
        kill = self.path / "cgroup.kill"
        if kill.exists():  # Linux >= 5.14: the kernel kills the whole tree, forks included
            write_file(kill, "1")
            wait_until(lambda: not self._event("populated"), KILL_TIMEOUT_S)
        else:
            self.freeze_and_kill()

    def freeze_and_kill(self) -> None:
        """kill_all for kernels without cgroup.kill (5.2 to 5.13)."""
        freeze_file = self.path / "cgroup.freeze"

        def freeze() -> None:
            write_file(freeze_file, "1")
            wait_until(lambda: self._event("frozen") == 1, FREEZE_TIMEOUT_S)

        kill_until_empty(self.pids, freeze, lambda: write_file(freeze_file, "0"))

    def stats(self) -> CgroupStats:
        oom_kills = read_key(read_optional(self.path / "memory.events"), "oom_kill")
        peak = read_optional(self.path / "memory.peak")  # Linux >= 5.19
        usage_us = read_key(read_optional(self.path / "cpu.stat"), "usage_usec")
        return CgroupStats(
            oom_kills=oom_kills or 0,
            peak_memory_bytes=int(peak) if peak is not None else None,
            cpu_seconds=usage_us / 1e6 if usage_us is not None else None,
        )

    def remove(self) -> None:
        remove_dir(self.path)


class V2Driver:
    """Job cgroups under `<root>/<parent>`. Making a driver touches nothing, so it doubles
    as a query (job_names); the first create() makes the parent (mkdir -p) and enables
    memory, pids and cpu for it, or call prepare() at start-up to fail early and to set
    the node's ceilings."""

    version = 2

    def __init__(self, root: Path = Path("/sys/fs/cgroup"), parent: str = "lclusterd"):
        self.root = Path(root)
        self.parent = parent
        self.parent_dir = self.root / parent
        self.prepared = False

    def remove_parent(self) -> None:
        remove_empty_ancestors(self.root, self.parent)
        self.prepared = False

    def prepare(self, node: NodeLimits | None = None) -> None:
        make_dirs(self.parent_dir)
        # A controller reaches a cgroup only when every ancestor enables it in its
        # cgroup.subtree_control, so enable top down, the parent's own level included.
        level = self.root
        enable_controllers(level)
        for part in Path(self.parent).parts:
            level = level / part
            enable_controllers(level)
        enabled = read_file(self.parent_dir / "cgroup.subtree_control").split()
        missing = [c for c in CONTROLLERS if c not in enabled]
        if missing:
            raise SetupFailed(
                "cgroups",
                f"cgroup v2 controller(s) {', '.join(missing)} cannot be enabled for "
                f"{self.parent_dir}: not in an ancestor's cgroup.controllers",
            )
        # On the parent, not on each job: see the module's doc. A second attach replaces
        # the program an earlier run left.
        attach_device_filter(self.parent_dir)
        if node is not None:
            write_node_limits(self.parent_dir, node)
        self.prepared = True

    def device_procs_files(self) -> list[str]:
        return []  # a job's own cgroup is under the parent's device program

    def enter_device_rules(self) -> None:
        """Nothing to enter: every job cgroup inherits the parent's device program."""

    def leave_device_rules(self) -> None:
        """Nothing to leave (see enter_device_rules)."""

    def open(self, name: str) -> V2Cgroup:
        check_name(name)
        return V2Cgroup(name, self.parent_dir / name)

    def create(self, name: str, limits: Limits) -> V2Cgroup:
        cgroup = self.open(name)
        if not self.prepared:
            self.prepare()
        make_dir(cgroup.path)
        try:
            write_limits(cgroup.path, limits)
        except BaseException as err:
            try:
                remove_dir(cgroup.path)
            except OSError as cleanup:
                err.add_note(f"cleanup also failed: {cleanup}")
            raise
        return cgroup

    def job_names(self) -> list[str]:
        try:
            return sorted(
                e.name for e in os.scandir(self.parent_dir) if e.is_dir(follow_symlinks=False)
            )
        except FileNotFoundError:
            return []


def enable_controllers(level: Path) -> None:
    """Enable for the children of `level` those of CONTROLLERS it has and has not
    enabled yet; writing only what is missing leaves a shared root alone."""
    available = read_file(level / "cgroup.controllers").split()
    enabled = read_file(level / "cgroup.subtree_control").split()
    wanted = [c for c in CONTROLLERS if c in available and c not in enabled]
    if wanted:
        write_file(level / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))


def attach_device_filter(cgroup_dir: Path) -> None:
    """Load DEVICE_PROGRAM and attach it to the cgroup with flags 0 (replacing any device
    program attached there so)."""
    fd = bpf.load_device_program(DEVICE_PROGRAM, DEVICE_PROGRAM_NAME)
    try:
        bpf.attach_device_program(str(cgroup_dir), fd)
    finally:
        os.close(fd)  # the attachment holds the program


def write_node_limits(path: Path, node: NodeLimits) -> None:
    """The node's ceilings on its parent cgroup; None writes the default ("max") back."""
    write_file(path / "memory.max", "max" if node.memory_bytes is None else str(node.memory_bytes))
    swap = path / "memory.swap.max"
    if swap.exists():  # absent without swap accounting
        write_file(swap, "max" if node.memory_bytes is None else "0")
    write_file(path / "pids.max", "max" if node.pids is None else str(node.pids))


def write_limits(path: Path, limits: Limits) -> None:
    """Write the limits that are set; unset ones keep the kernel's default ("max")."""
    if limits.memory_bytes is not None:
        write_file(path / "memory.max", str(limits.memory_bytes))
        # No swap at all, so swap cannot be used to go past memory.max. Absent without
        # swap accounting.
        swap = path / "memory.swap.max"
        if swap.exists():
            write_file(swap, "0")
    if limits.pids is not None:
        write_file(path / "pids.max", str(limits.pids))
    if limits.cpus is not None:
        quota = round(limits.cpus * CFS_PERIOD_US)  # round, not int: 0.29 * 100000 is 28999.99...
        write_file(path / "cpu.max", f"{quota} {CFS_PERIOD_US}")
