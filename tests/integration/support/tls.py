"""Certificates for the mutual-TLS tests, made with `lclusterd certs` (the real command) into a
directory a node takes as --tls-dir; and what `lclusterd certs` refuses to make: an expired
certificate (signed by the right CA)."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.processes import LCLUSTERD


def certs(*args: str) -> None:
    result = subprocess.run([LCLUSTERD, "certs", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def make_pki(directory: Path, nodes: dict[str, list[str]], users: dict[str, bool]) -> Path:
    """A CA in `directory`, a certificate per node (name -> the addresses it is reached at) and
    per user (name -> admin or not)."""
    certs("init", str(directory))
    for name, hosts in nodes.items():
        certs("node", str(directory), name, *(arg for host in hosts for arg in ("--host", host)))
    for name, admin in users.items():
        certs("user", str(directory), name, *(["--admin"] if admin else []))
    return directory


def expired_user(directory: Path, name: str) -> None:
    """A user certificate signed by the CA in `directory` that expired yesterday."""
    ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "user"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now - datetime.timedelta(days=1)).sign(ca_key, hashes.SHA256()))
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}-key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                                  serialization.PrivateFormat.PKCS8,
                                                                  serialization.NoEncryption()))


def channel_credentials(directory: Path, name: str) -> grpc.ChannelCredentials:
    read = lambda file: (Path(directory) / file).read_bytes()  # noqa: E731
    return grpc.ssl_channel_credentials(read("ca.pem"), read(f"{name}-key.pem"), read(f"{name}.pem"))
