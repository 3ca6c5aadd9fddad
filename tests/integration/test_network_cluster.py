"""Networks through the control plane: real daemons on a real etcd, jobs added with the real
lclient with -net bridge and -publish. A page served by busybox httpd in a job is fetched by
the host from 127.0.0.1, two bridge jobs reach each other by the address -check shows, a
-net none job still sees only loopback, nodes sharing one etcd get disjoint subnets (and a
node keeps its own across a restart), and bad input is refused with one line and a non-zero
exit. After the jobs end, and after the daemons stop, no veth, nftables rule, address lease
or bridge of theirs is left.

Each test's nodes get bridges and a --cluster-subnet of their own (named and numbered after the
test run's pid and a counter), away from the runtime tests' 10.200/8-10.249/8 and the node
default lcl0, 10.88.0.0/16.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from lclusterd.runtime import leases
from lclusterd.runtime.netconf import address_of_veth

from conftest import host_links, our_rules
from support.jobs import add, check, nodes, until

SERVE = "mkdir /www && echo {page} > /www/index.html && exec httpd -f -p 8080 -h /www"
_COUNTER = itertools.count()


class Net:
    """A bridge per node and one --cluster-subnet for one test."""

    def __init__(self) -> None:
        n, k = os.getpid() % 1000, next(_COUNTER)
        self.tag = f"lcn{n}x{k}"
        self.cluster_subnet = f"10.{150 + os.getpid() % 50}.{(k % 64) * 4}.0/22"

    def args(self, node: str) -> list[str]:
        return ["--bridge", f"{self.tag}{node}"[:15], "--cluster-subnet", self.cluster_subnet]

    def bridges(self, *names: str) -> list[str]:
        return [f"{self.tag}{name}"[:15] for name in names]


@pytest.fixture
def net() -> Net:
    return Net()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int) -> str:
    """The body of http://127.0.0.1:PORT/, or "" while nothing answers there yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return ""
    return data.decode(errors="replace").partition("\r\n\r\n")[2]


def running(daemon, job: str) -> dict | None:
    record = check(daemon, job)
    return record if record["state"] == "RUNNING" else None


class Leftovers:
    """What the nodes' jobs could leave of their network: veths of addresses in the nodes'
    subnets, leases on their bridges, and nftables rules beyond the bridges' own (taken as the
    baseline once the nodes serve)."""

    def __init__(self, daemon, bridges: list[str]):
        self.bridges = bridges
        self.subnets = [IPv4Network(info["subnet"]) for info in nodes(daemon).values() if info["subnet"]]
        self.rules = set(our_rules())

    def found(self) -> list[str]:
        found = [f"rule {r}" for r in our_rules() if r not in self.rules]
        for bridge in self.bridges:
            lease_dir = Path(leases.LOCK_DIR, bridge)
            if lease_dir.is_dir():
                found += [f"lease {p.name} on {bridge}" for p in lease_dir.iterdir() if p.name != leases.USERS]
        for name in host_links():
            address = address_of_veth(name)
            if address is not None and any(address in subnet for subnet in self.subnets):
                found.append(f"veth {name}")
        return found

    def none(self) -> bool:
        return not self.found()


def test_a_published_page_is_fetched_from_loopback_and_bridge_jobs_reach_each_other(cluster, net):
    node = cluster.daemon("a", extra=net.args("a"))
    left = Leftovers(node, net.bridges("a"))
    port = free_port()
    server = add(node, SERVE.format(page="served-through-lclusterd"), "-net", "bridge", "-publish", f"{port}:8080")
    record = until(lambda: running(node, server), "the server job to run", timeout=60)
    address = record["address"]
    assert address and record["net"] == "bridge" and record["publish"] == [f"{port}:8080"]
    assert until(lambda: http_get(port), "the page on 127.0.0.1", timeout=60) == "served-through-lclusterd\n"
    shown = node.lclient("-check", server).stdout
    assert "net:" in shown and f"bridge, address {address}" in shown and f"{port}:8080" in shown

    client = node.lclient("-add", f"wget -q -O- http://{address}:8080/", "-net", "bridge", "-wait", timeout=120)
    assert (client.returncode, client.stderr) == (0, "")
    job = client.stdout.split()[0]
    logs = node.lclient("-logs", job)
    assert logs.stdout == "served-through-lclusterd\n"
    assert check(node, job)["address"] not in ("", None, address)

    assert node.lclient("-kill", server).returncode == 0
    until(lambda: check(node, server)["state"] == "KILLED", "the server to end", timeout=60)
    until(left.none, "the jobs' network to go", timeout=30)
    assert node.stop() == 0
    assert net.bridges("a")[0] not in host_links()
    assert [r for r in our_rules() if net.bridges("a")[0] in r] == []
    assert left.found() == []


def test_a_job_without_a_network_sees_only_loopback(cluster, net):
    node = cluster.daemon("a", extra=net.args("a"))
    done = node.lclient("-add", "ls /sys/class/net", "-wait")
    assert (done.returncode, done.stderr) == (0, "")
    job = done.stdout.split()[0]
    assert node.lclient("-logs", job).stdout == "lo\n"
    assert check(node, job)["address"] is None and check(node, job)["net"] == "none"


def test_nodes_on_one_etcd_get_disjoint_subnets_and_keep_theirs(cluster, net):
    a = cluster.daemon("a", extra=net.args("a"))
    b = cluster.daemon("b", extra=net.args("b"))
    subnets = {name: info["subnet"] for name, info in nodes(a).items()}
    assert len(set(subnets.values())) == 2 and all(s.endswith("/24") for s in subnets.values()), subnets
    assert b.stop() == 0
    b = cluster.daemon("b", extra=net.args("b"), directory=b.dir)
    assert nodes(a)["b"]["subnet"] == subnets["b"]
    # the bridge of each holds its own subnet's first address
    for name, bridge in zip("ab", net.bridges("a", "b")):
        shown = subprocess.run(["ip", "-4", "-o", "addr", "show", bridge], capture_output=True, text=True).stdout
        first = subnets[name].split("/")[0].rsplit(".", 1)[0] + ".1/24"
        assert first in shown, (bridge, shown)


