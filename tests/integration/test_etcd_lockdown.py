"""Who may reach etcd, with real processes: the embedded etcd takes no one but root (an
unprivileged local user, made for the test, can neither read nor write it, with or without the
certificates, which it cannot read); a node on a real 3-member etcd cluster running TLS (its
certificates made by the test with lclusterd/certs.py) runs jobs through one member being
killed, and that etcd, like lclusterd, refuses a client without a certificate of its CA."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.embedded import EmbeddedView
from support.etcd_readers import etcd_records, etcdctl, prime_holder
from support.jobs import add, until
from support.processes import Cluster, NodeProcess
from support.users import make_user, remove_user
from support.etcd_pki import ClientTls, Pki


@pytest.fixture
def probe() -> Iterator[str]:
    """An unprivileged local user of its own (a system user: no home, no login, no subordinate
    ids, not in the group lclusterd), removed after the test."""
    name = make_user(f"lcprobe{uuid.uuid4().hex[:8]}", in_group=False)
    try:
        yield name
    finally:
        remove_user(name)
    assert subprocess.run(["id", name], capture_output=True).returncode != 0


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may enter, as /var/lib is: pytest's tmp_path is root's alone, which
    would keep the probe out of everything and prove nothing."""
    directory = Path(tempfile.mkdtemp(prefix="lclusterd-lock-", dir="/var/tmp"))
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def as_user(user: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "ETCDCTL_API": "3"})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def started_in_the_open(open_dir: Path, name: str) -> tuple[Cluster, NodeProcess]:
    """A node with an embedded etcd whose directories anyone may enter (0755), as an operator's
    /var/lib/lclusterd may be: only the node's own modes and etcd's TLS keep others out."""
    c = Cluster(open_dir, None)
    node = c.daemon(name, start=False, directory=open_dir / name)
    for d in (node.dir, node.state_dir):
        d.mkdir(mode=0o755)
        os.chmod(d, 0o755)
    return c, node.start()


def test_the_embedded_etcd_lets_no_one_but_root_read_or_write(open_dir, probe):
    c, node = started_in_the_open(open_dir, "lock-a")
    try:
        job = add(node, "echo secret")
        assert node.lclient("-wait", job).returncode == 0
        view = EmbeddedView(node)
        etcd, tls = view.etcd, view.etcd.client_tls
        assert etcd.endpoint.startswith("https://127.0.0.1:")
        assert etcd_records(view)[job]["state"] == "EXITED"  # root, with the node's client certificate
        canary = node.state_dir / "canary"
        canary.write_text("readable\n")
        os.chmod(canary, 0o644)
        assert as_user(probe, "cat", str(canary)).stdout == "readable\n"  # the probe gets into the state dir

        key, planted = f"{node.prefix}/jobs/{job}", f"{node.prefix}/queue/{uuid.uuid4().hex}"
        record = json.dumps({"id": planted.rsplit("/", 1)[1], "spec": {"command": "id"}, "state": "QUEUED"})
        no_cert = [["--insecure-skip-tls-verify", "get", key], ["--cacert", str(tls.cacert), "get", key],
                   ["--insecure-skip-tls-verify", "put", planted, record]]
        for user in (probe, "root"):  # without a client certificate nobody gets in, root neither
            for args in no_cert:
                result = as_user(user, "etcdctl", "--endpoints", etcd.endpoint, "--command-timeout", "3s", *args)
                assert result.returncode != 0 and "secret" not in result.stdout, (user, args, result)
        plain = as_user(probe, "etcdctl", "--endpoints", etcd.endpoint.replace("https:", "http:"),
                        "--command-timeout", "3s", "get", key)
        assert plain.returncode != 0 and "secret" not in plain.stdout
        with_files = as_user(probe, "etcdctl", "--endpoints", etcd.endpoint, *tls.etcdctl_args(), "get", key)
        assert with_files.returncode != 0 and "permission denied" in with_files.stderr, with_files
        assert planted.rsplit("/", 1)[1] not in etcd_records(view) and planted not in str(etcd_records(view))

        tls_dir = node.state_dir / "etcd-tls"
        assert (mode(tls_dir), mode(etcd.data_dir), mode(node.state_dir / "journal")) == (0o700, 0o700, 0o700)
        assert {p.name: mode(p) for p in tls_dir.glob("*-key.pem")} == {
            "ca-key.pem": 0o600, "etcd-key.pem": 0o600, "lclusterd-key.pem": 0o600}
        for path in (tls.key, tls.cert, tls.cacert, tls_dir / "ca-key.pem", tls_dir / "etcd-key.pem",
                     node.state_dir / "etcd.log"):
            assert as_user(probe, "cat", str(path)).returncode != 0, path
        for directory in (tls_dir, etcd.data_dir, node.state_dir / "journal"):
            assert as_user(probe, "ls", str(directory)).returncode != 0, directory
    finally:
        try:
            c.close()
        finally:
            EmbeddedView(node).etcd.kill_leftover()


