"""The embedded etcd: with no --etcd, the daemon runs Debian's `etcd` binary itself, with its
data under <state-dir>/etcd, on loopback only, and stops it on shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

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
    def __init__(self, state_dir: str | Path, binary: str = "etcd"):
        self.dir = Path(state_dir)
        self.data_dir = self.dir / "etcd"
        self.log_path = self.dir / "etcd.log"
        self.pid_path = self.dir / "etcd.pid"
        self.binary = binary
        self.client_port = 0
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 30.0) -> str:
        """Start etcd and return its client endpoint once it reports healthy."""
        self._stop_leftover()
        self.client_port = PREFERRED_CLIENT_PORT if _port_free(PREFERRED_CLIENT_PORT) else _free_port()
        peer_port = PREFERRED_PEER_PORT if _port_free(PREFERRED_PEER_PORT) else _free_port()
        client, peer = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{peer_port}"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        argv = [self.binary, "--name", "lclusterd", "--data-dir", str(self.data_dir),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"lclusterd={peer}", "--log-level", "warn"]
        try:
            with open(self.log_path, "ab") as log_file:
                self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        except FileNotFoundError:
            raise EtcdStartError(f"cannot start the embedded etcd: {self.binary!r} not found (make prep installs etcd-server)") from None
        self.pid_path.write_text(str(self.process.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EtcdStartError(f"the embedded etcd exited with status {self.process.returncode}: {self._log_tail()}")
            if self._healthy():
                return self.endpoint
            time.sleep(0.05)
        self.stop()
        raise EtcdStartError(f"the embedded etcd did not become healthy within {timeout:g}s (log: {self.log_path})")

    def _healthy(self) -> bool:
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
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
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        try:
            self.pid_path.unlink()
        except FileNotFoundError:
            pass


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
