"""The container's mount table as data. Pure.

Planning happens in the fork server; the job init only walks the list (bubblewrap's
SetupOp idea; plan.py turns these ops into the init's tokens). Paths in the "before
pivot" plan are host paths under the job root; the "after pivot" plan uses paths inside
the container.
"""

from __future__ import annotations

from dataclasses import dataclass

from lclusterd.runtime import devices
from lclusterd.runtime import kernel as k

# (name, major, minor): the device nodes a job's /dev gets; devices.py also holds what the
# job's cgroup lets it open.
DEVICES = devices.NODES
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))
# Kernel information a job has no business reading (bind /dev/null over them) ...
MASKED_PATHS = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug")
# ... and kernel knobs it may read but not write.
READONLY_PATHS = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus")


@dataclass(frozen=True)
class Op:
    """One set-up operation: kind is mount, mkdir, mknod, symlink, mask or readonly."""

    kind: str
    target: str
    source: str | None = None
    fstype: str | None = None
    flags: int = 0
    data: str | None = None
    optional: bool = False  # a missing target is skipped, not an error


def plan_before_pivot(root: str, rootfs: str, upper: str, work: str) -> list[Op]:
    """Overlay on the job root, then the pseudo filesystems under it."""
    nosuid_noexec_nodev = k.MS_NOSUID | k.MS_NOEXEC | k.MS_NODEV
    dev = f"{root}/dev"
    plan = [
        Op("mount", root, "overlay", "overlay", 0, f"lowerdir={rootfs},upperdir={upper},workdir={work}"),
        Op("mkdir", f"{root}/proc"),
        Op("mount", f"{root}/proc", "proc", "proc", nosuid_noexec_nodev),
        Op("mkdir", dev),
        Op("mount", dev, "tmpfs", "tmpfs", k.MS_NOSUID | k.MS_NOEXEC, "mode=755,size=65536k"),
    ]
    plan += [Op("mknod", f"{dev}/{name}", data=f"{major}:{minor}") for name, major, minor in DEVICES]
    plan += [Op("symlink", f"{dev}/{name}", source=target) for name, target in DEV_LINKS]
    plan += [
        Op("mkdir", f"{dev}/pts"),
        Op("mount", f"{dev}/pts", "devpts", "devpts", k.MS_NOSUID | k.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620"),
        Op("mkdir", f"{dev}/shm"),
        Op("mount", f"{dev}/shm", "shm", "tmpfs", nosuid_noexec_nodev, "mode=1777,size=65536k"),
        Op("mkdir", f"{dev}/mqueue"),
        Op("mount", f"{dev}/mqueue", "mqueue", "mqueue", nosuid_noexec_nodev),
        Op("mkdir", f"{root}/sys"),
        Op("mount", f"{root}/sys", "sysfs", "sysfs", nosuid_noexec_nodev | k.MS_RDONLY),
        Op("mkdir", f"{root}/tmp"),
        Op("mount", f"{root}/tmp", "tmpfs", "tmpfs", k.MS_NOSUID | k.MS_NODEV, "mode=1777"),
    ]
    return plan


def plan_after_pivot() -> list[Op]:
    plan = [Op("mask", path, optional=True) for path in MASKED_PATHS]
    plan += [Op("readonly", path, optional=True) for path in READONLY_PATHS]
    return plan
