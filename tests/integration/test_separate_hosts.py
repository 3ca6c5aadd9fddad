"""Nodes on separate hosts: three nodes and a 3-member etcd, each in a network namespace of its
own with its own address on a bridge (support/hosts.py), reaching each other only over that
network: etcd speaks TLS to its peers and to the nodes (a CA of its own), the nodes serve
mutual TLS to clients and to each other (the cluster CA). A job added at one node runs on
another and its logs are read through the first; callers without a good certificate and
users acting beyond their rights are refused; a host that dies with every process on it
fails over as on one machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lclusterd import certs
from support.hosts import Host, Lan
from support.jobs import until
from support.processes import Cluster, EtcdProcess, NodeProcess, run_lclient
from support.tls import expired_user, make_pki

ETCD_MEMBERS, NODES = ("e0", "e1", "e2"), ("n1", "n2", "n3")
REFUSED = 4


class EtcdOnHost(EtcdProcess):
    """An etcd member serving TLS on its host's address."""

    def __init__(self, directory: Path, host: Host, pki: Path, initial_cluster: str):
        self.host = host
        super().__init__(directory, host.name)
        self.pki, self.scheme = pki, "https"
        self.client_port, self.peer_port = 2379, 2380
        self.initial_cluster = initial_cluster

    @property
    def endpoint(self) -> str:
        return f"https://{self.host.address}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{self.host.address}:{self.peer_port}"

    def launch(self) -> None:
        ca, cert, key = (str(self.pki / f) for f in ("ca.pem", f"{self.name}.pem", f"{self.name}-key.pem"))
        self.process = self.host.popen(
            ["etcd", "--name", self.name, "--data-dir", str(self.dir / "data"),
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
             "--initial-cluster", self.initial_cluster, "--log-level", "warn",
             "--client-cert-auth", "--trusted-ca-file", ca, "--cert-file", cert, "--key-file", key,
             "--peer-client-cert-auth", "--peer-trusted-ca-file", ca, "--peer-cert-file", cert, "--peer-key-file", key],
            self.dir / "etcd.log")


class NodeOnHost(NodeProcess):
    """An lclusterd node started inside its host's network namespace, serving on its address."""

    def __init__(self, directory: Path, host: Host, prefix: str, extra: list[str]):
        super().__init__(directory, None, prefix, host.name, ["--namespace", host.address, *extra])
        self.host = host

    @property
    def server(self) -> str:
        return f"{self.host.address}:{self.port}"

    def argv(self) -> list[str]:
        return self.host.command(super().argv())


def etcdctl(endpoints: str, tls: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["etcdctl", "--endpoints", endpoints, *tls, *args], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "ETCDCTL_API": "3"})


@pytest.fixture
def world() -> Iterator[dict]:
    place = Path(tempfile.mkdtemp(prefix="lclusterd-hosts-", dir="/var/tmp"))
    lan = Lan([*ETCD_MEMBERS, *NODES]).up()
    cluster = Cluster(place, None)
    members: list[EtcdOnHost] = []
    try:
        etcd_pki = place / "etcd-pki"  # etcd's own CA: an API user's certificate is no key to etcd
        certs.init_ca(etcd_pki)
        for name in ETCD_MEMBERS:
            certs.issue(etcd_pki, name, certs.SERVER, (lan[name].address,))
        certs.issue(etcd_pki, "lclusterd", certs.CLIENT)
        api = make_pki(place / "api-pki", nodes={n: [lan[n].address] for n in NODES},
                       users={"ann": False, "bob": False, "boss": True})
        expired_user(api, "late")
        make_pki(place / "other-ca", nodes={}, users={"ann": False})
        initial = ",".join(f"{m}=https://{lan[m].address}:2380" for m in ETCD_MEMBERS)
        for name in ETCD_MEMBERS:
            (place / name).mkdir()
            members.append(EtcdOnHost(place / name, lan[name], etcd_pki, initial))
        etcd_tls = ["--cacert", str(etcd_pki / "ca.pem"), "--cert", str(etcd_pki / "lclusterd.pem"),
                    "--key", str(etcd_pki / "lclusterd-key.pem")]
        endpoints = ",".join(m.endpoint for m in members)
        for m in members:
            m.launch()
        until(lambda: etcdctl(endpoints, etcd_tls, "endpoint", "health").returncode == 0, "the TLS etcd to be healthy")
        extra = ["--tls-dir", str(api), "--etcd", endpoints, "--etcd-cacert", etcd_tls[1], "--etcd-cert", etcd_tls[3],
                 "--etcd-key", etcd_tls[5], "--scheduling", "first-fit"]
        nodes = {}
        for name in NODES:
            nodes[name] = NodeOnHost(place / name, lan[name], cluster.prefix, extra)
            cluster.daemons.append(nodes[name])
            nodes[name].start()
        yield {"lan": lan, "nodes": nodes, "api": api, "other": place / "other-ca", "etcd": (endpoints, etcd_tls),
               "place": place}
    finally:
        cluster.close()
        for m in members:
            m.kill_hard()
        lan.down()
        shutil.rmtree(place, ignore_errors=True)


