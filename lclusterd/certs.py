"""Certificates for mutual TLS: a cluster CA, node certificates and user certificates.

Every certificate names its holder (subject CN) and its role (subject OU): "node" for a
node (it serves clients and calls other nodes, so it may act as server and as client),
"user" for a person or program that submits jobs, "admin" for one who may act on every
job and on the nodes. The CA signs them all; a listener with `--tls-dir` trusts exactly
that CA. Keys are ECDSA P-256, written 0600; certificates are PEM.

Two more roles are for etcd, never for the API (`holder_of` refuses them, so such a
certificate cannot act as a node or a user even under a shared CA): "server" for an etcd
member (it serves clients at its names and addresses and dials its peers with the same
certificate, so it may act as server and as client) and "client" for a program that only
calls etcd (lclusterd itself).

    DIR/ca.pem, DIR/ca-key.pem         the cluster CA (keep ca-key.pem off the nodes)
    DIR/NAME.pem, DIR/NAME-key.pem     a node's or a user's certificate and key
    DIR/revoked.pem                    the certificates no longer good: a CRL the CA signed
                                       (`revoke`), which nodes read from their --tls-dir at
                                       start and on SIGHUP
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NODE, USER, ADMIN = "node", "user", "admin"
ROLES = (NODE, USER, ADMIN)  # who may hold a certificate at the API
SERVER, CLIENT = "server", "client"
SERVICE_ROLES = (SERVER, CLIENT)  # etcd's members and its clients
# The roles that serve (a node, an etcd member): their certificates may act as servers too,
# named by the addresses they are reached at (SANs); the others' only as clients.
_SERVES = (NODE, SERVER)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
CA_DAYS = 3650
DAYS = 365
REVOKED = "revoked.pem"


class CertError(Exception):
    """A certificate cannot be made or read; the message says why in one line."""


@dataclass(frozen=True)
class Holder:
    """Who a certificate names: its subject's CN and OU."""

    name: str
    role: str
    serial: int = 0  # the certificate's serial number: what a revocation names

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


def init_ca(directory: str | Path, days: int = CA_DAYS, force: bool = False) -> list[Path]:
    """Make a new cluster CA in `directory`; the files written."""
    directory = Path(directory)
    paths = [directory / "ca.pem", directory / "ca-key.pem"]
    _refuse_overwrite(paths, force)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lclusterd"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"lclusterd CA {os.urandom(4).hex()}")])
    builder = _builder(subject, subject, key.public_key(), days)
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    builder = builder.add_extension(_key_usage(cert_sign=True), critical=True)
    cert = builder.sign(key, hashes.SHA256())
    _write(directory, paths, cert, key)
    return paths


