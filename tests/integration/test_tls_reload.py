"""Revoking and rotating certificates on running nodes (docs/identities.md): `lclusterd certs
revoke` writes the CA's list, a node reads its --tls-dir again on SIGHUP, and from then on a
revoked certificate is refused at every call and its web tokens end, a new node certificate is
what new connections see and what the node presents to its peers; files that do not load
leave those in use, and a node without --tls-dir takes SIGHUP without stopping."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest
from cryptography import x509

from support.jobs import until
from support.processes import LCLUSTERD, Cluster, free_port, run_lclient
from support.tls import make_pki
from support.web import http

REFUSED = 4


@pytest.fixture(scope="module")
def place() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="lclusterd-rv-", dir="/var/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def pki(place: Path) -> Path:
    return make_pki(place / "pki", nodes={"rv-1": ["127.0.0.1"], "rv-2": ["127.0.0.1"]},
                    users={"ann": False, "bob": False, "dan": False})


@pytest.fixture(scope="module")
def nodes(module_etcd, place: Path, pki: Path) -> dict:
    cluster = Cluster(place, module_etcd)
    tls = ["--tls-dir", str(pki), "--namespace", "127.0.0.1"]
    found = {"rv-1": cluster.daemon("rv-1", extra=[*tls, "--web-listen", f"127.0.0.1:{free_port()}"]),
             "rv-2": cluster.daemon("rv-2", extra=tls), "rv-plain": cluster.daemon("rv-plain")}
    yield found
    cluster.close()


def as_holder(node, name: str, *args: str):
    return run_lclient(*args, "-tls-dir", str(node.tls_dir), "-user", name, server=node.server)


def certs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LCLUSTERD, "certs", *args], capture_output=True, text=True, timeout=60)


def sighup(node, done: str) -> None:
    """Send SIGHUP and wait for the node to say it acted on it (one more line saying `done`)."""
    before = node.log().count(done)
    node.process.send_signal(signal.SIGHUP)
    until(lambda: node.log().count(done) > before, f"{node.name} to log {done!r} after SIGHUP")
    assert node.process.poll() is None, node.log()[-2000:]


def served_serial(node, pki: Path) -> int:
    """The serial of the certificate a new TLS connection to the node is shown."""
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(pki / "bob.pem", pki / "bob-key.pem")
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def test_a_revoked_certificate_is_refused_once_the_node_reads_the_list(nodes, pki: Path):
    node = nodes["rv-1"]
    job = as_holder(node, "ann", "-add", "echo ann", "-wait")
    assert job.returncode == 0, job.stderr
    token = as_holder(node, "ann", "-web", "-token").stdout.strip()
    assert http("GET", f"http://{node.extra[node.extra.index('--web-listen') + 1]}/api/jobs", token=token).status == 200
    revoked = certs("revoke", str(pki), "ann")
    assert revoked.returncode == 0 and "revoked user ann (serial 0x" in revoked.stdout, revoked.stderr
    assert as_holder(node, "ann", "-list").returncode == 0  # the node reads the list when told to
    sighup(node, "SIGHUP: reloaded --tls-dir")
    assert ", 1 revoked" in node.log()
    refused = as_holder(node, "ann", "-check", job.stdout.strip())
    assert refused.returncode == REFUSED and refused.stderr.count("\n") == 1, refused.stderr
    assert "user ann's certificate" in refused.stderr and "is revoked" in refused.stderr, refused.stderr
    answer = http("GET", f"http://{node.extra[node.extra.index('--web-listen') + 1]}/api/jobs", token=token)
    assert answer.status == 401 and b"revoked" in answer.body, answer.body
    assert as_holder(node, "bob", "-list").returncode == 0  # others are unaffected
    sighup(nodes["rv-2"], "SIGHUP: reloaded --tls-dir")
    assert as_holder(nodes["rv-2"], "ann", "-list").returncode == REFUSED


def test_a_new_node_certificate_is_served_and_presented_to_peers(nodes, pki: Path, place: Path):
    one, two = nodes["rv-1"], nodes["rv-2"]
    job = as_holder(one, "dan", "-add", "echo ran on rv-2", "-node", "rv-2", "-wait")
    assert job.returncode == 0, job.stderr
    job = job.stdout.strip()
    assert as_holder(one, "dan", "-logs", job).stdout == "ran on rv-2\n"  # rv-1 -> rv-2 with rv-1's certificate
    old = place / "rv-1-old.pem"
    shutil.copy(pki / "rv-1.pem", old)
    old_serial = served_serial(one, pki)
    assert old_serial == x509.load_pem_x509_certificate(old.read_bytes()).serial_number
    assert certs("node", str(pki), "rv-1", "--host", "127.0.0.1", "--force").returncode == 0
    assert served_serial(one, pki) == old_serial  # until the node is told
    sighup(one, "SIGHUP: reloaded --tls-dir")
    assert served_serial(one, pki) != old_serial
    # rv-2 now refuses rv-1's old certificate: the proxied read works only if rv-1 presents its new one
    assert certs("revoke", str(pki), "--cert", str(old)).returncode == 0
    sighup(two, "SIGHUP: reloaded --tls-dir")
    sighup(one, "SIGHUP: reloaded --tls-dir")
    assert as_holder(one, "dan", "-logs", job).stdout == "ran on rv-2\n"


def test_files_that_do_not_load_leave_those_in_use(nodes, pki: Path, place: Path):
    node = nodes["rv-1"]
    crl = (pki / "revoked.pem").read_bytes() if (pki / "revoked.pem").exists() else None
    other = make_pki(place / "other-ca", nodes={}, users={"x": False})
    assert certs("revoke", str(other), "x").returncode == 0
    shutil.copy(other / "revoked.pem", pki / "revoked.pem")  # a list the cluster's CA did not sign
    try:
        sighup(node, "SIGHUP: kept the certificates in use")
        assert "revoked.pem was not signed by the cluster CA" in node.log()
        assert as_holder(node, "bob", "-list").returncode == 0
        if crl is not None:  # and what was revoked stays revoked
            assert as_holder(node, "ann", "-list").returncode == REFUSED
    finally:
        if crl is not None:
            (pki / "revoked.pem").write_bytes(crl)
        else:
            os.unlink(pki / "revoked.pem")


def test_a_node_without_tls_takes_sighup_and_goes_on(nodes):
    node = nodes["rv-plain"]
    sighup(node, "SIGHUP: nothing to reload (no --tls-dir)")
    assert node.lclient("-add", "true", "-wait").returncode == 0
