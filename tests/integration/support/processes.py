"""The real processes of the control-plane tests: etcd members (alone or as a cluster),
lclusterd nodes, and lclient runs. Every etcd and lclusterd is started in its own session and
its whole process group is killed at teardown.
"""

from __future__ import annotations

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
from grpc_health.v1 import health_pb2, health_pb2_grpc

from support.host import CGROUP_ROOT, ROOTFS, job_cgroups_left, remove_cgroup_parent
from support.etcd_pki import ClientTls, Pki

VENV_BIN = Path(sys.executable).parent
LCLUSTERD = str(VENV_BIN / "lclusterd")
LCLIENT = str(VENV_BIN / "lclient")
ETCD_TOOLS = ("etcd", "etcdctl")  # `make prep` installs them (Debian's etcd-server and etcd-client)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
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


def etcdctl_tls(etcd) -> list[str]:
    """etcdctl's TLS options for `etcd` (anything with client_tls), none for plain http."""
    tls = getattr(etcd, "client_tls", None)
    return tls.etcdctl_args() if tls else []


def require_etcd() -> None:
    """Fail, saying why, when etcd or etcdctl is not installed (a test that needs etcd never skips)."""
    missing = [tool for tool in ETCD_TOOLS if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"{' and '.join(missing)} not found on PATH: the etcd tests run a real etcd; "
                           "`make prep` installs it (etcd-server, etcd-client)")


