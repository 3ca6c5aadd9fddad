"""The integration tests run as root on the rootfs `make prep` builds, or not at all. This
conftest refuses to start without them, registers the fixtures of support/fixtures.py for every
test here, and holds the runtime's fixtures (`rootfs`, `runtime`). The helpers themselves live
in support/ (see support/__init__.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from lclusterd.runtime import leases, nft, userns
from lclusterd.runtime.cgroups import detect
from lclusterd.runtime.launcher import IdRanges, Launcher
from lclusterd.runtime.netconf import NetworkConfig

# Before anything imports them: the helpers' asserts explain their failures as a test's do.
pytest.register_assert_rewrite("support", "prime_stream")

from support.host import CGROUP_VERSION, ROOTFS  # noqa: E402

# Test ids say which cgroup driver ran and that it was the real one.
DRIVER_ID = f"cgroup-v{CGROUP_VERSION}-real"


def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("the integration tests run as root (they create namespaces and cgroups)")
    if not os.path.isfile(os.path.join(ROOTFS, "bin", "busybox")):
        raise pytest.UsageError(f"no rootfs at {ROOTFS}: run `make prep` first")
    # `pytest_plugins = ["support.fixtures"]` would say the same, but pytest refuses it in a
    # conftest below the directory a run starts from (`make test` runs `pytest` on tests/).
    config.pluginmanager.import_plugin("support.fixtures")


@pytest.fixture(scope="session")
def rootfs() -> str:
    return ROOTFS


def user_namespaces() -> IdRanges:
    """The ranges `make prep` gives the user lclusterd (the tests fail without them)."""
    ranges = userns.subordinate_ranges()
    assert ranges is not None, userns.MISSING_RANGES
    return ranges


@pytest.fixture(scope="session", params=["userns", "no-userns"], ids=lambda mode: f"{DRIVER_ID}-{mode}")
def runtime(request: pytest.FixtureRequest) -> Iterator[RuntimeUnderTest]:
    """One fork server per user-namespace mode for the whole session (as the daemon has),
    under its own cgroup parent and state directory, with a job network of its own (bridge
    and subnet apart from the default lcl0 and from other runs). Ids say the driver and the
    mode: `cgroup-v1-real-userns` (jobs' root is an unprivileged host uid, the default) or
    `...-no-userns` (`--userns off`)."""
    state_dir = tempfile.mkdtemp(prefix="lclusterd-test-", dir="/var/tmp")
    parent = f"lclusterd-test-{os.getpid()}-{request.param}"
    network = network_for(request.param)
    launcher = Launcher(state_dir, cgroup_parent=parent, network=network,
                        userns=user_namespaces() if request.param == "userns" else None)
    launcher.start()
    yield RuntimeUnderTest(launcher, Path(state_dir), parent, request.param == "userns", network)
    launcher.close()
    shutil.rmtree(state_dir, ignore_errors=True)
    assert cgroup_parent_dirs(parent) == [], "the runtime left its parent cgroup behind"
    assert network.bridge not in host_links(), "the runtime left its bridge behind"
    assert [r for r in our_rules() if network.bridge in r] == [], "the runtime left its nftables rules behind"


def network_for(mode: str, salt: int = 0) -> NetworkConfig:
    """A bridge and a /25 for one fork server of this test run: named and numbered after the
    pid, so concurrent runs (and the node default lcl0, 10.88.0.0/16) never meet."""
    n = (os.getpid() + salt) % 12800
    half = 0 if mode == "userns" else 128
    return NetworkConfig(f"lclt{n}{mode[0]}", f"10.{200 + n // 256}.{n % 256}.{half}/25")


class RuntimeUnderTest:
    def __init__(self, launcher: Launcher, state_dir: Path, cgroup_parent: str, userns: bool, network: NetworkConfig):
        self.launcher = launcher
        self.state_dir = state_dir
        self.cgroup_parent = cgroup_parent
        self.userns = userns
        self.network = network
        self.host_links = host_links()
        self.host_addresses = host_addresses()
        self.host_routes = host_routes()
        self.rules = our_rules()

    def leftovers(self, settle: float = 10.0) -> list[str]:
        """Everything a finished job could leave behind, described; empty when clean. A bridge
        job's veth (and so its address lease) goes with its network namespace, which the kernel
        tears down a moment after the job's last process: this waits up to `settle` seconds for
        that, as for any condition a test cannot be told about."""
        deadline = time.monotonic() + settle
        while (found := self._leftovers()) and time.monotonic() < deadline:
            time.sleep(0.02)
        return found

    def _leftovers(self) -> list[str]:
        found = []
        # The state dir holds only the shared (empty) mount point: jobs keep their
        # scratch space in their own mount namespaces.
        found += [f"state file {p}" for p in self.state_dir.rglob("*") if p != self.state_dir / "root"]
        found += [f"job cgroup {n}" for n in detect(parent=self.cgroup_parent).job_names()]
        with open("/proc/self/mountinfo") as f:
            found += [f"mount {line.split()[4]}" for line in f if str(self.state_dir) in line]
        found += [f"running job {j}" for j in self.launcher.running()]
        found += [f"network interface {name}" for name in host_links() - self.host_links]
        found += [f"host address {a}" for a in host_addresses() - self.host_addresses]
        found += [f"host route {r}" for r in host_routes() - self.host_routes]
        found += [f"nftables rule {r}" for r in our_rules() if r not in self.rules]
        lease_dir = Path(leases.LOCK_DIR, self.network.bridge)
        found += [f"address lease {p.name}" for p in lease_dir.iterdir() if p.name != leases.USERS]
        return found


def host_links() -> set[str]:
    """The host's network interfaces (a job must never add one, e.g. a veth)."""
    with IPRoute() as ipr:
        return {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}


def host_addresses() -> set[str]:
    """Every address on the host's interfaces, with the interface's index."""
    with IPRoute() as ipr:
        return {f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']} on {m['index']}" for m in ipr.get_addr()}


def host_routes() -> set[str]:
    """The host's IPv4 routes in every table, without their flags (`linkdown` comes and goes
    with the bridge's carrier: the kernel reports a bridge without ports a moment late)."""
    done = subprocess.run(["ip", "-j", "route", "show", "table", "all"], capture_output=True, text=True, check=True)
    return {json.dumps({k: v for k, v in route.items() if k != "flags"}, sort_keys=True) for route in json.loads(done.stdout)}


def our_rules() -> list[str]:
    """The rules of the runtime's nftables table, each as chain, comment and what it does."""
    done = subprocess.run(["nft", "-j", "list", "table", nft.FAMILY, nft.TABLE], capture_output=True, text=True)
    if done.returncode != 0:
        return []  # no table: no rules
    return [json.dumps({k: v for k, v in item["rule"].items() if k != "handle"}, sort_keys=True)
            for item in json.loads(done.stdout)["nftables"] if "rule" in item]


def cgroup_parent_dirs(parent: str) -> list[Path]:
    """The directories of a runtime's parent cgroup that exist, in every hierarchy."""
    root = Path("/sys/fs/cgroup")
    candidates = [root / parent] if CGROUP_VERSION == 2 else [d / parent for d in root.iterdir() if d.is_dir()]
    return [path for path in candidates if path.is_dir()]
