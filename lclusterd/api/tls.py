"""Mutual TLS for the node's TCP listener and for its calls to other nodes (`--tls-dir`).

The directory holds the cluster CA (ca.pem) and this node's certificate and key (NAME.pem,
NAME-key.pem for its --node-name), as `lclusterd certs` writes them, and may hold the CA's
list of revoked certificates (revoked.pem, `lclusterd certs revoke`). The listener asks
every client for a certificate signed by that CA and refuses the handshake without one (the
Authenticator refuses a revoked one at each call); a call to a peer node presents this
node's certificate (role node) and checks the peer's.

LiveTls holds the files in use and reads the directory again when asked (SIGHUP): new TLS
handshakes then use the new certificate and CA (gRPC asks it at each handshake), calls are
checked against the new revocations, and new connections to peers present the new
certificate. Files that do not load leave the ones in use in place.
"""

from __future__ import annotations

import functools
import threading
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
    revoked: frozenset[int] = frozenset()  # serial numbers

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
            revoked = _revoked(directory, ca)
            if certs.holder_of(cert).serial in revoked:
                raise certs.CertError(f"{name}.pem is revoked ({certs.REVOKED})")
        except certs.CertError as error:
            raise TlsError(f"--tls-dir {directory}: {error}") from None
        return TlsFiles(ca, cert, key, revoked)

    @functools.cached_property
    def channel_credentials(self) -> grpc.ChannelCredentials:
        """One object per set of files: a peer's channel made with an earlier one is made again."""
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert)

    def server_configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.cert)], root_certificates=self.ca)

    def describe(self) -> str:
        holder = certs.holder_of(self.cert)
        return f"certificate serial {holder.serial:#x}, {len(self.revoked)} revoked"


def _revoked(directory: Path, ca: bytes) -> frozenset[int]:
    try:
        crl = (directory / certs.REVOKED).read_bytes()
    except FileNotFoundError:
        return frozenset()
    except OSError as error:
        raise certs.CertError(f"cannot read {certs.REVOKED}: {error.strerror}") from None
    return certs.revoked_serials(ca, crl)


class LiveTls:
    """The TLS files a running node uses, read again by reload(). Thread-safe."""

    def __init__(self, directory: str | Path, name: str, address: str):
        self._where = (directory, name, address)
        self._lock = threading.Lock()
        self.files = TlsFiles.load(*self._where)
        self._served: TlsFiles | None = self.files  # what the listener's handshakes use

    def reload(self) -> TlsFiles:
        """Read the directory again and use it; TlsError (the files in use stay) if it does not load."""
        files = TlsFiles.load(*self._where)
        with self._lock:
            self.files = files
        return files

    def is_revoked(self, serial: int) -> bool:
        return serial in self.files.revoked

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """This node's credentials for calls to its peers (a new object after each reload)."""
        return self.files.channel_credentials

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self.files.server_configuration(), self._configuration,
                                                   require_client_authentication=True)

    def _configuration(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's question before each handshake: the new configuration once after a reload, else None."""
        with self._lock:
            if self._served is self.files:
                return None
            self._served = self.files
            return self.files.server_configuration()
