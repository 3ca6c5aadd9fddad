"""Revoking certificates (certs.revoke, `lclusterd certs revoke`) and what a node does with the
CA's list: the Authenticator refuses a revoked certificate at every call, web tokens minted
for it end, and LiveTls reads the directory again on request, keeping what it had when the new
files do not load."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from lclusterd import certs
from lclusterd.api.identity import Authenticator, Identity
from lclusterd.api.tls import LiveTls, TlsError, TlsFiles
from lclusterd.api.tokens import LOGIN, SESSION, Tokens
from lclusterd.errors import NotAuthenticated


@pytest.fixture
def pki(tmp_path):
    certs.init_ca(tmp_path)
    for name in ("ann", "bob"):
        certs.issue(tmp_path, name, certs.USER)
    certs.issue(tmp_path, "n1", certs.NODE, ("127.0.0.1",))
    return tmp_path


def serial(directory, name: str) -> int:
    return certs.holder_of((directory / f"{name}.pem").read_bytes()).serial


def revoked(directory) -> frozenset[int]:
    return certs.revoked_serials((directory / "ca.pem").read_bytes(), (directory / certs.REVOKED).read_bytes())


def test_revoke_adds_to_the_cas_list_and_keeps_what_it_had(pki):
    path, added = certs.revoke(pki, ("ann",))
    assert path == pki / certs.REVOKED and [(h.name, h.serial) for h in added] == [("ann", serial(pki, "ann"))]
    first = {e.serial_number: e.revocation_date_utc for e in _crl(pki)}
    time.sleep(1.1)
    _, added = certs.revoke(pki, ("ann", "bob"))  # ann again: kept once, with her first date
    assert [h.name for h in added] == ["bob"]
    assert revoked(pki) == {serial(pki, "ann"), serial(pki, "bob")}
    assert {e.serial_number: e.revocation_date_utc for e in _crl(pki)}[serial(pki, "ann")] == first[serial(pki, "ann")]
    # an older certificate of a name issued again since is revoked by its file, not the new one
    certs.issue(pki, "carl", certs.USER)
    old = pki / "carl-old.pem"
    shutil.copy(pki / "carl.pem", old)
    certs.issue(pki, "carl", certs.USER, force=True)
    _, added = certs.revoke(pki, (), (str(old),))
    assert [h.name for h in added] == ["carl"] and serial(pki, "carl") not in revoked(pki)
    assert certs.holder_of(old.read_bytes()).serial in revoked(pki)


def _crl(directory):
    from cryptography import x509
    return x509.load_pem_x509_crl((directory / certs.REVOKED).read_bytes())


def test_revoke_refuses_what_is_not_this_cas(pki, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    certs.init_ca(other)
    certs.issue(other, "eve", certs.USER)
    with pytest.raises(certs.CertError, match="was not signed by the CA"):
        certs.revoke(pki, (), (str(other / "eve.pem"),))
    with pytest.raises(certs.CertError, match="no certificate was issued to carl"):
        certs.revoke(pki, ("carl",))
    assert not (pki / certs.REVOKED).exists()  # nothing written for a refused call
    certs.revoke(other, ("eve",))
    with pytest.raises(certs.CertError, match="not signed by the cluster CA"):  # a list another CA signed
        certs.revoked_serials((pki / "ca.pem").read_bytes(), (other / certs.REVOKED).read_bytes())
    with pytest.raises(certs.CertError, match="unreadable"):
        certs.revoked_serials((pki / "ca.pem").read_bytes(), b"-----BEGIN X509 CRL-----\ngarbage\n")


class Context:
    def __init__(self, pem: bytes):
        self._pem = pem

    def peer(self):
        return "ipv4:10.0.0.1:5"

    def auth_context(self):
        return {"transport_security_type": [b"ssl"], "x509_pem_cert": [self._pem]}


def test_the_authenticator_refuses_a_certificate_revoked_after_its_first_call(pki):
    revoked_now: set[int] = set()
    authenticator = Authenticator(lambda _peer: None, revoked_now.__contains__)
    ann = Context((pki / "ann.pem").read_bytes())
    assert authenticator.identify(ann) == Identity("ann")  # and cached
    revoked_now.add(serial(pki, "ann"))
    with pytest.raises(NotAuthenticated, match=r"user ann's certificate \(serial 0x[0-9a-f]+\) is revoked"):
        authenticator.identify(ann)
    assert authenticator.identify(Context((pki / "bob.pem").read_bytes())).name == "bob"


def test_web_tokens_of_a_revoked_certificate_end(pki):
    revoked_now: set[int] = set()
    tokens = Tokens(os.urandom(32), revoked=revoked_now.__contains__)
    ann = Identity("ann", serial=serial(pki, "ann"))
    issued, local = tokens.issue(ann), tokens.issue(Identity("ann"))  # the second came through a socket
    claims, session = tokens.redeem(issued.login)
    assert claims.serial == ann.serial and tokens.check(session, SESSION).serial == ann.serial
    revoked_now.add(ann.serial)
    for token, kind in ((session, SESSION), (issued.session, SESSION), (issued.login, LOGIN)):
        with pytest.raises(NotAuthenticated, match="certificate this web token was issued for is revoked"):
            tokens.check(token, kind)
    assert tokens.check(local.session, SESSION).user == "ann"


def test_live_tls_reads_the_directory_again_and_keeps_its_files_when_the_new_ones_fail(pki):
    live = LiveTls(pki, "n1", "127.0.0.1")
    assert live.files.revoked == frozenset() and live._configuration() is None  # nothing new yet
    credentials = live.channel_credentials()
    certs.revoke(pki, ("ann",))
    assert not live.is_revoked(serial(pki, "ann"))  # read only when asked
    assert live.reload().revoked == {serial(pki, "ann")} and live.is_revoked(serial(pki, "ann"))
    assert live.channel_credentials() is not credentials  # peers' new channels present the new files
    assert live._configuration() is not None and live._configuration() is None  # once per reload
    # files that do not load leave those in use: a list another CA signed, a key gone
    good = (pki / certs.REVOKED).read_bytes()
    (pki / certs.REVOKED).write_bytes(good.replace(b"A", b"B", 3))
    with pytest.raises(TlsError, match="revoked.pem"):
        live.reload()
    assert live.is_revoked(serial(pki, "ann"))
    (pki / certs.REVOKED).write_bytes(good)
    os.rename(pki / "n1-key.pem", pki / "n1-key.old")
    with pytest.raises(TlsError, match="has no n1-key.pem"):
        live.reload()
    assert live.files.key == (pki / "n1-key.old").read_bytes()


def test_a_node_does_not_start_with_its_own_certificate_revoked(pki):
    certs.revoke(pki, ("n1",))
    with pytest.raises(TlsError, match="n1.pem is revoked"):
        TlsFiles.load(pki, "n1", "127.0.0.1")
