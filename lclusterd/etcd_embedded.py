"""The embedded etcd: with no --etcd, the daemon runs Debian's `etcd` binary itself, with its
data under <state-dir>/etcd, on loopback only, TLS only, taking only clients with a
certificate of its own CA (etcd_tls.py), and stops it on shutdown. While the daemon runs,
etcd_supervisor.py starts it again if it dies."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from lclusterd.etcd_tls import SERVER_NAME, EmbeddedTls

PREFERRED_CLIENT_PORT = 2379
PREFERRED_PEER_PORT = 2380


class EtcdStartError(RuntimeError):
    """etcd could not be started or did not become healthy; the message says why."""


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedEtcd:
    """One etcd member of this node's own, TLS only, clients with a certificate of its CA only.
    start() picks its ports once; restart() (the supervisor's, after it died) reuses them, the
    data dir and the certificates, so the daemon's store and watches reconnect to it as they
    are. stop() may come from another thread than a restart in progress: it wins."""

    def __init__(self, state_dir: str | Path, tls: EmbeddedTls, binary: str = "etcd"):
        self.dir = Path(state_dir)
        self.data_dir = self.dir / "etcd"
        self.log_path = self.dir / "etcd.log"
        self.pid_path = self.dir / "etcd.pid"
        self.tls = tls
        self.binary = binary
        self.client_port = 0
        self.peer_port = 0
        self.process: subprocess.Popen | None = None
        self._lock = threading.Lock()  # a process is spawned or stopped under it
        self._stopped = threading.Event()

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 30.0) -> str:
        """Start etcd and return its client endpoint once it reports healthy."""
        self._stop_leftover()
        self.client_port = PREFERRED_CLIENT_PORT if _port_free(PREFERRED_CLIENT_PORT) else _free_port()
        self.peer_port = PREFERRED_PEER_PORT if _port_free(PREFERRED_PEER_PORT) else _free_port()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        return self.restart(timeout)

    def restart(self, timeout: float = 30.0) -> str:
        """Start etcd again on the ports, data dir and certificates of the first start; its
        client endpoint once healthy. EtcdStartError if it exits, stays unhealthy, or stop()
        is called meanwhile."""
        self._spawn()
        context = self._client_context()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._stopped.is_set():
                raise EtcdStartError("the embedded etcd is being stopped")
            if self.process.poll() is not None:
                raise EtcdStartError(f"the embedded etcd exited with status {self.process.returncode}: {self._log_tail()}")
            if self._healthy(context):
                return self.endpoint
            time.sleep(0.05)
        self._end_process()
        raise EtcdStartError(f"the embedded etcd did not become healthy within {timeout:g}s (log: {self.log_path})")

    def _spawn(self) -> None:
        with self._lock:
            if self._stopped.is_set():
                raise EtcdStartError("the embedded etcd is being stopped")
            try:
                # root's alone, as the rest of etcd's files: the state dir lets others through (0711)
                log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
                with open(log_fd, "ab") as log_file:
                    os.fchmod(log_fd, 0o600)  # one an older version made is 0644
                    self.process = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=log_file,
                                                    stderr=subprocess.STDOUT, start_new_session=True)
            except FileNotFoundError as exc:
                missing = self.binary if exc.filename == self.binary else exc.filename
                raise EtcdStartError(f"cannot start the embedded etcd: {missing!r} not found"
                                     + (" (make prep installs etcd-server)" if missing == self.binary else "")) from None
            except OSError as exc:
                raise EtcdStartError(f"cannot start the embedded etcd: {exc}") from None
            self.pid_path.write_text(str(self.process.pid))

    def _argv(self) -> list[str]:
        client, peer = self.endpoint, f"https://127.0.0.1:{self.peer_port}"
        ca, cert, key = str(self.tls.ca), str(self.tls.server_cert), str(self.tls.server_key)
        return [self.binary, "--name", "lclusterd", "--data-dir", str(self.data_dir),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"lclusterd={peer}", "--log-level", "warn",
                # clients: TLS, and only with a certificate signed by the private CA
                "--client-cert-auth", "--trusted-ca-file", ca, "--cert-file", cert, "--key-file", key,
                # peers: a single member has none; only etcd's own certificate may speak raft here
                "--peer-client-cert-auth", "--peer-trusted-ca-file", ca, "--peer-cert-file", cert,
                "--peer-key-file", key, "--peer-cert-allowed-cn", SERVER_NAME]

    def wait(self) -> int:
        """Block until the current etcd process exits; its status (negative: the signal)."""
        return self.process.wait()

    def _client_context(self) -> ssl.SSLContext:
        """TLS as the daemon's store speaks it: etcd's CA, and the daemon's client certificate."""
        client = self.tls.client()
        context = ssl.create_default_context(cafile=client.cacert)
        context.load_cert_chain(client.cert, client.key)
        return context

    def _healthy(self, context: ssl.SSLContext) -> bool:
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),  # never via a proxy
                                                 urllib.request.HTTPSHandler(context=context))
            with opener.open(f"{self.endpoint}/health", timeout=1) as response:
                return json.load(response).get("health") == "true"
        except (OSError, ValueError):
            return False

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1][-300:] if lines else "no output"

    def _stop_leftover(self) -> None:
        """An etcd left running by a daemon that crashed, on our data dir: stop it."""
        try:
            pid = int(self.pid_path.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if str(self.data_dir).encode() in cmdline:
            _terminate(pid, 10)

    def stop(self) -> None:
        """Stop etcd for good: a restart in progress gives up, and none follows."""
        self._stopped.set()
        self._end_process()
        self.pid_path.unlink(missing_ok=True)

    def _end_process(self) -> None:
        with self._lock:
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()


def _terminate(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
