"""Facts about the host a node offers to its jobs, read from the kernel."""

from __future__ import annotations

import os

DEFAULT_ROOTFS = "/var/lib/lclusterd/rootfs"  # where `make prep` builds the default root filesystem


def total_memory() -> int:
    """The host's MemTotal in bytes (0 if the kernel does not say)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def pid_max() -> int:
    """The highest pid the kernel hands out (kernel.pid_max)."""
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read())


def cores() -> int:
    return os.cpu_count() or 1
