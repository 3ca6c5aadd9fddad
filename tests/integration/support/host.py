"""What the host gives the integration tests, and what a node leaves on it: the rootfs
`make prep` builds, the cgroup version, and a node's cgroups under /sys/fs/cgroup."""

from __future__ import annotations

import os
from pathlib import Path

from lclusterd.runtime.cgroups import detect

ROOTFS = os.environ.get("LCLUSTERD_TEST_ROOTFS", "/var/lib/lclusterd/rootfs")
CGROUP_VERSION = detect().version
# The test run's nodes keep their parent cgroups under a root of the run's own (lclusterd
# --cgroup-root), so runs from two checkouts at once never sweep each other's jobs, whatever
# node names their tests share.
CGROUP_ROOT = os.environ.get("LCLUSTERD_TEST_CGROUP_ROOT", f"lclusterd-test{os.getpid()}")


def job_cgroups_left(node_name: str) -> list[Path]:
    """Job cgroups under the node's parent, in any hierarchy (v1) or the v2 tree."""
    root = Path("/sys/fs/cgroup")
    parents = [*root.glob(f"*/{CGROUP_ROOT}/{node_name}"), root / CGROUP_ROOT / node_name]
    return sorted(p for parent in parents if parent.is_dir() for p in parent.iterdir() if p.is_dir())


def remove_cgroup_parent(node_name: str) -> None:
    """A daemon that was killed (-9) cannot remove its node's parent cgroup; do it."""
    root = Path("/sys/fs/cgroup")
    for parent in [*root.glob(f"*/{CGROUP_ROOT}/{node_name}"), root / CGROUP_ROOT / node_name]:
        for path in (parent, parent.parent):
            try:
                path.rmdir()
            except OSError:
                pass