def test_the_embedded_etcds_peer_port_takes_only_etcd_itself(open_dir, probe):
    c, node = started_in_the_open(open_dir, "lock-p")
    try:
        etcd = EmbeddedView(node).etcd
        tls_dir = node.state_dir / "etcd-tls"
        members = f"https://127.0.0.1:{etcd.peer_port}/members"
        # (etcd's peer handler speaks HTTP/1.1: curl's HTTP/2 would fail even where etcd takes the certificate)
        curl = ["curl", "-s", "--http1.1", "--max-time", "5", "--cacert", str(tls_dir / "ca.pem")]
        own = subprocess.run([*curl, "--cert", str(tls_dir / "etcd.pem"), "--key", str(tls_dir / "etcd-key.pem"), members],
                             capture_output=True, text=True)
        assert own.returncode == 0 and '"name":"lclusterd"' in own.stdout, own  # etcd's own certificate: yes
        client = subprocess.run([*curl, "--cert", str(tls_dir / "lclusterd.pem"), "--key", str(tls_dir / "lclusterd-key.pem"),
                                 members], capture_output=True, text=True)
        assert client.returncode != 0 and '"name"' not in client.stdout  # the daemon's client certificate is no peer's
        assert as_user(probe, "curl", "-sk", "--http1.1", "--max-time", "5", members).returncode != 0
        assert subprocess.run(["curl", "-sk", "--http1.1", "--max-time", "5", members], capture_output=True).returncode != 0
    finally:
        try:
            c.close()
        finally:
            EmbeddedView(node).etcd.kill_leftover()


def test_a_node_on_a_three_member_tls_etcd_runs_jobs_through_a_member_kill(cluster3_tls):
    a, b = cluster3_tls.daemon("lock-a"), cluster3_tls.daemon("lock-b")
    until(lambda: prime_holder(cluster3_tls) in ("lock-a", "lock-b"), "a prime")
    victim = cluster3_tls.etcd.leader()  # the worst member to lose: the others must elect a new leader
    ids = []
    for i in range(24):
        if i == 8:
            victim.kill_hard()
        ids.append(add(a if i % 2 else b, f"sleep 0.{i % 4}; echo job {i}"))
    for n, job in enumerate(ids):
        assert (b if n % 2 else a).lclient("-wait", job, timeout=120).returncode == 0, job
    assert a.lclient("-logs", ids[5]).stdout == "job 5\n"
    records = etcd_records(cluster3_tls)  # etcdctl with the client certificate, on the two members left
    assert [(records[j]["state"], records[j]["exit_code"], records[j]["attempt"]) for j in ids] == [("EXITED", 0, 1)] * 24
    assert all(d.process.poll() is None for d in (a, b))
    assert "etcd at https://127.0.0.1:" in a.log()


def test_a_tls_etcd_refuses_clients_without_a_certificate_of_its_ca(cluster3_tls, etcd_pki, tmp_path):
    etcd = cluster3_tls.etcd
    stranger = Pki.make(tmp_path / "stranger", [], clients=("lclusterd",)).client()
    assert etcdctl(etcd.endpoint, "put", "/lock-probe", "kept", tls=etcd.client_tls).returncode == 0  # the control
    refused = {"no certificate": ClientTls(etcd_pki.ca),
               "another CA's": ClientTls(etcd_pki.ca, stranger.cert, stranger.key)}
    for what, tls in refused.items():
        result = etcdctl(etcd.endpoint, "get", "/lock-probe", tls=tls)
        assert result.returncode != 0 and "kept" not in result.stdout, (what, result)
        node = NodeProcess(tmp_path / what.replace(" ", "-"), etcd.endpoint, cluster3_tls.prefix, "lock-x",
                           [*tls.lclusterd_args(), "--etcd-wait", "2"])
        result = subprocess.run(node.argv(), capture_output=True, text=True, timeout=120)
        errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
        assert result.returncode == 3 and len(errors) == 1, (what, result.stderr)
        assert errors[0].startswith(f"lclusterd: ERROR etcd at {etcd.endpoint} is unavailable ("), errors


def test_the_etcd_tls_options_are_checked_before_anything_starts(etcd_pki, tmp_path):
    paths = {"ca": etcd_pki.ca, "cert": etcd_pki.client().cert, "key": etcd_pki.client().key,
             "m0-key": etcd_pki.member("m0")[1]}
    options = {"ca": "--etcd-cacert", "cert": "--etcd-cert", "key": "--etcd-key", "m0-key": "--etcd-key"}
    cases = [
        ("https", (), "--etcd https://... needs --etcd-cacert (the CA that signed etcd's certificate), and --etcd-cert "
                      "and --etcd-key when etcd asks clients for a certificate"),
        ("https", ("ca", "cert"), "--etcd-cert and --etcd-key go together: a client certificate and its key"),
        ("http", ("ca", "cert", "key"), "--etcd-cacert is given but --etcd lists plain http:// endpoints: use https://"),
        ("https", ("ca", "cert", "m0-key"), f"--etcd-key {paths['m0-key']} is not the key of --etcd-cert {paths['cert']}"),
    ]
    for n, (scheme, files, line) in enumerate(cases):
        args = [arg for f in files for arg in (options[f], str(paths[f]))]
        node = NodeProcess(tmp_path / f"lock-opts{n}", f"{scheme}://127.0.0.1:1", "/lock-opts", "lock-opts", args)
        result = subprocess.run(node.argv(), capture_output=True, text=True, timeout=120)
        errors = [e for e in result.stderr.splitlines() if " ERROR " in e]
        assert result.returncode == 3 and errors == [f"lclusterd: ERROR {line}"], (files, result.stderr)
        assert not (node.state_dir / "runtime").exists()  # refused before the runtime started
