"""Who is calling: every API call is made by an Identity, found once per call from how the
call came in.

- Over the node's Unix socket, the kernel says (SO_PEERCRED, read by the gate, gate.py):
  root is an admin, a member of the group `lclusterd` acts as himself, anyone else is
  refused before a byte reaches the API.
- Over TCP with mutual TLS (`--tls-dir`), the client's certificate says: its name (CN) and
  its role (OU: user, admin, or node for a peer node's proxied call), verified against the
  cluster CA by the TLS handshake itself, and checked against the CA's revocations at every
  call (so a certificate revoked while its connection is open is refused from then on).
- Over plain TCP (`--insecure`, for labs and tests), every caller is an admin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from lclusterd import certs
from lclusterd.errors import NotAuthenticated

INSECURE_NAME = "root"  # what plain TCP's callers are: its jobs are root's, as before identities


@dataclass(frozen=True)
class Identity:
    name: str
    admin: bool = False
    node: bool = False  # a peer node, calling on a user's behalf (log proxying)
    # the serial of the certificate the caller came with (None: the socket or plain TCP): web
    # tokens minted for it carry it, so revoking the certificate ends them too
    serial: int | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        return f"node {self.name}" if self.node else ("admin " if self.admin else "user ") + self.name


class Authenticator:
    """Finds the Identity of a call. `gate_identity` looks up a connection the Unix-socket
    gate handed over, by the abstract address it names it with; `revoked` says whether a
    certificate's serial number is revoked."""

    def __init__(self, gate_identity=lambda _peer: None, revoked=lambda _serial: False):
        self._gate_identity = gate_identity
        self._revoked = revoked
        self._by_cert: dict[bytes, Identity] = {}  # parsing a certificate costs more than a lookup

    def identify(self, context: grpc.ServicerContext) -> Identity:
        peer = context.peer()
        if peer.startswith("unix-abstract:"):
            found = self._gate_identity(peer[len("unix-abstract:"):])
            if found is not None:
                return found
            raise NotAuthenticated("this connection did not come through the node's socket gate")
        auth = context.auth_context()
        if auth.get("transport_security_type") == [b"ssl"]:
            return self._from_certificate(auth)
        if peer.startswith(("ipv4:", "ipv6:")):  # plain TCP is served only with --insecure
            return Identity(INSECURE_NAME, admin=True)
        raise NotAuthenticated(f"cannot tell who is calling over {peer or 'this connection'}")

    def _from_certificate(self, auth: dict) -> Identity:
        pem = (auth.get("x509_pem_cert") or [b""])[0]
        found = self._by_cert.get(pem)
        if found is None:
            try:
                holder = certs.holder_of(pem)
            except certs.CertError as error:
                raise NotAuthenticated(f"client certificate refused: {error}") from None
            found = Identity(holder.name, admin=holder.is_admin, node=holder.role == certs.NODE, serial=holder.serial)
            if len(self._by_cert) > 10_000:
                self._by_cert.clear()
            self._by_cert[pem] = found
        if self._revoked(found.serial):
            raise NotAuthenticated(f"client certificate refused: {found.label}'s certificate "
                                   f"(serial {found.serial:#x}) is revoked")
        return found