class EtcdProcess:
    """One etcd member on free loopback ports; stop() and start() keep its data. Alone by default;
    EtcdCluster gives each member its name and the --initial-cluster of all of them. With a
    `pki` (support.etcd_pki.Pki) it speaks only TLS, to clients and peers with a certificate of
    that CA (its own certificate: the pki's member certificate of its name)."""

    def __init__(self, directory: Path, name: str = "test", pki: Pki | None = None):
        self.dir = directory
        self.name = name
        self.pki = pki
        self.scheme = "https" if pki else "http"
        self.client_port, self.peer_port = free_port(), free_port()
        self.initial_cluster = f"{name}={self.peer_url}"
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.peer_port}"

    @property
    def client_tls(self) -> ClientTls | None:
        """The files a client (lclusterd, etcdctl) presents to this etcd; None for plain http."""
        return self.pki.client() if self.pki else None

    def _tls_args(self) -> list[str]:
        if self.pki is None:
            return []
        ca = str(self.pki.ca)
        cert, key = (str(p) for p in self.pki.member(self.name))
        return ["--client-cert-auth", "--trusted-ca-file", ca, "--cert-file", cert, "--key-file", key,
                "--peer-client-cert-auth", "--peer-trusted-ca-file", ca, "--peer-cert-file", cert, "--peer-key-file", key]

    def live_endpoints(self) -> str:
        return self.endpoint  # as EtcdCluster's, for readers that take either

    def start(self) -> None:
        self.launch()
        self.wait_healthy()

    def launch(self) -> None:
        """Start the process without waiting (a cluster's members must start together)."""
        require_etcd()
        peer = self.peer_url
        log = open(self.dir / "etcd.log", "ab")
        self.process = subprocess.Popen(
            ["etcd", "--name", self.name, "--data-dir", str(self.dir / "data"),
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", self.initial_cluster,
             "--log-level", "warn", *self._tls_args()],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def wait_healthy(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.dir / "etcd.log").read_text()[-2000:]
            try:
                with socket.create_connection(("127.0.0.1", self.client_port), timeout=0.2):
                    pass
                if subprocess.run(["etcdctl", "--endpoints", self.endpoint, *etcdctl_tls(self), "endpoint", "health"],
                                  capture_output=True, env={**os.environ, "ETCDCTL_API": "3"}).returncode == 0:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"etcd {self.name} did not become healthy")

    def stop(self) -> None:
        if self.process is not None:
            kill_group(self.process)

    def kill_hard(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class EtcdCluster:
    """`size` etcd members on loopback, one --initial-cluster; `endpoint` lists them all (the
    daemons' --etcd), so a Cluster can run on it as on one EtcdProcess. With a `pki` (member
    certificates m0, m1, ...) every member speaks only TLS."""

    def __init__(self, directory: Path, size: int = 3, pki: Pki | None = None):
        self.pki = pki
        self.members = []
        for i in range(size):
            (directory / f"m{i}").mkdir(parents=True, exist_ok=True)
            self.members.append(EtcdProcess(directory / f"m{i}", f"m{i}", pki))
        initial = ",".join(m.initial_cluster for m in self.members)
        for m in self.members:
            m.initial_cluster = initial

    @property
    def endpoint(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def live_endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members if m.process is not None and m.process.poll() is None)

    @property
    def client_tls(self) -> ClientTls | None:
        return self.pki.client() if self.pki else None

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
            result = subprocess.run(["etcdctl", "--endpoints", self.live_endpoints(), *etcdctl_tls(self), "endpoint",
                                     "status", "-w", "json"],
                                    capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=30)
            if result.returncode == 0:
                statuses = json.loads(result.stdout)
                leaders = {s["Status"]["leader"] for s in statuses}
                found = [s["Endpoint"] for s in statuses if s["Status"]["header"]["member_id"] in leaders]
                if len(leaders) == 1 and len(found) == 1:
                    return next(m for m in self.members if m.endpoint == found[0])
            time.sleep(0.1)
        raise AssertionError("the etcd members did not agree on a leader")


class NodeProcess:
    """One real lclusterd process (a node) with its own state dir, port and node name."""

    def __init__(self, directory: Path, etcd_endpoint: str | None, prefix: str, name: str = "node1",
                 extra: list[str] | None = None):
        self.dir = directory
        self.state_dir = directory / "state"
        self.port = free_port()
        self.metrics_port = free_port()  # every node serves its metrics, each on a port of its own
        self.etcd_endpoint = etcd_endpoint
        self.prefix = prefix
        self.name = name
        self.extra = extra or []
        self.process: subprocess.Popen | None = None
        self.log_path = directory / f"{name}.log"

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def socket(self) -> str:
        """The node's Unix socket, as lclient's -server takes it."""
        return f"unix:{self.state_dir / 'lclusterd.sock'}"

    def argv(self) -> list[str]:
        argv = [LCLUSTERD, "--state-dir", str(self.state_dir), "--listen", str(self.port), "--node-name", self.name,
                "--rootfs", ROOTFS, "--prefix", self.prefix, "--lease-ttl", "2", *self.extra]
        if "--tls-dir" not in self.extra:  # tests talk plain TCP unless they test TLS
            argv.append("--insecure")
        if "--cgroup-root" not in self.extra:
            argv += ["--cgroup-root", CGROUP_ROOT]
        if "--web-listen" not in self.extra:  # nodes on one host would share the default port
            argv += ["--web-listen", ""]
        if "--bridge" not in self.extra:  # nodes on one host would share lcl0 with subnets of their own
            argv += ["--bridge", ""]
        if "--metrics-listen" not in self.extra:
            argv += ["--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        if self.etcd_endpoint:
            argv += ["--etcd", self.etcd_endpoint]
        return argv

    @property
    def web_url(self) -> str:
        """http://HOST:PORT of the node's web page (a test gives it --web-listen)."""
        return "http://" + self.extra[self.extra.index("--web-listen") + 1]

    @property
    def tls_dir(self) -> Path | None:
        return Path(self.extra[self.extra.index("--tls-dir") + 1]) if "--tls-dir" in self.extra else None

    def channel(self) -> grpc.Channel:
        """A channel to the node's TCP port; over mutual TLS as the node itself when it has --tls-dir."""
        if self.tls_dir is None:
            return grpc.insecure_channel(self.server)
        read = lambda file: (self.tls_dir / file).read_bytes()  # noqa: E731
        credentials = grpc.ssl_channel_credentials(read("ca.pem"), read(f"{self.name}-key.pem"), read(f"{self.name}.pem"))
        return grpc.secure_channel(self.server, credentials)

    def start(self, wait: bool = True) -> NodeProcess:
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
        with self.channel() as channel:
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
            kill_group(self.process, signal.SIGKILL)
            raise AssertionError(f"lclusterd did not stop within {timeout}s:\n{self.log()[-3000:]}")

    def kill_hard(self) -> None:
        """kill -9 the daemon's whole group (the runtime helper too), like a crash."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def lclient(self, *args: str, timeout: float = 60, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        return run_lclient(*args, server=self.server, timeout=timeout, stdin=stdin)


class Cluster:
    """Starts nodes against one etcd (an EtcdProcess or an EtcdCluster; None: each node's
    embedded etcd) and one key prefix; close() stops them all."""

    def __init__(self, tmp_path: Path, etcd: EtcdProcess | EtcdCluster | None):
        self.tmp_path = tmp_path
        self.etcd = etcd
        self.prefix = f"/test-{uuid.uuid4().hex[:8]}"
        self.daemons: list[NodeProcess] = []

    def daemon(self, name: str = "node1", extra: list[str] | None = None, start: bool = True,
               directory: Path | None = None) -> NodeProcess:
        """A node on the cluster's etcd (with its client certificate when that etcd runs TLS)."""
        tls = self.etcd.client_tls if self.etcd else None
        extra = [*(tls.lclusterd_args() if tls else []), *(extra or [])]
        d = NodeProcess(directory or self.tmp_path / name, self.etcd.endpoint if self.etcd else None, self.prefix, name, extra)
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
                kill_group(d.process, signal.SIGKILL)
        # Nothing of a job may outlive its node's clean stop (a node killed -9 in a test is
        # started again, and its start-up sweep is what removes what the crash left).
        left = [path for d in self.daemons for path in job_cgroups_left(d.name)]
        for path in left:
            path.rmdir()  # so that later tests start clean; fails loudly if a process is still in it
        for d in self.daemons:
            remove_cgroup_parent(d.name)
        assert not left, f"job cgroups left after the daemons stopped: {[str(p) for p in left]}"


def run_lclient(*args: str, server: str | None = None, timeout: float = 60,
                stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LCLUSTER_SERVER"}
    if server:
        env["LCLUSTER_SERVER"] = server
    return subprocess.run([LCLIENT, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          input=stdin.decode() if stdin is not None else None)
