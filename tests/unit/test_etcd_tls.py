"""TLS to etcd without etcd: the certificate roles etcd needs (and the API roles unchanged), the
embedded etcd's private CA and certificates (made once, reused, renewed, in a 0700 directory),
the checks of an external etcd's TLS options, and the store's endpoints and credentials."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

import lclusterd.__main__ as main
from lclusterd import certs, etcd_tls
from lclusterd.cluster.store import Store, StoreTls, parse_endpoints
from lclusterd.etcd_tls import EtcdTlsError, check_external, ensure_embedded

SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def usages(cert: x509.Certificate) -> set:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def alt_names(cert: x509.Certificate) -> set[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n.value) for n in names}


# -- certs.py: the roles --------------------------------------------------------------------------
def test_server_role_serves_and_dials_peers_at_its_addresses(tmp_path):
    certs.init_ca(tmp_path)
    cert = load(certs.issue(tmp_path, "m0", certs.SERVER, ("127.0.0.1", "localhost", "::1"))[0])
    assert usages(cert) == {SERVER, CLIENT}
    ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
    assert set(ips) == {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    assert alt_names(cert) >= {"m0", "localhost"}


def test_client_role_only_calls(tmp_path):
    certs.init_ca(tmp_path)
    cert = load(certs.issue(tmp_path, "lclusterd", certs.CLIENT)[0])
    assert usages(cert) == {CLIENT} and alt_names(cert) == set()


def test_api_roles_are_as_before(tmp_path):
    certs.init_ca(tmp_path)
    node = load(certs.issue(tmp_path, "n1", certs.NODE, ("10.0.0.1",))[0])
    user = load(certs.issue(tmp_path, "alice", certs.USER)[0])
    admin = load(certs.issue(tmp_path, "root", certs.ADMIN)[0])
    assert usages(node) == {SERVER, CLIENT} and alt_names(node) == {"n1", "10.0.0.1"}
    assert usages(user) == usages(admin) == {CLIENT} and alt_names(user) == alt_names(admin) == set()
    assert certs.ROLES == ("node", "user", "admin")


@pytest.mark.parametrize("role", [certs.SERVER, certs.CLIENT])
def test_an_etcd_certificate_names_no_api_holder(tmp_path, role):
    certs.init_ca(tmp_path)
    with pytest.raises(certs.CertError, match="names no lclusterd holder"):
        certs.holder_of(certs.issue(tmp_path, "x", role)[0].read_bytes())


def test_unknown_role_is_refused(tmp_path):
    certs.init_ca(tmp_path)
    with pytest.raises(certs.CertError, match="unknown role 'peer'"):
        certs.issue(tmp_path, "x", "peer")


# -- the embedded etcd's files ---------------------------------------------------------------------
def test_embedded_files_are_made_once_in_a_private_directory(tmp_path):
    tls = ensure_embedded(tmp_path)
    assert tls.directory == tmp_path / "etcd-tls"
    assert stat.S_IMODE(tls.directory.stat().st_mode) == 0o700
    for key in ("ca-key.pem", "etcd-key.pem", "lclusterd-key.pem"):
        assert stat.S_IMODE((tls.directory / key).stat().st_mode) == 0o600
    server, client = load(tls.server_cert), load(tls.directory / "lclusterd.pem")
    server.verify_directly_issued_by(load(tls.ca))
    client.verify_directly_issued_by(load(tls.ca))
    assert usages(server) == {SERVER, CLIENT} and {"127.0.0.1", "localhost"} <= alt_names(server)
    assert usages(client) == {CLIENT}
    before = {p.name: p.read_bytes() for p in tls.directory.iterdir()}
    ensure_embedded(tmp_path)  # a restart: the same files
    assert {p.name: p.read_bytes() for p in tls.directory.iterdir()} == before


def test_a_leaf_about_to_expire_is_renewed_with_the_same_ca(tmp_path):
    tls = ensure_embedded(tmp_path)
    ca = tls.ca.read_bytes()
    certs.issue(tls.directory, "etcd", certs.SERVER, ("127.0.0.1",), days=10, force=True)
    ensure_embedded(tmp_path)
    assert tls.ca.read_bytes() == ca
    left = load(tls.server_cert).not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    assert left > datetime.timedelta(days=3000)


def test_a_leaf_of_another_ca_or_without_its_key_is_made_again(tmp_path):
    tls = ensure_embedded(tmp_path)
    other = tmp_path / "other"
    certs.init_ca(other)
    certs.issue(other, "lclusterd", certs.CLIENT)
    (tls.directory / "lclusterd.pem").write_bytes((other / "lclusterd.pem").read_bytes())
    (tls.directory / "etcd-key.pem").unlink()
    ensure_embedded(tmp_path)
    load(tls.directory / "lclusterd.pem").verify_directly_issued_by(load(tls.ca))
    assert (tls.directory / "etcd-key.pem").exists()


def test_a_lost_ca_key_means_a_new_ca_and_new_leaves(tmp_path):
    tls = ensure_embedded(tmp_path)
    old_ca = tls.ca.read_bytes()
    (tls.directory / "ca-key.pem").unlink()
    ensure_embedded(tmp_path)
    assert tls.ca.read_bytes() != old_ca
    load(tls.server_cert).verify_directly_issued_by(load(tls.ca))


def test_an_open_directory_is_closed_and_a_symlink_refused(tmp_path):
    (tmp_path / "etcd-tls").mkdir(mode=0o755)
    os.chmod(tmp_path / "etcd-tls", 0o755)
    ensure_embedded(tmp_path)
    assert stat.S_IMODE((tmp_path / "etcd-tls").stat().st_mode) == 0o700
    elsewhere = tmp_path / "b"
    elsewhere.mkdir()
    (elsewhere / "target").mkdir()
    (elsewhere / "etcd-tls").symlink_to(elsewhere / "target")
    with pytest.raises(EtcdTlsError, match="must be a directory owned by uid"):
        ensure_embedded(elsewhere)
    assert list((elsewhere / "target").iterdir()) == []


# -- an external etcd ------------------------------------------------------------------------------
@pytest.fixture
def pki(tmp_path):
    certs.init_ca(tmp_path)
    certs.issue(tmp_path, "lclusterd", certs.CLIENT)
    certs.issue(tmp_path, "other", certs.CLIENT)
    return tmp_path


def test_plain_http_needs_nothing(pki):
    assert check_external(["http://a:2379", "b:2379"], "", "", "") is None
    assert check_external([], "", "", "") is None


def test_https_with_a_ca_and_a_client_certificate(pki):
    files = check_external(["https://a:2379", "b:2379"], str(pki / "ca.pem"), str(pki / "lclusterd.pem"),
                           str(pki / "lclusterd-key.pem"))
    assert files == etcd_tls.ClientFiles(str(pki / "ca.pem"), str(pki / "lclusterd.pem"), str(pki / "lclusterd-key.pem"))
    assert check_external(["https://a:2379"], str(pki / "ca.pem"), "", "") == etcd_tls.ClientFiles(str(pki / "ca.pem"))


@pytest.mark.parametrize("endpoints, given, message", [
    ([], ("ca.pem", "", ""), r"--etcd-cacert is for an external etcd \(--etcd\); the embedded etcd makes its own"),
    (["https://a:1"], ("", "", ""), "--etcd https://... needs --etcd-cacert"),
    (["http://a:1"], ("ca.pem", "", ""), "--etcd-cacert is given but --etcd lists plain http:// endpoints"),
    (["https://a:1"], ("", "lclusterd.pem", "lclusterd-key.pem"), "--etcd-cert and --etcd-key need --etcd-cacert"),
    (["https://a:1"], ("ca.pem", "lclusterd.pem", ""), "--etcd-cert and --etcd-key go together"),
    (["https://a:1"], ("missing.pem", "", ""), r"--etcd-cacert .*missing.pem: cannot read it \(No such file or directory\)"),
    (["https://a:1"], (".", "", ""), r"--etcd-cacert .*: cannot read it \(Is a directory\)"),
    (["https://a:1"], ("lclusterd-key.pem", "", ""), "--etcd-cacert .*lclusterd-key.pem: not a PEM certificate"),
    (["https://a:1"], ("ca.pem", "lclusterd.pem", "lclusterd.pem"), "--etcd-key .*: not a PEM private key"),
    (["https://a:1"], ("ca.pem", "lclusterd.pem", "other-key.pem"), "--etcd-key .*other-key.pem is not the key of"),
])
def test_external_options_that_do_not_go_together(pki, endpoints, given, message):
    paths = [str(pki / name) if name else "" for name in given]
    with pytest.raises(EtcdTlsError, match=message):
        check_external(endpoints, *paths)


def test_tls_options_from_the_command_line_environment_and_file(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr("lclusterd.daemon.run", lambda config: seen.setdefault("config", config) and 0)
    f = tmp_path / "c.toml"
    f.write_text('etcd = ["https://a:1"]\netcd-key = "/k.pem"\n')
    env = {"LCLUSTERD_ETCD_CACERT": "/ca.pem"}
    result = CliRunner().invoke(main.cli, ["--config", str(f), "--etcd-cert", "/c.pem"], env=env)
    assert result.exit_code == 0, result.output
    c = seen["config"]
    assert (c.etcd, c.etcd_cacert, c.etcd_cert, c.etcd_key) == (["https://a:1"], "/ca.pem", "/c.pem", "/k.pem")
    assert "--etcd-cacert" in CliRunner().invoke(main.cli, ["--help"]).output


# -- the store ---------------------------------------------------------------------------------------
def test_endpoints_take_the_scheme_tls_says():
    assert parse_endpoints("https://a:1,b:2", secure=True) == [("a", 1), ("b", 2)]
    assert parse_endpoints("http://a:1,b", secure=False) == [("a", 1), ("b", 2379)]
    with pytest.raises(ValueError, match=r"expected https://HOST:PORT \(TLS is on\)"):
        parse_endpoints("http://a:1", secure=True)
    with pytest.raises(ValueError, match=r"expected http://HOST:PORT \(https needs the etcd TLS options\)"):
        parse_endpoints("https://a:1")


def test_a_tls_store_describes_its_endpoints_as_https(pki):
    tls = StoreTls.read(str(pki / "ca.pem"), str(pki / "lclusterd.pem"), str(pki / "lclusterd-key.pem"))
    assert tls.ca.startswith(b"-----BEGIN CERTIFICATE") and tls.key.startswith(b"-----BEGIN PRIVATE KEY")
    store = Store("https://127.0.0.1:1,127.0.0.2:2", tls=tls)  # nothing is dialled before a request
    try:
        assert store.describe() == "https://127.0.0.1:1,https://127.0.0.2:2"
    finally:
        store.close()
    with pytest.raises(ValueError, match="cannot read .*nothing.pem: No such file"):
        StoreTls.read(str(pki / "nothing.pem"))


def test_lclusterd_certs_makes_etcds_member_and_client_certificates(tmp_path):
    from lclusterd.certs_cli import main as certs_main

    assert certs_main(["init", str(tmp_path)]) == 0
    assert certs_main(["server", str(tmp_path), "m0", "--host", "10.0.0.5"]) == 0
    assert certs_main(["client", str(tmp_path), "lclusterd"]) == 0
    member, client = load(tmp_path / "m0.pem"), load(tmp_path / "lclusterd.pem")
    assert usages(member) == {SERVER, CLIENT} and alt_names(member) == {"m0", "10.0.0.5"}
    assert usages(client) == {CLIENT}
    assert check_external(["https://10.0.0.5:2379"], str(tmp_path / "ca.pem"), str(tmp_path / "lclusterd.pem"),
                          str(tmp_path / "lclusterd-key.pem")) is not None
