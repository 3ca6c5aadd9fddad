"""The fixtures of the control-plane tests, registered for every integration test by
tests/integration/conftest.py (a test names them; it imports nothing for them).

    etcd            one real etcd member on free ports, data in tmp_path (per test)
    module_etcd     the same for a whole test module (module-scoped)
    etcd_cluster    three real etcd members on one --initial-cluster (per test)
    cluster         a processes.Cluster on `etcd`: start nodes with cluster.daemon(name)
    cluster3        a processes.Cluster on `etcd_cluster`

Every one stops what it started at teardown (nodes before etcd). Without etcd installed
they fail, saying so (processes.require_etcd).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import Cluster, EtcdCluster, EtcdProcess


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    """A real etcd on free ports, data in tmp_path; stopped at teardown."""
    directory = tmp_path / "etcd"
    directory.mkdir()
    server = EtcdProcess(directory)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    """A real etcd for the whole module (for nodes that the module's tests share); stopped at teardown."""
    server = EtcdProcess(tmp_path_factory.mktemp("module-etcd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """Three real etcd members on free loopback ports; every member stopped at teardown."""
    members = EtcdCluster(tmp_path / "etcd3")
    try:
        members.start()
        yield members
    finally:
        members.stop()


@pytest.fixture
def cluster(tmp_path: Path, etcd: EtcdProcess) -> Iterator[Cluster]:
    """Nodes on `etcd` under a key prefix of their own; stopped (before etcd) at teardown."""
    c = Cluster(tmp_path, etcd)
    yield c
    c.close()


@pytest.fixture
def cluster3(tmp_path: Path, etcd_cluster: EtcdCluster) -> Iterator[Cluster]:
    """Nodes on the 3-member etcd cluster; stopped (before etcd) at teardown."""
    c = Cluster(tmp_path, etcd_cluster)
    try:
        yield c
    finally:
        c.close()
