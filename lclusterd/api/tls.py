"""Mutual TLS for the node's TCP listener and for its calls to other nodes (`--tls-dir`).

The directory holds the cluster CA (ca.pem) and this node's certificate and key (NAME.pem,
NAME-key.pem for its --node-name), as `lclusterd certs` writes them. The listener asks
every client for a certificate signed by that CA and refuses the handshake without one;
a call to a peer node presents this node's certificate (role node) and checks the peer's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from lclusterd import certs
from lclusterd.errors import LclusterdError


class TlsError(LclusterdError):
    """The TLS directory is not usable; the message says what is missing."""


@dataclass(frozen=True)
class TlsFiles:
    ca: bytes
    cert: bytes
    key: bytes

    @staticmethod
    def load(directory: str | Path, name: str, address: str) -> TlsFiles:
        """The files for node `name`, whose certificate must name `address` (its --namespace)."""
        directory = Path(directory)
        files = [directory / "ca.pem", directory / f"{name}.pem", directory / f"{name}-key.pem"]
        try:
            ca, cert, key = (path.read_bytes() for path in files)
        except FileNotFoundError as missing:
            raise TlsError(f"--tls-dir {directory} has no {Path(missing.filename).name} (make it with: lclusterd certs "
                           f"node {directory} {name} --host ADDRESS)") from None
        except PermissionError as denied:
            raise TlsError(f"cannot read {denied.filename}: permission denied") from None
        try:
            certs.check_node_certificate(cert, name, address)
        except certs.CertError as error:
            raise TlsError(f"--tls-dir {directory}: {error}") from None
        return TlsFiles(ca, cert, key)

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert)