def test_a_published_port_in_use_fails_the_job_with_the_reason(cluster, net):
    node = cluster.daemon("a", extra=net.args("a"))
    left = Leftovers(node, net.bridges("a"))
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = node.lclient("-add", "echo ran", "-net", "bridge", "-publish", f"{port}:80", "-wait")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "ended FAILED" in lines[0] and f"{port}" in lines[0] and "in use" in lines[0], done.stderr
    until(left.none, "the job's network to go", timeout=30)


def test_a_second_job_publishing_the_same_port_on_a_node_fails_with_the_reason(cluster, net):
    node = cluster.daemon("a", extra=net.args("a"))
    left = Leftovers(node, net.bridges("a"))
    port = free_port()
    first = add(node, "sleep 600", "-net", "bridge", "-publish", f"{port}:80")
    until(lambda: running(node, first), "the first job to run", timeout=60)
    second = node.lclient("-add", "echo ran", "-net", "bridge", "-publish", f"{port}:8080", "-wait")
    assert second.returncode == 1
    lines = second.stderr.splitlines()
    assert len(lines) == 1 and "ended FAILED" in lines[0] and str(port) in lines[0], second.stderr
    assert node.lclient("-kill", first).returncode == 0
    until(lambda: check(node, first)["state"] == "KILLED", "the first job to end", timeout=60)
    until(left.none, "the jobs' network to go", timeout=30)


def test_a_restarted_node_sweeps_the_network_a_crash_left(cluster, net):
    node = cluster.daemon("a", extra=net.args("a"))
    left = Leftovers(node, net.bridges("a"))
    port = free_port()
    job = add(node, "sleep 600", "-net", "bridge", "-publish", f"{port}:80")
    until(lambda: running(node, job), "the job to run", timeout=60)
    node.kill_hard()  # the daemon, its fork server and the job's init: nothing cleans up
    assert left.found() != []
    node = cluster.daemon("a", extra=net.args("a"), directory=node.dir)
    until(lambda: check(node, job)["state"] in ("LOST", "FAILED"), "the job to be recorded as gone", timeout=60)
    until(left.none, "the crashed job's network to be swept", timeout=60)


@pytest.mark.parametrize("args, line", [
    (["-net", "host"], "lclient: net must be none or bridge, not 'host'"),
    (["-net", "bridge", "-publish", "80"], "lclient: publish takes HOSTPORT:PORT or HOSTPORT:PORT/udp, not '80'"),
    (["-volume", "data"], "lclient: volume takes HOST:PATH or HOST:PATH:ro (absolute paths, no ':'), not 'data'"),
    (["-volume", "/srv:/srv"], "lclient: no node allows volumes: start lclusterd with --volume-root DIR"),
    (["-net", "bridge"], "lclient: no node offers -net bridge: start lclusterd with --bridge NAME (its default, lcl0)"),
])
def test_bad_network_and_volume_input_is_one_line_and_exit_2(cluster, args, line):
    node = cluster.daemon("a")  # --bridge "": no job network (the test support's default)
    done = node.lclient("-add", "true", *args)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", line + "\n")


@pytest.mark.parametrize("extra, line", [
    (["--volume-root", "relative"], "--volume-root must be an absolute directory, not 'relative'"),
    (["--volume-root", "/no/such/dir"], "--volume-root /no/such/dir is not a directory"),
    (["--subnet", "10.1.2.3/24"], "--subnet must be an IPv4 network like 10.88.0.0/16"),
    (["--cluster-subnet", "10.1.0.0/25"], "--cluster-subnet must be a /24 or larger"),
])
def test_a_node_with_bad_network_or_volume_options_refuses_to_start_with_one_line(cluster, extra, line):
    node = cluster.daemon("a", extra=extra, start=False)
    node.start(wait=False)
    assert node.process.wait(60) == 3
    assert [entry for entry in node.log().splitlines() if line in entry] != [], node.log()[-2000:]


def test_volumes_and_workdir_through_lclient(cluster, tmp_path):
    root = tmp_path / "roots"
    (root / "data").mkdir(parents=True)
    (root / "data" / "in.txt").write_text("data from the host\n")
    node = cluster.daemon("a", extra=["--volume-root", str(root)])
    assert nodes(node)["a"]["volume_roots"] == [str(root)]

    read = node.lclient("-add", "cat in.txt; pwd", "-volume", f"{root}/data:/data:ro", "-workdir", "/data", "-wait")
    assert (read.returncode, read.stderr) == (0, "")
    job = read.stdout.split()[0]
    assert node.lclient("-logs", job).stdout == "data from the host\n/data\n"
    record = check(node, job)
    assert (record["volumes"], record["workdir"]) == ([f"{root}/data:/data:ro"], "/data")
    assert "volumes:" in node.lclient("-check", job).stdout

    write = node.lclient("-add", "echo x > /data/new", "-volume", f"{root}/data:/data:ro", "-wait")
    assert write.returncode != 0 and not (root / "data" / "new").exists()
    job = write.stdout.split()[0]
    assert "Read-only file system" in node.lclient("-logs", job).stdout + node.lclient("-logs", job).stderr

    outside = node.lclient("-add", "true", "-volume", "/etc:/host-etc")
    assert (outside.returncode, outside.stdout, outside.stderr) == \
        (2, "", f"lclient: volume /etc is under no node's --volume-root (allowed: {root})\n")
