"""TLS for the etcd of the tests: a test PKI made with the project's own certificate library
(lclusterd/certs.py), and a client's files as etcdctl and lclusterd take them.

    Pki.make(dir, members)   a CA; a "server" certificate per etcd member (127.0.0.1, localhost);
                             the client certificate lclusterd presents
    ClientTls                a client's CA, certificate and key: etcdctl_args(), lclusterd_args()
    embedded_client(node)    the files a node made for its embedded etcd (<state>/etcd-tls)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lclusterd import certs

MEMBER_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class ClientTls:
    """What a client of etcd presents; cert and key may be empty (a client without one)."""

    cacert: Path
    cert: Path | None = None
    key: Path | None = None

    def etcdctl_args(self) -> list[str]:
        args = ["--cacert", str(self.cacert)]
        return args + (["--cert", str(self.cert), "--key", str(self.key)] if self.cert else [])

    def lclusterd_args(self) -> list[str]:
        args = ["--etcd-cacert", str(self.cacert)]
        return args + (["--etcd-cert", str(self.cert), "--etcd-key", str(self.key)] if self.cert else [])


@dataclass(frozen=True)
class Pki:
    directory: Path

    @classmethod
    def make(cls, directory: Path, members: list[str], clients: tuple[str, ...] = ("lclusterd",)) -> Pki:
        certs.init_ca(directory)
        for name in members:
            certs.issue(directory, name, certs.SERVER, MEMBER_HOSTS)
        for name in clients:
            certs.issue(directory, name, certs.CLIENT)
        return cls(directory)

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    def member(self, name: str) -> tuple[Path, Path]:
        """A member's certificate and key."""
        return self.directory / f"{name}.pem", self.directory / f"{name}-key.pem"

    def client(self, name: str = "lclusterd") -> ClientTls:
        return ClientTls(self.ca, self.directory / f"{name}.pem", self.directory / f"{name}-key.pem")


def embedded_client(state_dir: Path) -> ClientTls:
    """The client files of a node's embedded etcd (lclusterd/etcd_tls.py)."""
    d = Path(state_dir) / "etcd-tls"
    return ClientTls(d / "ca.pem", d / "lclusterd.pem", d / "lclusterd-key.pem")
