"""Job cgroups behind one interface: detect() picks the v1 or v2 driver once, at start-up,
and callers use only CgroupDriver and JobCgroup (see base.py)."""

from __future__ import annotations

import os
from pathlib import Path

from lclusterd.errors import SetupFailed

from .base import CgroupDriver, CgroupStats, JobCgroup, Limits, NodeLimits
from .v1 import V1Driver, read_file
from .v2 import CONTROLLERS as V2_CONTROLLERS
from .v2 import V2Driver

__all__ = ["CgroupDriver", "CgroupStats", "JobCgroup", "Limits", "NodeLimits", "V1Driver", "V2Driver",
           "cgroup_version", "detect", "find_v1_hierarchies"]

# cpuacct gives the CPU time; devices keeps jobs off the host's devices; no freezer is
# needed (see v1.py).
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "devices")


def cgroup_version(root: Path = Path("/sys/fs/cgroup")) -> int:
    """2 when `root` is a cgroup2 mount, else 1. A hybrid host (v1 controllers plus a
    cgroup2 mount at `root/unified`) counts as v1, as in youki: the controllers are v1."""
    return 2 if (root / "cgroup.controllers").exists() else 1


def find_v1_hierarchies(root: Path) -> dict[str, Path]:
    """controller -> the v1 hierarchy directory under `root` that has it, read from the
    directory names (`memory`, or `cpu,cpuacct` for controllers mounted together)."""
    try:
        entries = list(os.scandir(root))
    except OSError as e:
        raise OSError(e.errno, f"list {root}: {e.strerror}") from e
    # Real directories before symlinks: systemd adds `cpu -> cpu,cpuacct`, and both
    # names must map to the one directory so that it is used once.
    entries.sort(key=lambda e: (e.is_symlink(), e.name))
    found: dict[str, Path] = {}
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir() and (path / "cgroup.procs").exists():  # a mounted hierarchy
            for controller in entry.name.split(","):
                found.setdefault(controller, path)
    return found


def detect(root: Path = Path("/sys/fs/cgroup"), parent: str = "lclusterd") -> CgroupDriver:
    """The driver for this host's cgroups, for job cgroups under `parent`. Only reads:
    the parent is made by the first create() (or the driver's prepare()). Raises
    SetupFailed naming a controller the host does not have."""
    root = Path(root)
    if cgroup_version(root) == 2:
        available = read_file(root / "cgroup.controllers").split()
        missing = [c for c in V2_CONTROLLERS if c not in available]
        if missing:
            raise SetupFailed(
                "cgroups", f"cgroup v2 controller(s) {', '.join(missing)} not in {root}/cgroup.controllers")
        return V2Driver(root, parent)
    found = find_v1_hierarchies(root)
    missing = [c for c in V1_CONTROLLERS if c not in found]
    if missing:
        raise SetupFailed(
            "cgroups",
            f"cgroup v1 controller(s) {', '.join(missing)} not mounted under {root}, "
            f"and {root} is not a cgroup v2 mount either (no cgroup.controllers)",
        )
    shared = [c for c in V1_CONTROLLERS if c != "devices" and found[c] == found["devices"]]
    if shared:
        # Job directories would sit below the devices parent, whose deny-all the kernel
        # refuses while it has children, and a job joining the parent there would leave
        # its own cgroup in that hierarchy.
        raise SetupFailed(
            "cgroups", f"cgroup v1 devices is mounted together with {', '.join(shared)} at {found['devices']}; "
            "lclusterd needs it in a hierarchy of its own")
    return V1Driver({c: found[c] for c in V1_CONTROLLERS}, parent)
