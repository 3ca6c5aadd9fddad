"""The fixtures of the control-plane tests, registered for every integration test by
tests/integration/conftest.py (a test names them; it imports nothing for them).

    etcd            one real etcd member on free ports, data in tmp_path (per test)
    module_etcd     the same for a whole test module (module-scoped)
    etcd_cluster    three real etcd members on one --initial-cluster (per test)
    etcd_pki        a test PKI (support.etcd_pki.Pki): a CA, member certificates m0..m2, client lclusterd
    etcd_cluster_tls  three members speaking only TLS, to clients and peers with etcd_pki's certificates
    cluster         a processes.Cluster on `etcd`: start nodes with cluster.daemon(name)
    cluster3        a processes.Cluster on `etcd_cluster`
    cluster3_tls    a processes.Cluster on `etcd_cluster_tls` (its nodes get the client certificate)

Every one stops what it started at teardown (nodes before etcd). Without etcd installed
they fail, saying so (processes.require_etcd).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import Cluster, EtcdCluster, EtcdProcess
from support.etcd_pki import Pki


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
def etcd_pki(tmp_path: Path) -> Pki:
    """A CA with a member certificate for m0, m1, m2 and the client certificate lclusterd."""
    return Pki.make(tmp_path / "pki", ["m0", "m1", "m2"])


@pytest.fixture
def etcd_cluster_tls(tmp_path: Path, etcd_pki: Pki) -> Iterator[EtcdCluster]:
    """Three real etcd members, TLS only, clients and peers with a certificate of etcd_pki only."""
    members = EtcdCluster(tmp_path / "etcd3-tls", pki=etcd_pki)
    try:
        members.start()
        yield members
    finally:
        members.stop()


@pytest.fixture
def cluster3_tls(tmp_path: Path, etcd_cluster_tls: EtcdCluster) -> Iterator[Cluster]:
    """Nodes on the 3-member TLS etcd cluster, each with the client certificate; stopped first."""
    c = Cluster(tmp_path, etcd_cluster_tls)
    try:
        yield c
    finally:
        c.close()


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
