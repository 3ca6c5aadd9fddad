"""What the host gives the integration tests, and what a node leaves on it: the rootfs
`make prep` builds, the cgroup version, and a node's cgroups under /sys/fs/cgroup."""

from __future__ import annotations

import os
from pathlib import Path

from lclusterd.runtime.cgroups import detect

ROOTFS = os.environ.get("LCLUSTERD_TEST_ROOTFS", "/var/lib/lclusterd/rootfs")
CGROUP_VERSION = detect().version


def job_cgroups_left(node_name: str) -> list[Path]:
    """Job cgroups under the node's parent, in any hierarchy (v1) or the v2 tree."""
    root = Path("/sys/fs/cgroup")
    parents = [*root.glob(f"*/lclusterd/{node_name}"), root / "lclusterd" / node_name]
    return sorted(p for parent in parents if parent.is_dir() for p in parent.iterdir() if p.is_dir())


def remove_cgroup_parent(node_name: str) -> None:
    """A daemon that was killed (-9) cannot remove its node's parent cgroup; do it."""
    root = Path("/sys/fs/cgroup")
    for parent in [*root.glob(f"*/lclusterd/{node_name}"), root / "lclusterd" / node_name]:
        for path in (parent, parent.parent):
            try:
                path.rmdir()
            except OSError:
                pass
