"""Jobs with net="bridge" for real: a bridge of the runtime's own, veth pairs, nftables NAT,
and traffic on the host's loopback, between jobs and from a network namespace the test makes
(`outside`: a stand-in for another host, joined to this one by a veth pair).

Both user-namespace modes (the `runtime` fixture), each with a bridge and subnet of its own
(conftest.network_for). After every test nothing of any job may remain: no veth, host
address or route, nftables rule of our table, or address lease (conftest's leftovers).
Published host ports are 18080-18089: a test run holds them only while its jobs run.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from lclusterd.runtime import kernel, leases, netconf
from lclusterd.runtime.launcher import JobStarted, Launcher, NetworkConfig
from lclusterd.runtime.spec import RunResult, RuntimeSpec

from conftest import cgroup_parent_dirs, host_links, network_for, our_rules, user_namespaces

ROOT = Path(__file__).resolve().parents[2]
UDP_ECHO_SOURCE = Path(__file__).parent / "data" / "udp_echo.c"
UDP_ECHO = ROOT / "build" / "udp-echo"  # the Makefile builds it for test-v2 (no compiler in the VM)
SERVE = "mkdir /www && echo {page} > /www/index.html && exec httpd -f -p {port} -h /www"


@pytest.fixture(autouse=True)
def nothing_leaks(runtime):
    yield
    assert runtime.leftovers() == []


def bridge_job(rootfs: str, command: str, tmp_path: Path, **kw) -> RuntimeSpec:
    job = RuntimeSpec.shell(uuid.uuid4().hex, command, rootfs, net="bridge", **kw)
    job.stdout_path, job.stderr_path = str(tmp_path / f"{job.job_id}.out"), str(tmp_path / f"{job.job_id}.err")
    return job


def output(job: RuntimeSpec) -> str:
    """What the job wrote on stdout so far (nothing before the fork server opened the file)."""
    path = Path(job.stdout_path)
    return path.read_text() if path.exists() else ""


def wait_for_output(job: RuntimeSpec, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in output(job):
            return output(job)
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in the job's output: {output(job)!r}")


def until(predicate, timeout: float = 60):
    """predicate's first true value, polled (the event it waits for arrives on another thread)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def end(runtime, job: RuntimeSpec) -> RunResult:
    runtime.launcher.kill(job.job_id, grace=0)
    return runtime.launcher.wait(job.job_id, timeout=60)


def http_get(address: str, port: int, sock: socket.socket | None = None) -> str:
    """GET / over a plain socket (no proxy from the environment): the whole response."""
    with sock or socket.socket() as s:
        s.settimeout(10)
        s.connect((address, port))
        s.sendall(b"GET / HTTP/1.0\r\nHost: job\r\n\r\n")
        response = b""
        while chunk := s.recv(4096):
            response += chunk
    return response.decode()