def issue(directory: str | Path, name: str, role: str, hosts: tuple[str, ...] = (), days: int = DAYS,
          force: bool = False) -> list[Path]:
    """A certificate for `name` in `role`, signed by the CA in `directory`; the files written.
    `hosts`: the names and addresses a node or an etcd member is reached at (its certificate's
    SANs, addresses as IP SANs)."""
    if not NAME.match(name or ""):
        raise CertError(f"invalid name {name!r}: letters, digits, '.', '_' or '-' (at most 63)")
    if role not in ROLES + SERVICE_ROLES:
        raise CertError(f"unknown role {role!r}: expected one of {', '.join(ROLES + SERVICE_ROLES)}")
    directory = Path(directory)
    ca_cert, ca_key = load_ca(directory)
    paths = [directory / f"{name}.pem", directory / f"{name}-key.pem"]
    _refuse_overwrite(paths, force)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lclusterd"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = _builder(subject, ca_cert.subject, key.public_key(), days)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    builder = builder.add_extension(_key_usage(cert_sign=False), critical=True)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if role in _SERVES else [])
    builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if role in _SERVES:
        builder = builder.add_extension(x509.SubjectAlternativeName(_alt_names((name, *hosts))), critical=False)
    _write(directory, paths, builder.sign(ca_key, hashes.SHA256()), key)
    return paths


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), password=None)
    except FileNotFoundError as missing:
        raise CertError(f"no CA in {directory} ({Path(missing.filename).name} is missing): "
                        f"make one with `lclusterd certs init {directory}`") from None
    except ValueError as bad:
        raise CertError(f"cannot read the CA in {directory}: {bad}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"the CA key in {directory} is not an ECDSA key")
    return cert, key


def holder_of(cert_pem: bytes) -> Holder:
    """The holder a (verified) certificate names; CertError if it names none."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as bad:
        raise CertError(f"unreadable certificate: {bad}") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    roles = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(names) != 1 or len(roles) != 1 or roles[0].value not in ROLES:
        raise CertError("the certificate names no lclusterd holder (CN) and role (OU)")
    return Holder(str(names[0].value), str(roles[0].value), cert.serial_number)


def revoke(directory: str | Path, names: tuple[str, ...] = (), files: tuple[str, ...] = ()) -> tuple[Path, list[Holder]]:
    """Add certificates to DIR/revoked.pem, the CRL of the CA in `directory` (the revocations
    already in it are kept, with their dates): those of the holders `names` as issued there
    (DIR/NAME.pem) and the certificate files `files`, each of which must have been signed by
    this CA. Returns the CRL's path and the holders it now names that it did not before."""
    directory = Path(directory)
    ca_cert, ca_key = load_ca(directory)
    path = directory / REVOKED
    now = datetime.datetime.now(datetime.timezone.utc)
    dates = {e.serial_number: e.revocation_date_utc for e in _crl(ca_cert, path.read_bytes())} if path.exists() else {}
    added: list[Holder] = []
    for cert in [_read_cert(directory / f"{name}.pem", f"no certificate was issued to {name} in {directory}")
                 for name in names] + [_read_cert(Path(f), f"no certificate file {f}") for f in files]:
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            raise CertError(f"the certificate of serial {cert.serial_number:#x} was not signed by the CA in {directory}") from None
        if cert.serial_number not in dates:
            dates[cert.serial_number] = now
            added.append(holder_of(cert.public_bytes(serialization.Encoding.PEM)))
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject).last_update(now)
               .next_update(max(ca_cert.not_valid_after_utc, now + datetime.timedelta(days=1))))
    for serial, date in sorted(dates.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(date).build())
    try:
        _write_file(path, builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as error:
        raise CertError(f"cannot write {path}: {error.strerror}") from None
    return path, added


def revoked_serials(ca_pem: bytes, crl_pem: bytes) -> frozenset[int]:
    """The serial numbers a CRL revokes, once it is shown to be the CA's (CertError if not)."""
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as bad:
        raise CertError(f"unreadable CA certificate: {bad}") from None
    return frozenset(entry.serial_number for entry in _crl(ca, crl_pem))


def _crl(ca: x509.Certificate, crl_pem: bytes) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_pem_x509_crl(crl_pem)
    except ValueError as bad:
        raise CertError(f"unreadable {REVOKED}: {bad}") from None
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):
        raise CertError(f"{REVOKED} was not signed by the cluster CA (ca.pem)")
    return crl


def _read_cert(path: Path, missing: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise CertError(missing) from None
    except ValueError as bad:
        raise CertError(f"unreadable certificate {path}: {bad}") from None


def check_node_certificate(cert_pem: bytes, name: str, address: str) -> None:
    """CertError unless the certificate is node `name`'s and names `address` (the host this
    node advertises, which its peers and clients check against it)."""
    holder = holder_of(cert_pem)
    if (holder.name, holder.role) != (name, NODE):
        raise CertError(f"the certificate is {holder.role} {holder.name}'s, not node {name}'s")
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        alt = x509.SubjectAlternativeName([])
    names = {str(n) for n in alt.get_values_for_type(x509.DNSName)}
    names |= {str(ip) for ip in alt.get_values_for_type(x509.IPAddress)}
    try:
        address = str(ipaddress.ip_address(address.strip("[]")))
    except ValueError:
        pass
    if address not in names:
        raise CertError(f"node {name}'s certificate does not name {address}, the address it advertises (--namespace); "
                        f"it names {', '.join(sorted(names)) or 'nothing'} (make it again with --host {address})")


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    if not 1 <= days <= 36500:
        raise CertError(f"--days must be between 1 and 36500, not {days}")
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))  # clocks of two hosts differ a little
            .not_valid_after(now + datetime.timedelta(days=days)))


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=not cert_sign, key_cert_sign=cert_sign,
                         crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def _alt_names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _refuse_overwrite(paths: list[Path], force: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise CertError(f"{existing[0]} exists already (use --force to replace it)")


def _write(directory: Path, paths: list[Path], cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        _write_file(paths[1], key_pem, 0o600)
        _write_file(paths[0], cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as error:
        raise CertError(f"cannot write to {directory}: {error.strerror}") from None


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write through a new file, created with its final mode (a key is never readable by others)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)