def call(world: dict, node: str, user: str, *args: str, tls_dir: Path | None = None) -> subprocess.CompletedProcess:
    return run_lclient(*args, "-tls-dir", str(tls_dir or world["api"]), "-user", user, server=world["nodes"][node].server)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def refused(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == REFUSED and result.stderr.count("\n") == 1, (result.returncode, result.stderr)
    for word in words:
        assert word in result.stderr, result.stderr


def test_nodes_on_separate_hosts(world: dict):
    # a job added at n1 runs on n2; its logs are read through n1 (node to node over mutual TLS)
    job = ok(call(world, "n1", "ann", "-add", "echo ran here", "-node", "n2", "-wait"))
    record = json.loads(ok(call(world, "n3", "ann", "-check", job, "-json")))
    assert (record["node"], record["state"], record["owner"]) == ("n2", "EXITED", "ann")
    assert call(world, "n1", "ann", "-logs", job).stdout == "ran here\n"

    # who may not
    refused(run_lclient("-list", server=world["nodes"]["n1"].server), "serves mutual TLS")
    refused(call(world, "n1", "ann", "-list", tls_dir=world["other"]), "refused the TLS handshake")
    refused(call(world, "n1", "late", "-list"), "refused the TLS handshake")
    refused(call(world, "n1", "bob", "-kill", job), "user bob may not kill", "ann's job")
    refused(call(world, "n3", "bob", "-logs", job), "ann's job")
    refused(call(world, "n1", "bob", "-drain", "n3"), "only admins")
    endpoints, etcd_tls = world["etcd"]
    api = world["api"]
    as_ann = ["--cacert", str(api / "ca.pem"), "--cert", str(api / "ann.pem"), "--key", str(api / "ann-key.pem")]
    assert etcdctl(endpoints, as_ann, "get", "--prefix", "/").returncode != 0  # etcd is not the API's to open
    assert etcdctl(endpoints, etcd_tls, "get", "--prefix", "/", "--keys-only").returncode == 0

    # n2's host dies with every process on it: its job is retried elsewhere
    for other in ("n1", "n3"):
        ok(call(world, "n1", "boss", "-drain", other))
    sleeper = ok(call(world, "n1", "ann", "-add", "echo started; sleep 300", "-retries", "1"))
    until(lambda: json.loads(ok(call(world, "n1", "ann", "-check", sleeper, "-json")))["state"] == "RUNNING",
          "the job to run on n2")
    for other in ("n1", "n3"):
        ok(call(world, "n1", "boss", "-undrain", other))
    world["lan"]["n2"].crash()
    moved = until(lambda: (r := json.loads(ok(call(world, "n1", "ann", "-check", sleeper, "-json"))))["attempt"] == 2
                  and r["state"] == "RUNNING" and r, "the job to run again on another host", timeout=30)
    assert moved["node"] in ("n1", "n3") and moved["attempts"][0]["node"] == "n2"
    nodes = {n["name"]: n for n in map(json.loads, ok(call(world, "n3", "boss", "-nodes", "-json")).splitlines())}
    assert nodes["n2"]["state"] == "gone"
    ok(call(world, "n1", "boss", "-kill", sleeper))
    world["nodes"]["n2"].start()  # its start-up sweep ends what the crash left running