def fetch(address: str, port: int, new_socket=socket.socket, timeout: float = 60) -> str:
    """http_get once the job's server listens (until then the job's kernel refuses)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return http_get(address, port, new_socket())
        except (ConnectionRefusedError, ConnectionResetError, socket.timeout):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- publishing -----------------------------------------------------------------------------

def test_a_published_port_serves_the_jobs_page_on_the_hosts_loopback(runtime, rootfs, tmp_path):
    job = bridge_job(rootfs, SERVE.format(page="page-of-$(hostname)", port=8080), tmp_path, hostname="web",
                     publish=["18080:8080"])
    runtime.launcher.submit(job)
    try:
        response = fetch("127.0.0.1", 18080)
        # The bridge's own address is one of the node's addresses too.
        through_bridge = http_get(str(runtime.network.gateway), 18080)
    finally:
        result = end(runtime, job)
    assert response.startswith("HTTP/1.1 200 OK") and response.endswith("\r\n\r\npage-of-web\n")
    assert through_bridge.endswith("\r\n\r\npage-of-web\n")
    assert result.status == "KILLED" and IPv4Address(result.address) in runtime.network.network


def test_a_published_udp_port_answers_through_the_host(runtime, rootfs, tmp_path, udp_echo):
    # The helper arrives as the job's stdin and runs from its /tmp (nodev and nosuid, not noexec).
    job = bridge_job(rootfs, "cat > /tmp/udp-echo && chmod +x /tmp/udp-echo && exec /tmp/udp-echo 9000", tmp_path,
                     publish=["18081:9000/udp"], stdin_data=udp_echo)
    runtime.launcher.submit(job)
    try:
        wait_for_output(job, "ready")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(10)
            client.sendto(b"ping", ("127.0.0.1", 18081))
            answer, sender = client.recvfrom(100)
        seen = wait_for_output(job, "answered")
    finally:
        end(runtime, job)
    assert (answer, sender) == (b"echo ping", ("127.0.0.1", 18081))
    # The job saw the bridge's address (127.0.0.1 is masqueraded: the job's loopback is its own).
    assert seen.splitlines()[1] == f"answered {runtime.network.gateway}"


def test_a_host_port_in_use_is_refused_before_the_job_starts(runtime, rootfs, tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 18082))
        listener.listen()
        taken = runtime.launcher.run(bridge_job(rootfs, "echo ran", tmp_path, publish=["18082:80"]), timeout=60)
    assert (taken.status, taken.address, taken.host_pid) == ("FAILED", None, None)
    assert taken.error == ("publish: host port 18082/tcp is in use on this host "
                           "(a process listens on it, or another runtime's job publishes it)")
    first = bridge_job(rootfs, "echo up; sleep 600", tmp_path, publish=["18083:80"])
    runtime.launcher.submit(first)
    try:
        second = runtime.launcher.run(bridge_job(rootfs, "echo ran", tmp_path, publish=["18083:8080"]), timeout=60)
        wait_for_output(first, "up")
    finally:
        end(runtime, first)
    assert (second.status, second.error) == ("FAILED", f"publish: host port 18083/tcp is already published by job {first.job_id}")
    assert not any("ran" in p.read_text() for p in tmp_path.glob("*.out"))


def test_a_crashed_fork_servers_network_is_swept_by_the_next(runtime, rootfs, tmp_path):
    network = network_for("userns" if runtime.userns else "no-userns", salt=6400)  # a bridge of its own
    parent = f"lclusterd-test-netsweep-{os.getpid()}"
    ids = user_namespaces() if runtime.userns else None
    events: list[object] = []
    crashed = Launcher(tmp_path / "state", cgroup_parent=parent, network=network, userns=ids, on_event=events.append)
    crashed.start()
    job = bridge_job(rootfs, "echo ready; sleep 600", tmp_path, publish=["18084:80"])
    crashed.submit(job)
    wait_for_output(job, "ready")
    address = IPv4Address(until(lambda: next((e.address for e in events if isinstance(e, JobStarted)), None)))
    os.kill(crashed.helper_pid, signal.SIGKILL)  # the job outlives its helper, and so does its network
    assert crashed.wait(job.job_id, timeout=30).status == "FAILED"
    assert netconf.veth_name(address) in host_links()
    assert sum(job.job_id in rule for rule in our_rules()) == 2
    with Launcher(tmp_path / "state", cgroup_parent=parent, network=network, userns=ids) as fresh:
        # Its start-up swept the dead one's link, rules and lease; its sweep ends the job.
        assert netconf.veth_name(address) not in host_links()
        assert not any(job.job_id in rule for rule in our_rules())
        assert not Path(leases.LOCK_DIR, network.bridge, str(address)).exists()
        assert fresh.sweep() == [job.job_id]
    assert network.bridge not in host_links() and not any(network.bridge in rule for rule in our_rules())
    assert cgroup_parent_dirs(parent) == []


def test_a_network_that_cannot_be_set_up_fails_the_job_with_the_reason(runtime, rootfs, tmp_path):
    # Every address of a /29 has its veth name taken (links the test makes after the
    # fork server's start-up sweep), so the job's init is told its network failed.
    wide = network_for("userns" if runtime.userns else "no-userns", salt=9000)
    network = NetworkConfig(wide.bridge[:-1] + "x", str(next(wide.network.subnets(new_prefix=29))))
    parent = f"lclusterd-test-netfail-{os.getpid()}"
    ids = user_namespaces() if runtime.userns else None
    with Launcher(tmp_path / "state", cgroup_parent=parent, network=network, userns=ids) as launcher:
        taken = [netconf.veth_name(IPv4Address(a)) for a in network.job_addresses()]
        try:
            for name in taken:
                subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
            result = launcher.run(bridge_job(rootfs, "echo ran", tmp_path, publish=["18089:80"]), timeout=60)
        finally:
            for name in taken:
                subprocess.run(["ip", "link", "del", name], stderr=subprocess.DEVNULL)
        assert not list(Path(leases.LOCK_DIR, network.bridge).glob("10.*"))  # its address is free again
    assert (result.status, result.address) == ("FAILED", None)
    assert result.error.startswith("network: the fork server could not set up the job's network; "
                                   "setting up its network failed: add veth lv")
    assert result.error.endswith(": File exists") and not any("ran" in p.read_text() for p in tmp_path.glob("*.out"))
    assert network.bridge not in host_links() and not any(network.bridge in rule for rule in our_rules())


# -- between jobs, and beyond the host ------------------------------------------------------------

def test_two_bridge_jobs_reach_each_other_by_address(runtime, rootfs, tmp_path):
    server = bridge_job(rootfs, "hostname -i; " + SERVE.format(page="served-to-a-neighbour", port=8080), tmp_path)
    runtime.launcher.submit(server)
    try:
        address = wait_for_output(server, "\n").split()[0]  # from its /etc/hosts
        client = bridge_job(rootfs, f"until wget -q -O- http://{address}:8080/; do sleep 0.1; done", tmp_path, timeout=60)
        fetched = runtime.launcher.run(client, timeout=120)
    finally:
        served = end(runtime, server)
    assert (fetched.status, output(client)) == ("EXITED", "served-to-a-neighbour\n")
    assert served.address == address != fetched.address


@dataclass
class Outside:
    """A network namespace joined to the host by a veth pair: the host is `host_address`
    there, the namespace `address`. Sockets made by socket() live in it."""

    name: str
    link: str
    host_address: str
    address: str

    def socket(self) -> socket.socket:
        own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        theirs = os.open(f"/run/netns/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            kernel.setns(theirs, kernel.CLONE_NEWNET)  # this thread only; a socket keeps its namespace
            try:
                return socket.socket()
            finally:
                kernel.setns(own, kernel.CLONE_NEWNET)
        finally:
            os.close(own)
            os.close(theirs)


@pytest.fixture
def outside() -> Iterator[Outside]:
    n = os.getpid() % 4096
    there = Outside(f"lclout{os.getpid()}", f"lclto{n}", f"198.18.{n // 16}.{(n % 16) * 16 + 1}",
                    f"198.18.{n // 16}.{(n % 16) * 16 + 2}")
    commands = [["ip", "netns", "add", there.name],
                ["ip", "link", "add", there.link, "type", "veth", "peer", "name", "eth0", "netns", there.name],
                ["ip", "addr", "add", f"{there.host_address}/28", "dev", there.link], ["ip", "link", "set", there.link, "up"],
                ["ip", "-n", there.name, "addr", "add", f"{there.address}/28", "dev", "eth0"],
                ["ip", "-n", there.name, "link", "set", "eth0", "up"]]
    try:
        for command in commands:
            subprocess.run(command, check=True)
        yield there
    finally:  # the link first: deleting it is synchronous, its namespace's end goes with it
        subprocess.run(["ip", "link", "del", there.link], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", there.name], stderr=subprocess.DEVNULL)


def test_jobs_reach_other_hosts_through_the_hosts_address(runtime, rootfs, tmp_path, outside):
    with outside.socket() as listener:
        listener.bind((outside.address, 9000))
        listener.listen()
        listener.settimeout(60)
        job = bridge_job(rootfs, f"echo hello | nc {outside.address} 9000", tmp_path, timeout=60)
        runtime.launcher.submit(job)
        connection, (peer, _) = listener.accept()
        with connection:
            connection.settimeout(30)
            said = connection.recv(100)
            connection.sendall(b"bye\n")
    result = runtime.launcher.wait(job.job_id, timeout=60)
    assert (result.status, said, output(job)) == ("EXITED", b"hello\n", "bye\n")
    assert peer == outside.host_address  # masqueraded: the job's address never leaves the host


def test_other_hosts_reach_a_published_port_on_the_hosts_address(runtime, rootfs, tmp_path, outside):
    job = bridge_job(rootfs, SERVE.format(page="seen-from-outside", port=80), tmp_path, publish=["18085:80"])
    runtime.launcher.submit(job)
    try:
        response = fetch(outside.host_address, 18085, outside.socket)
    finally:
        end(runtime, job)
    assert response.endswith("\r\n\r\nseen-from-outside\n")


# -- what a job sees ----------------------------------------------------------------------------

def test_a_bridge_job_has_eth0_a_default_route_and_its_own_etc_files(runtime, rootfs, tmp_path):
    job = bridge_job(rootfs, "ls /sys/class/net; ip -4 -o addr show eth0; ip route; cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6;"
                             " echo ---; cat /etc/hosts; echo ---;"
                             " cat /etc/resolv.conf; echo ---; stat -c '%u %g %a' /etc /etc/hosts /etc/resolv.conf;"
                             " echo more >> /etc/hosts && echo writable", tmp_path, hostname="named")
    result = runtime.launcher.run(job, timeout=60)
    links, hosts, resolv, owners = output(job).split("---\n")
    network = runtime.network
    prefix = f"{result.address}/{network.network.prefixlen}"
    assert result.status == "EXITED" and links.split()[:2] == ["eth0", "lo"]
    assert f"eth0    inet {prefix} " in links and f"default via {network.gateway} dev eth0" in links
    assert links.splitlines()[-1] == "1"  # no IPv6 on eth0: the network is IPv4
    assert hosts == netconf.hosts_file(IPv4Address(result.address), "named")
    host_resolv = Path("/etc/resolv.conf").read_text() if Path("/etc/resolv.conf").exists() else ""
    assert resolv == netconf.resolv_conf(host_resolv)
    assert owners == "0 0 755\n0 0 644\n0 0 644\nwritable\n"  # the job's root's, as its other files


def test_a_job_without_a_network_still_sees_only_loopback(runtime, rootfs, tmp_path):
    job = RuntimeSpec.shell(uuid.uuid4().hex, "ls /sys/class/net; cat /etc/hosts", rootfs,
                            stdout_path=str(tmp_path / "out"), stderr_path=str(tmp_path / "err"))
    links_before = host_links()
    result = runtime.launcher.run(job, timeout=60)
    names, *hosts = (tmp_path / "out").read_text().split("\n", 1)
    assert (result.status, result.address, names) == ("EXITED", None, "lo")
    assert hosts == [Path(rootfs, "etc", "hosts").read_text()]  # the rootfs's own, untouched
    assert host_links() == links_before


# -- every end leaves nothing (the autouse check) ------------------------------------------------------

def test_a_timed_out_bridge_job_leaves_nothing(runtime, rootfs, tmp_path):
    result = runtime.launcher.run(bridge_job(rootfs, "sleep 600", tmp_path, publish=["18086:80"], timeout=0.5, grace=0.2),
                                  timeout=60)
    assert result.status == "TIMED_OUT" and result.address is not None


def test_a_bridge_job_that_fails_before_exec_leaves_nothing(runtime, rootfs, tmp_path):
    job = RuntimeSpec(uuid.uuid4().hex, ["no-such-command"], rootfs, net="bridge", publish=["18087:80/udp"])
    result = runtime.launcher.run(job, timeout=60)
    assert (result.status, result.error) == ("FAILED", "find command: command not found in the rootfs: no-such-command")


def test_many_bridge_jobs_at_once_get_addresses_of_their_own(runtime, rootfs, tmp_path):
    jobs = [bridge_job(rootfs, "hostname -i; sleep 0.3", tmp_path) for _ in range(20)]
    for job in jobs:
        runtime.launcher.submit(job)
    results = [runtime.launcher.wait(job.job_id, timeout=120) for job in jobs]
    addresses = [output(job).strip() for job in jobs]
    assert [r.status for r in results] == ["EXITED"] * 20
    assert addresses == [r.address for r in results] and len(set(addresses)) == 20


# -- the runtime CLI --------------------------------------------------------------------------------

def test_cli_runs_a_bridge_job_with_a_published_port_beside_the_nodes(runtime, rootfs):
    # A second fork server on the same bridge: it joins it, and leaves it to its first user.
    network = runtime.network
    cli = subprocess.Popen([sys.executable, "-m", "lclusterd.runtime", "run", "--rootfs", rootfs, "--net", "bridge",
                            "--bridge", network.bridge, "--subnet", network.subnet, "--publish", "18088:8080",
                            "--sh", SERVE.format(page="from-the-cli", port=8080)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        response = fetch("127.0.0.1", 18088)
    finally:
        cli.send_signal(signal.SIGINT)  # kills the job
        out, err = cli.communicate(timeout=60)
    assert response.endswith("\r\n\r\nfrom-the-cli\n")
    line = err.splitlines()[-1]
    assert line.startswith("lclusterd.runtime: KILLED ") and cli.returncode > 128, err
    assert IPv4Address(re.search(r" address=(\S+)", line)[1]) in network.network
    assert network.bridge in host_links()  # still the runtime fixture's


def test_a_bridge_in_use_with_another_subnet_is_refused_at_start(runtime, rootfs):
    network = runtime.network
    elsewhere = network_for("userns" if runtime.userns else "no-userns", salt=3200).network  # no other test's
    done = subprocess.run([sys.executable, "-m", "lclusterd.runtime", "run", "--rootfs", rootfs, "--net", "bridge",
                           "--bridge", network.bridge, "--subnet", str(elsewhere), "--", "true"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 125
    assert done.stderr.splitlines()[-1] == (
        f"lclusterd.runtime: the runtime helper could not start: network: bridge {network.bridge} has the address "
        f"{network.gateway}/25, not {elsewhere.network_address + 1}/25 (another runtime uses it with another subnet)")
    assert network.bridge in host_links()  # still the fixture's, untouched


def test_cli_refuses_a_publish_without_a_network(runtime, rootfs):
    done = subprocess.run([sys.executable, "-m", "lclusterd.runtime", "run", "--rootfs", rootfs, "--publish", "18089:80",
                           "--", "true"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == "Error: publishing a port needs net=bridge (a job without a network has only loopback)"


# -- helpers -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def udp_echo() -> bytes:
    """data/udp_echo.c, static (musl-gcc, which make prep installs); built once into build/."""
    if not UDP_ECHO.exists() or UDP_ECHO.stat().st_mtime < UDP_ECHO_SOURCE.stat().st_mtime:
        UDP_ECHO.parent.mkdir(exist_ok=True)
        subprocess.run(["musl-gcc", "-static", "-O2", "-o", str(UDP_ECHO), str(UDP_ECHO_SOURCE)], check=True)
    return UDP_ECHO.read_bytes()

