"""What the fork server sets up before its loop (forkserver.main): the job network, the cgroup
driver with the jobs' parent cgroup and device rules, the scratch directory and the spare
pool. Each fails with its reason, so a host that cannot run jobs says why at start."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from lclusterd.errors import SetupFailed
from lclusterd.runtime import caps, plan
from lclusterd.runtime.cgroups import NodeLimits, detect
from lclusterd.runtime.cgroups.base import CgroupDriver
from lclusterd.runtime.mounts import Scratch
from lclusterd.runtime.netconf import NetworkConfig, NoNetwork, open_network
from lclusterd.runtime.spares import SparePool, SpareSetup
from lclusterd.runtime.userns import Slots

if TYPE_CHECKING:  # imported at start only by a fork server with a job network (pyroute2 is big)
    from lclusterd.runtime.network import BridgeNetwork


def setup(args: argparse.Namespace) -> tuple[CgroupDriver, SparePool, BridgeNetwork | NoNetwork]:
    """The job network first (a subnet in use or no nft fails before anything is made), then
    the rest. Raises LclusterdError or OSError with the reason."""
    network = open_network(NetworkConfig(args.bridge, args.subnet) if args.subnet else None)
    try:
        return (*_setup_jobs(args), network)
    except BaseException:
        network.close()
        raise


def _setup_jobs(args: argparse.Namespace) -> tuple[CgroupDriver, SparePool]:
    """The cgroup driver (its parent made now, so a host without the controllers fails at
    start) and the spare pool."""
    if not os.access(plan.JOBINIT, os.X_OK):
        raise SetupFailed("job init", f"{plan.JOBINIT} is missing or not executable (build it with `make prep`)")
    driver = detect(parent=args.cgroup_parent)
    driver.prepare(NodeLimits(args.node_memory, args.node_pids) if args.node_memory or args.node_pids else None)
    scratch = Scratch(os.path.join(args.state_dir, "root"))
    os.makedirs(scratch.path, 0o700, exist_ok=True)
    slots = Slots(args.userns_uids, args.userns_gids) if args.userns_uids else None
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    keep = caps.mask_of(caps.DEFAULT_KEEP)
    driver.enter_device_rules()  # every job init it spawns is born under them
    setup = SpareSetup(str(plan.JOBINIT), scratch, keep, caps.last_cap(), own_pid_ns, slots)
    return driver, SparePool(setup)
