"""The container's mount table as data. Pure.

Planning happens in the fork server; the job init only walks the list (bubblewrap's
SetupOp idea; plan.py turns these ops into the init's tokens). Paths in the "before
pivot" plan are host paths under the job root; the "after pivot" plan uses paths inside
the container.

Device policy: every place a job can write is nodev (its writable layer, /tmp, /dev
itself, /dev/shm), so a device node it makes there cannot be opened; the few devices it
gets are bind mounts of the host's nodes, each a mount of its own without nodev. The
cgroup device list (devices.py) is the kernel's second word on the same question.
"""

from __future__ import annotations

from dataclasses import dataclass

from lclusterd.runtime import devices
from lclusterd.runtime import kernel as k

# (name, major, minor): the device nodes a job's /dev gets, bind-mounted from the host's /dev;
# devices.py also holds what the job's cgroup lets it open.
DEVICES = devices.NODES
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))
# Kernel information a job has no business reading (bind /dev/null over them) ...
MASKED_PATHS = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug")
# ... and kernel knobs it may read but not write.
READONLY_PATHS = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus")

NOSUID_NODEV = k.MS_NOSUID | k.MS_NODEV
NOSUID_NOEXEC_NODEV = k.MS_NOSUID | k.MS_NOEXEC | k.MS_NODEV


@dataclass(frozen=True)
class Op:
    """One set-up operation: kind is mount, mkdir, file, symlink, mask or readonly."""

    kind: str
    target: str
    source: str | None = None
    fstype: str | None = None
    flags: int = 0
    data: str | None = None
    optional: bool = False  # a missing target is skipped, not an error


@dataclass(frozen=True)
class Scratch:
    """A spare's scratch tmpfs (in its own mount namespace): the overlay's upper and work
    directories, the job's /tmp, the mount point of the idmapped rootfs, and the job root."""

    path: str

    @property
    def upper(self) -> str:
        return f"{self.path}/upper"

    @property
    def work(self) -> str:
        return f"{self.path}/work"

    @property
    def tmp(self) -> str:
        return f"{self.path}/tmp"

    @property
    def lower(self) -> str:
        return f"{self.path}/lower"

    @property
    def root(self) -> str:
        return f"{self.path}/root"


def bind(source: str, target: str, flags: int = 0) -> list[Op]:
    """A bind mount; flags other than MS_BIND only take effect on a remount of the bind."""
    ops = [Op("mount", target, source, None, k.MS_BIND)]
    if flags:
        ops.append(Op("mount", target, None, None, k.MS_BIND | k.MS_REMOUNT | flags))
    return ops


def plan_before_pivot(scratch: Scratch, lowerdir: str) -> list[Op]:
    """Overlay on the job root (lower: the rootfs, or its idmapped bind), then the pseudo
    filesystems and /tmp under it."""
    root, dev = scratch.root, f"{scratch.root}/dev"
    overlay = f"lowerdir={lowerdir},upperdir={scratch.upper},workdir={scratch.work}"
    plan = [
        Op("mount", root, "overlay", "overlay", NOSUID_NODEV, overlay),
        Op("mkdir", f"{root}/proc"),
        Op("mount", f"{root}/proc", "proc", "proc", NOSUID_NOEXEC_NODEV),
        Op("mkdir", dev),
        Op("mount", dev, "tmpfs", "tmpfs", NOSUID_NOEXEC_NODEV, "mode=755,size=65536k"),
    ]
    for name, _major, _minor in DEVICES:
        plan += [Op("file", f"{dev}/{name}"), *bind(f"/dev/{name}", f"{dev}/{name}")]
    plan += [Op("symlink", f"{dev}/{name}", source=target) for name, target in DEV_LINKS]
    plan += [
        Op("mkdir", f"{dev}/pts"),
        # Not nodev: the terminals a job opens are device nodes on this mount.
        Op("mount", f"{dev}/pts", "devpts", "devpts", k.MS_NOSUID | k.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620"),
        Op("mkdir", f"{dev}/shm"),
        Op("mount", f"{dev}/shm", "shm", "tmpfs", NOSUID_NOEXEC_NODEV, "mode=1777,size=65536k"),
        Op("mkdir", f"{dev}/mqueue"),
        Op("mount", f"{dev}/mqueue", "mqueue", "mqueue", NOSUID_NOEXEC_NODEV),
        Op("mkdir", f"{root}/sys"),
        Op("mount", f"{root}/sys", "sysfs", "sysfs", NOSUID_NOEXEC_NODEV | k.MS_RDONLY),
        Op("mkdir", f"{root}/tmp"),
        # /tmp shares the scratch tmpfs with the writable layer: one size cap for both.
        *bind(scratch.tmp, f"{root}/tmp", NOSUID_NODEV),
    ]
    return plan


def plan_after_pivot() -> list[Op]:
    plan = [Op("mask", path, optional=True) for path in MASKED_PATHS]
    plan += [Op("readonly", path, optional=True) for path in READONLY_PATHS]
    return plan
