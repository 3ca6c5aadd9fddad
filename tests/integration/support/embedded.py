"""A node's embedded etcd seen from outside, as an operator (root) sees it: its pid, its
endpoints (from the process's command line) and the client files the node made for it, so
the readers of etcd_readers.py and etcdctl can reach it as they reach the tests' own etcd."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from support.processes import NodeProcess
from support.etcd_pki import ClientTls, embedded_client


class EmbeddedEtcd:
    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.data_dir = self.state_dir / "etcd"
        self._argv: list[str] = []

    def pid(self) -> int:
        return int((self.state_dir / "etcd.pid").read_text())

    def _flag(self, name: str) -> str:
        if not self._argv:  # read once, while it runs: the ports stay the same across restarts
            self._argv = Path(f"/proc/{self.pid()}/cmdline").read_bytes().decode().split("\0")
        return self._argv[self._argv.index(name) + 1]

    @property
    def endpoint(self) -> str:
        return self._flag("--advertise-client-urls")

    @property
    def peer_port(self) -> int:
        return int(self._flag("--listen-peer-urls").rsplit(":", 1)[1])

    def live_endpoints(self) -> str:
        return self.endpoint

    @property
    def client_tls(self) -> ClientTls:
        return embedded_client(self.state_dir)

    def signal(self, sig: int) -> int:
        """Send `sig` to the running etcd; its pid."""
        self.endpoint  # noqa: B018 (its command line is read before it may go)
        pid = self.pid()
        os.kill(pid, sig)
        return pid

    def kill(self) -> int:
        return self.signal(signal.SIGKILL)

    def kill_leftover(self) -> None:
        """SIGKILL the etcd a node left (it runs in a session of its own, so a node killed -9, or
        one that outlived a test's stop, leaves it, perhaps stopped by the test)."""
        try:
            pid = self.pid()
            if str(self.data_dir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass


class EmbeddedView:
    """What the etcd readers take (`.etcd`, `.prefix`) for a node with an embedded etcd."""

    def __init__(self, node: NodeProcess):
        self.etcd = EmbeddedEtcd(node.state_dir)
        self.prefix = node.prefix
