"""Real etcd, real lclusterd daemons, real lclient processes for the control-plane tests.

Import what a test file uses by name (`from cluster_fixtures import cluster, etcd, ...`;
tests/integration is on sys.path as pytest's rootdir-less "prepend" import mode puts it there). Every process is
started in its own session and its whole process group is killed at teardown.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

VENV_BIN = Path(sys.executable).parent
LCLUSTERD = str(VENV_BIN / "lclusterd")
LCLIENT = str(VENV_BIN / "lclient")
ROOTFS = os.environ.get("LCLUSTERD_TEST_ROOTFS", "/var/lib/lclusterd/rootfs")

__all__ = ["remove_cgroup_parent", "EtcdProcess", "EtcdCluster", "etcd_cluster", "Daemon", "Cluster", "free_port", "run_lclient", "etcd", "cluster", "ROOTFS", "LCLIENT", "LCLUSTERD",
           "requires_root_and_rootfs"]

requires_root_and_rootfs = pytest.mark.skipif(
    os.geteuid() != 0 or not Path(ROOTFS, "bin", "sh").exists() or shutil.which("etcd") is None,
    reason="needs root, etcd and the busybox rootfs (make prep)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


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


class EtcdProcess:
    """One etcd member on free loopback ports; stop() and start() keep its data. Alone by default;
    EtcdCluster gives each member its name and the --initial-cluster of all of them."""

    def __init__(self, directory: Path, name: str = "test"):
        self.dir = directory
        self.name = name
        self.client_port, self.peer_port = free_port(), free_port()
        self.initial_cluster = f"{name}=http://127.0.0.1:{self.peer_port}"
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def live_endpoints(self) -> str:
        return self.endpoint  # as EtcdCluster's, for readers that take either

    def start(self) -> None:
        self.launch()
        self.wait_healthy()

    def launch(self) -> None:
        """Start the process without waiting (a cluster's members must start together)."""
        peer = self.peer_url
        log = open(self.dir / "etcd.log", "ab")
        self.process = subprocess.Popen(
            ["etcd", "--name", self.name, "--data-dir", str(self.dir / "data"),
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", self.initial_cluster,
             "--log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def wait_healthy(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.dir / "etcd.log").read_text()[-2000:]
            try:
                with socket.create_connection(("127.0.0.1", self.client_port), timeout=0.2):
                    pass
                if subprocess.run(["etcdctl", "--endpoints", self.endpoint, "endpoint", "health"],
                                  capture_output=True, env={**os.environ, "ETCDCTL_API": "3"}).returncode == 0:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"etcd {self.name} did not become healthy")

    def stop(self) -> None:
        if self.process is not None:
            _kill_group(self.process)

    def kill_hard(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class EtcdCluster:
    """`size` etcd members on loopback, one --initial-cluster; `endpoint` lists them all (the
    daemons' --etcd), so a Cluster can run on it as on one EtcdProcess."""

    def __init__(self, directory: Path, size: int = 3):
        self.members = []
        for i in range(size):
            (directory / f"m{i}").mkdir(parents=True, exist_ok=True)
            self.members.append(EtcdProcess(directory / f"m{i}", f"m{i}"))
        initial = ",".join(m.initial_cluster for m in self.members)
        for m in self.members:
            m.initial_cluster = initial

    @property
    def endpoint(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def live_endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members if m.process is not None and m.process.poll() is None)

    def start(self) -> None:
        for m in self.members:
            m.launch()
        for m in self.members:
            m.wait_healthy()

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def leader(self, timeout: float = 20) -> EtcdProcess:
        """The live member that is the raft leader (etcdctl endpoint status); waits for an election."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = subprocess.run(["etcdctl", "--endpoints", self.live_endpoints(), "endpoint", "status", "-w", "json"],
                                    capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=30)
            if result.returncode == 0:
                statuses = json.loads(result.stdout)
                leaders = {s["Status"]["leader"] for s in statuses}
                found = [s["Endpoint"] for s in statuses if s["Status"]["header"]["member_id"] in leaders]
                if len(leaders) == 1 and len(found) == 1:
                    return next(m for m in self.members if m.endpoint == found[0])
            time.sleep(0.1)
        raise AssertionError("the etcd members did not agree on a leader")


class Daemon:
    """One real lclusterd process with its own state dir, port and node name."""

    def __init__(self, directory: Path, etcd_endpoint: str | None, prefix: str, name: str = "node1",
                 extra: list[str] | None = None):
        self.dir = directory
        self.state_dir = directory / "state"
        self.port = free_port()
        self.etcd_endpoint = etcd_endpoint
        self.prefix = prefix
        self.name = name
        self.extra = extra or []
        self.process: subprocess.Popen | None = None
        self.log_path = directory / f"{name}.log"

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        argv = [LCLUSTERD, "--state-dir", str(self.state_dir), "--listen", str(self.port), "--node-name", self.name,
                "--rootfs", ROOTFS, "--prefix", self.prefix, "--lease-ttl", "2", *self.extra]
        if self.etcd_endpoint:
            argv += ["--etcd", self.etcd_endpoint]
        return argv

    def start(self, wait: bool = True) -> Daemon:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LCLUSTERD_")}
        self.process = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, env=env)
        log.close()
        if wait:
            self.wait_serving()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_serving(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.server) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"lclusterd exited with {self.process.returncode}:\n{self.log()[-3000:]}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"lclusterd did not start serving:\n{self.log()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the daemon (not its jobs' group: they are in their own) and wait."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(self.process, signal.SIGKILL)
            raise AssertionError(f"lclusterd did not stop within {timeout}s:\n{self.log()[-3000:]}")

    def kill_hard(self) -> None:
        """kill -9 the daemon's whole group (the runtime helper too), like a crash."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def lclient(self, *args: str, timeout: float = 60, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        return run_lclient(*args, server=self.server, timeout=timeout, stdin=stdin)


# -- reading etcd with the official etcdctl (an independent reader) -------------------------------
def etcdctl(endpoints: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["etcdctl", "--endpoints", endpoints, "--command-timeout", "5s", *args],
                          capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=timeout)


def etcd_prefix(cluster, section: str) -> dict[str, bytes]:
    """Every key under <prefix>/<section>/ (key -> value), read from the members that are up."""
    result = etcdctl(cluster.etcd.live_endpoints(), "get", "--prefix", f"{cluster.prefix}/{section}/", "-w", "json")
    assert result.returncode == 0, result.stderr
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
            for kv in json.loads(result.stdout).get("kvs", [])}


def etcd_records(cluster) -> dict[str, dict]:
    """Every job record, by job id."""
    return {key.rsplit("/", 1)[1]: json.loads(value) for key, value in etcd_prefix(cluster, "jobs").items()}


def prime_holder(cluster) -> str | None:
    result = etcdctl(cluster.etcd.live_endpoints(), "get", f"{cluster.prefix}/prime", "--print-value-only")
    return result.stdout.strip() or None if result.returncode == 0 else None


# -- reading the outcome of a multi-node test --------------------------------------------------
def nodes(daemon: Daemon) -> dict[str, dict]:
    """`lclient -nodes -json` through `daemon`, by node name."""
    result = daemon.lclient("-nodes", "-json")
    assert result.returncode == 0, result.stderr
    return {n["name"]: n for n in map(json.loads, result.stdout.splitlines())}


def ran_on(daemons: list[Daemon], job: str) -> set[str]:
    """The nodes that handed the job to their runtime: each creates <state>/logs/<uuid>.out first."""
    return {d.name for d in daemons if Path(d.state_dir, "logs", f"{job}.out").exists()}


def pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def assert_stream_ended_once(daemons: list[Daemon], ids: list[str], records: dict[str, dict], lost_node: str) -> None:
    """Job i of a stream of `echo i` jobs ended EXITED exactly once: earlier attempts are recorded
    LOST with `lost_node`, it ran only on the nodes its record names, and the log on the node that
    finished it holds its output once (logs are appended to: a second start there would show)."""
    daemon_of = {d.name: d for d in daemons}
    for i, job in enumerate(ids):
        record = records[job]
        assert record["state"] == "EXITED" and record["attempt"] == len(record["history"]) + 1, record
        assert all(h["state"] == "LOST" and h["node"] == lost_node for h in record["history"])
        runs = ran_on(daemons, job)
        assert record["node"] in runs and runs <= {record["node"], *(h["node"] for h in record["history"])}, (job, runs, record)
        assert Path(daemon_of[record["node"]].state_dir, "logs", f"{job}.out").read_text() == f"{i}\n", (job, record)


def run_lclient(*args: str, server: str | None = None, timeout: float = 60,
                stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LCLUSTER_SERVER"}
    if server:
        env["LCLUSTER_SERVER"] = server
    return subprocess.run([LCLIENT, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          input=stdin.decode() if stdin is not None else None)


@pytest.fixture
def etcd_cluster(tmp_path):
    """Three real etcd members on free loopback ports; every member stopped at teardown."""
    members = EtcdCluster(tmp_path / "etcd3")
    try:
        members.start()
        yield members
    finally:
        members.stop()


@pytest.fixture
def etcd(tmp_path):
    """A real etcd on free ports, data in tmp_path; stopped at teardown."""
    directory = tmp_path / "etcd"
    directory.mkdir()
    server = EtcdProcess(directory)
    server.start()
    yield server
    server.stop()


class Cluster:
    """Starts daemons against one etcd and one key prefix; stops them all at teardown."""

    def __init__(self, tmp_path: Path, etcd: EtcdProcess | None):
        self.tmp_path = tmp_path
        self.etcd = etcd
        self.prefix = f"/test-{uuid.uuid4().hex[:8]}"
        self.daemons: list[Daemon] = []

    def daemon(self, name: str = "node1", extra: list[str] | None = None, start: bool = True,
               directory: Path | None = None) -> Daemon:
        d = Daemon(directory or self.tmp_path / name, self.etcd.endpoint if self.etcd else None, self.prefix, name, extra)
        self.daemons.append(d)
        return d.start() if start else d

    def close(self) -> None:
        for d in self.daemons:
            if d.process is not None and d.process.poll() is None:
                try:
                    d.stop(timeout=20)
                except AssertionError:
                    pass
            if d.process is not None:
                _kill_group(d.process, signal.SIGKILL)
        # Nothing of a job may outlive its node's clean stop (a node killed -9 in a test is
        # started again, and its start-up sweep is what removes what the crash left).
        left = [path for d in self.daemons for path in job_cgroups_left(d.name)]
        for path in left:
            path.rmdir()  # so that later tests start clean; fails loudly if a process is still in it
        for d in self.daemons:
            remove_cgroup_parent(d.name)
        assert not left, f"job cgroups left after the daemons stopped: {[str(p) for p in left]}"


@pytest.fixture
def cluster(tmp_path, etcd):
    c = Cluster(tmp_path, etcd)
    yield c
    c.close()
