"""TLS for etcd: the embedded etcd's private CA and certificates, and the checks of an external
etcd's (--etcd-cacert, --etcd-cert, --etcd-key).

The embedded etcd speaks only TLS and takes only clients with a certificate of its own CA, so
that being on the host is not enough to read or write job records: the files that let a
program in live in <state-dir>/etcd-tls, a root-only (0700) directory, keys 0600 (certs.py):

    ca.pem, ca-key.pem              the private CA (made once; its key stays here to renew)
    etcd.pem, etcd-key.pem          etcd's certificate, for 127.0.0.1 and localhost
    lclusterd.pem, lclusterd-key.pem   the daemon's client certificate

They are made at the first start and reused after that; one that is unreadable, expires
within RENEW_BEFORE, or was not signed by the CA there is made again (all of them with a new
CA when the CA itself is the problem).
"""

from __future__ import annotations

import datetime
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from lclusterd import certs

TLS_DIR = "etcd-tls"
SERVER_NAME = "etcd"
CLIENT_NAME = "lclusterd"
HOSTS = ("127.0.0.1", "localhost")
RENEW_BEFORE = datetime.timedelta(days=30)


class EtcdTlsError(Exception):
    """etcd's TLS files cannot be made or used; the message says which and why in one line."""


@dataclass(frozen=True)
class ClientFiles:
    """What a client of etcd presents: the CA it trusts etcd's certificate by, and its own
    certificate and key ("" for none: an etcd that does not ask clients for one)."""

    cacert: str
    cert: str = ""
    key: str = ""


@dataclass(frozen=True)
class EmbeddedTls:
    """The embedded etcd's files in `directory` (see the module's docstring)."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / f"{SERVER_NAME}.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / f"{SERVER_NAME}-key.pem"

    def client(self) -> ClientFiles:
        return ClientFiles(str(self.ca), str(self.directory / f"{CLIENT_NAME}.pem"),
                           str(self.directory / f"{CLIENT_NAME}-key.pem"))


def ensure_embedded(state_dir: str | Path) -> EmbeddedTls:
    """The embedded etcd's TLS files under <state_dir>/etcd-tls, made where missing or unusable.
    Called once at start, before any thread. EtcdTlsError when they cannot be made."""
    tls = EmbeddedTls(Path(state_dir) / TLS_DIR)
    _private_directory(tls.directory)
    try:
        ca = _usable_ca(tls.directory)
        if ca is None:
            certs.init_ca(tls.directory, days=certs.CA_DAYS, force=True)
            ca = certs.load_ca(tls.directory)[0]
        # The leaves live as long as the CA: they never leave this host, and a daemon that
        # runs for longer than a shorter validity would find etcd refusing it.
        for name, role, hosts in ((SERVER_NAME, certs.SERVER, HOSTS), (CLIENT_NAME, certs.CLIENT, ())):
            if not _usable_leaf(tls.directory / f"{name}.pem", tls.directory / f"{name}-key.pem", ca):
                certs.issue(tls.directory, name, role, hosts, days=certs.CA_DAYS, force=True)
    except certs.CertError as exc:
        raise EtcdTlsError(f"cannot make the embedded etcd's certificates in {tls.directory}: {exc}") from None
    return tls


def _private_directory(path: Path) -> None:
    """`path` as a directory of this user's that only it can enter (0700), made if missing;
    refused if it is a symlink or someone else's."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise EtcdTlsError(f"{path} must be a directory owned by uid {os.geteuid()} (not a symlink); "
                               "move it away and start again")
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(path, 0o700)  # the keys are 0600 too; the directory keeps out even their names
    except OSError as exc:
        raise EtcdTlsError(f"cannot prepare {path}: {exc.strerror}") from None


def _usable_ca(directory: Path) -> x509.Certificate | None:
    try:
        cert, _ = certs.load_ca(directory)
    except certs.CertError:
        return None
    return cert if _lasts(cert) else None


def _usable_leaf(cert_path: Path, key_path: Path, ca: x509.Certificate) -> bool:
    """Whether the certificate is readable, signed by `ca`, not about to expire, and its key's."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    return _lasts(cert) and cert.public_key() == key.public_key()


def _lasts(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc) > RENEW_BEFORE


# -- an external etcd ------------------------------------------------------------------------------
def check_external(endpoints: list[str], cacert: str, cert: str, key: str) -> ClientFiles | None:
    """The client files for the external etcd at `endpoints` (--etcd), or None for plain http;
    EtcdTlsError, one line, for options that do not go together or a file that cannot be used."""
    given = [f"--etcd-{name}" for name, value in (("cacert", cacert), ("cert", cert), ("key", key)) if value]
    if not endpoints:
        if given:
            raise EtcdTlsError(f"{given[0]} is for an external etcd (--etcd); the embedded etcd makes its own "
                               f"certificates under <state-dir>/{TLS_DIR}")
        return None
    schemes = {urlsplit(e).scheme if "://" in e else "" for e in endpoints}
    if not given:
        if "https" in schemes:
            raise EtcdTlsError("--etcd https://... needs --etcd-cacert (the CA that signed etcd's certificate), and "
                               "--etcd-cert and --etcd-key when etcd asks clients for a certificate")
        return None
    if "http" in schemes:
        raise EtcdTlsError(f"{given[0]} is given but --etcd lists plain http:// endpoints: use https://")
    if not cacert:
        raise EtcdTlsError("--etcd-cert and --etcd-key need --etcd-cacert (the CA that signed etcd's certificate)")
    if bool(cert) != bool(key):
        raise EtcdTlsError("--etcd-cert and --etcd-key go together: a client certificate and its key")
    _check_files(cacert, cert, key)
    return ClientFiles(cacert, cert, key)


def _check_files(cacert: str, cert: str, key: str) -> None:
    """Each file exists, can be read, and holds what its option says; the key is the certificate's."""
    loaded = {}
    for option, path, load in (("--etcd-cacert", cacert, x509.load_pem_x509_certificate),
                               ("--etcd-cert", cert, x509.load_pem_x509_certificate),
                               ("--etcd-key", key, lambda data: serialization.load_pem_private_key(data, None))):
        if not path:
            continue
        try:
            with open(path, "rb") as f:
                loaded[option] = load(f.read())
        except OSError as exc:
            raise EtcdTlsError(f"{option} {path}: cannot read it ({exc.strerror})") from None
        except (ValueError, TypeError):
            kind = "private key" if option == "--etcd-key" else "certificate"
            raise EtcdTlsError(f"{option} {path}: not a PEM {kind} (unencrypted)") from None
    if cert and loaded["--etcd-cert"].public_key() != loaded["--etcd-key"].public_key():
        raise EtcdTlsError(f"--etcd-key {key} is not the key of --etcd-cert {cert}")
