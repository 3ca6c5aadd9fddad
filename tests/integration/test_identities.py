"""Who may do what (docs/identities.md), with real local users, real certificates and real
nodes: over a node's Unix socket the kernel says who calls (SO_PEERCRED), over TCP the client's
certificate does; users see and kill only their own jobs, admins everything, and only admins
drain a node."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import grpc
import pytest

from lclusterd.api.slots import MAX_BLOCKING_PER_USER
from lclusterd.rpc import lclusterd_pb2 as pb
from lclusterd.rpc import lclusterd_pb2_grpc as pb_grpc
from support.jobs import until
from support.processes import Cluster, run_lclient
from support.tls import channel_credentials, expired_user, make_pki
from support.users import as_user, make_user, remove_user

ANN, BOB, EVE = "lcu-ann", "lcu-bob", "lcu-eve"  # ann and bob in the group lclusterd, eve not
REFUSED = 4


@pytest.fixture(scope="module")
def users() -> dict[str, str]:
    made = {ANN: make_user(ANN, True), BOB: make_user(BOB, True), EVE: make_user(EVE, False)}
    yield made
    for name in made:
        remove_user(name)


@pytest.fixture(scope="module")
def place() -> Path:
    """A directory other users can traverse (pytest's tmp_path is root's only), for the nodes'
    state dirs and so their sockets."""
    directory = Path(tempfile.mkdtemp(prefix="lclusterd-ids-", dir="/var/tmp"))
    os.chmod(directory, 0o711)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def pki(place: Path) -> Path:
    directory = make_pki(place / "pki", nodes={"ids-t1": ["127.0.0.1"], "ids-t2": ["127.0.0.1"]},
                         users={ANN: False, BOB: False, "boss": True})
    expired_user(directory, "late")
    make_pki(place / "other-ca", nodes={}, users={ANN: False})
    return directory


@pytest.fixture(scope="module")
def nodes(module_etcd, place: Path, pki: Path, users) -> dict:
    """Three nodes on one queue: `plain` (its socket, and --insecure TCP for root's checks) and
    two with mutual TLS."""
    cluster = Cluster(place, module_etcd)
    found = {}
    tls_node = ["--tls-dir", str(pki), "--namespace", "127.0.0.1"]  # the address their certificates name
    for name, extra in (("ids-plain", []), ("ids-t1", tls_node), ("ids-t2", tls_node)):
        directory = place / name
        directory.mkdir(mode=0o711)
        found[name] = cluster.daemon(name, extra=extra, directory=directory)
    yield found
    cluster.close()


def one_line(result, status: int, *words: str) -> None:
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("lclient: "), result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def added(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def tls(pki: Path, user: str) -> list[str]:
    return ["-tls-dir", str(pki), "-user", user]


def test_the_socket_refuses_users_outside_the_group(nodes):
    node = nodes["ids-plain"]
    before = run_lclient("-list", server=node.socket).stdout
    one_line(as_user(EVE, "-list", server=node.socket), REFUSED, "only root and members of the group lclusterd")
    # the socket's mode is the first wall; the gate's own check of the caller's uid the second
    path = node.socket.removeprefix("unix:")
    os.chmod(path, 0o666)
    try:
        one_line(as_user(EVE, "-add", "id", server=node.socket), REFUSED, "only root and members")
    finally:
        os.chmod(path, 0o660)
    assert f"refused a connection from uid {pwd.getpwnam(EVE).pw_uid}" in node.log()
    assert run_lclient("-list", server=node.socket).stdout == before  # nothing was added
    # and over TCP, where a node serves mutual TLS, a local user is no one without a certificate
    one_line(as_user(EVE, "-list", server=nodes["ids-t1"].server), REFUSED, "serves mutual TLS")


def test_users_see_and_kill_only_their_own_jobs(nodes):
    node = nodes["ids-plain"]
    mine = added(as_user(ANN, "-add", "echo ann here; sleep 300", server=node.socket))
    theirs = added(as_user(BOB, "-add", "echo bob here", "-wait", server=node.socket))
    ann = json.loads(as_user(ANN, "-check", mine, "-json", server=node.socket).stdout)
    assert ann["owner"] == ANN
    for action in (["-check", mine], ["-kill", mine], ["-logs", mine], ["-wait", mine, "-timeout", "1s"]):
        one_line(as_user(BOB, *action, server=node.socket), REFUSED, f"user {BOB} may not", f"{ANN}'s job")
    listed = {json.loads(line)["id"] for line in as_user(BOB, "-list", "-json", server=node.socket).stdout.splitlines()}
    assert theirs in listed and mine not in listed
    assert as_user(BOB, "-logs", theirs, server=node.socket).stdout == "bob here\n"
    one_line(as_user(ANN, "-drain", "ids-plain", server=node.socket), REFUSED, "only admins")
    pool = added(as_user(BOB, "-add", "true", "-all-nodes", server=node.socket))
    one_line(as_user(ANN, "-wait", pool, server=node.socket), REFUSED, f"{BOB}'s job")
    # root over the socket is an admin: sees both, kills ann's
    everyone = {json.loads(line)["id"] for line in run_lclient("-list", "-json", server=node.socket).stdout.splitlines()}
    assert {mine, theirs} <= everyone  # (-list shows a pool as its member jobs)
    assert run_lclient("-kill", mine, server=node.socket).returncode == 0
    until(lambda: json.loads(as_user(ANN, "-check", mine, "-json", server=node.socket).stdout)["state"] == "KILLED",
          "ann's job to be killed by root")


def test_a_node_refuses_to_start_with_a_certificate_not_its_own(module_etcd, place: Path, pki: Path):
    cluster = Cluster(place, module_etcd)
    for name, extra, words in (
            ("ids-t1", ["--namespace", "localhost"], "does not name localhost, the address it advertises"),
            ("ids-x", ["--namespace", "127.0.0.1"], "has no ids-x.pem")):
        node = cluster.daemon(name, extra=["--tls-dir", str(pki), *extra], start=False, directory=place / "bad")
        result = subprocess.run(node.argv(), capture_output=True, text=True, timeout=60)
        assert result.returncode == 3 and words in result.stderr, result.stderr


def test_plain_tcp_is_served_on_loopback_only(module_etcd, place: Path):
    """--insecure makes every caller an admin: a node refuses to serve it to the network."""
    node = Cluster(place, module_etcd).daemon("ids-open", extra=["--namespace", "0.0.0.0"], start=False,
                                              directory=place / "open")
    result = subprocess.run(node.argv(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert "--insecure serves plain TCP, where every caller is an admin, on a loopback address only" in result.stderr


def test_only_a_jobs_owner_and_admins_may_run_a_command_in_it(nodes):
    node = nodes["ids-plain"]
    job = added(as_user(ANN, "-add", "sleep 300", server=node.socket))
    until(lambda: json.loads(as_user(ANN, "-check", job, "-json", server=node.socket).stdout)["state"] == "RUNNING",
          "ann's job to run")
    one_line(as_user(BOB, "-exec", job, "id", server=node.socket), REFUSED, f"user {BOB} may not exec in", f"{ANN}'s job")
    assert as_user(ANN, "-exec", job, "echo mine", server=node.socket).stdout == "mine\n"
    assert run_lclient("-exec", job, "echo root", server=node.socket).stdout == "root\n"  # an admin
    assert run_lclient("-kill", job, server=node.socket).returncode == 0


def test_certificates_name_the_caller(nodes, pki: Path, place: Path):
    t1 = nodes["ids-t1"]
    job = added(run_lclient("-add", "echo over tls", "-wait", *tls(pki, ANN), server=t1.server))
    assert json.loads(run_lclient("-check", job, "-json", *tls(pki, ANN), server=t1.server).stdout)["owner"] == ANN
    # the same name over a node's socket is the same user
    assert as_user(ANN, "-logs", job, server=nodes["ids-plain"].socket).stdout == "over tls\n"
    one_line(run_lclient("-kill", job, *tls(pki, BOB), server=t1.server), REFUSED, f"user {BOB} may not kill")
    one_line(run_lclient("-drain", "ids-t2", *tls(pki, BOB), server=t1.server), REFUSED, "only admins")
    assert run_lclient("-drain", "ids-t2", *tls(pki, "boss"), server=t1.server).returncode == 0
    assert run_lclient("-undrain", "ids-t2", *tls(pki, "boss"), server=t1.server).returncode == 0
    assert job in run_lclient("-list", *tls(pki, "boss"), server=t1.server).stdout
    # a node's certificate is for the nodes' own calls, not for adding jobs
    one_line(run_lclient("-add", "true", *tls(pki, "ids-t2"), server=t1.server), REFUSED, "node ids-t2 may not add")


@pytest.mark.parametrize("how", ["no certificate", "another CA", "expired"])
def test_tls_refuses_callers_without_a_good_certificate(nodes, pki: Path, place: Path, how: str):
    args = {"no certificate": [], "another CA": tls(place / "other-ca", ANN), "expired": tls(pki, "late")}[how]
    server = nodes["ids-t1"].server
    result = run_lclient("-add", "echo nope", *args, server=server)
    one_line(result, REFUSED, "refused")
    if how == "no certificate":
        assert "serves mutual TLS; give -tls-dir" in result.stderr


def test_logs_are_proxied_between_nodes_over_mutual_tls(nodes, pki: Path):
    t1 = nodes["ids-t1"]
    job = added(run_lclient("-add", "echo ran on t2", "-node", "ids-t2", "-wait", *tls(pki, ANN), server=t1.server))
    record = json.loads(run_lclient("-check", job, "-json", *tls(pki, ANN), server=t1.server).stdout)
    assert record["node"] == "ids-t2"
    assert run_lclient("-logs", job, *tls(pki, ANN), server=t1.server).stdout == "ran on t2\n"
    one_line(run_lclient("-logs", job, *tls(pki, BOB), server=t1.server), REFUSED, f"{ANN}'s job")


def test_one_user_cannot_take_every_waiting_thread_of_a_node(nodes, pki: Path):
    """A node lends at most 64 threads to one caller's blocking calls (api/slots.py): the 65th
    Wait of ann is refused with one line, while bob still waits."""
    t1 = nodes["ids-t1"]
    job = added(run_lclient("-add", "sleep 300", "-node", "ids-t1", *tls(pki, ANN), server=t1.server))
    bobs = added(run_lclient("-add", "sleep 300", "-node", "ids-t1", *tls(pki, BOB), server=t1.server))
    channel = grpc.secure_channel(t1.server, channel_credentials(pki, ANN))
    stub = pb_grpc.JobsStub(channel)
    waits = [stub.Wait.future(pb.WaitRequest(id=job, timeout_seconds=120)) for _ in range(MAX_BLOCKING_PER_USER)]
    try:
        def refused() -> str | None:
            result = run_lclient("-wait", job, "-timeout", "60s", *tls(pki, ANN), server=t1.server)
            return result.stderr if result.returncode == 3 else None
        error = until(refused, "ann's waits to fill her share of the node's threads", timeout=60)
        assert error.count("\n") == 1 and f"user {ANN} already has 64 waits and follows open" in error, error
        timed_out = run_lclient("-wait", bobs, "-timeout", "1s", *tls(pki, BOB), server=t1.server)
        assert timed_out.returncode == 124, timed_out.stderr  # bob waited, and his timeout ended it
    finally:
        for wait in waits:
            wait.cancel()
        channel.close()
    until(lambda: run_lclient("-wait", job, "-timeout", "1s", *tls(pki, ANN), server=t1.server).returncode == 124,
          "ann's slots to be given back")
    for each in (job, bobs):
        assert run_lclient("-kill", each, server=nodes["ids-plain"].socket).returncode == 0


def test_a_user_may_have_only_so_many_jobs_stored(module_etcd, place: Path, users):
    """--max-jobs-per-user: one user cannot fill etcd (every node needs it to report its jobs);
    an add that would pass the limit is refused with one line and adds nothing; an admin is not
    held to it."""
    cluster = Cluster(place, module_etcd)
    directory = place / "ids-quota"
    directory.mkdir(mode=0o711)
    node = cluster.daemon("ids-quota", extra=["--max-jobs-per-user", "5"], directory=directory)
    try:
        # an add the node refuses anyway (-mem beyond any node) adds nothing; exit 3 once it is
        # over the quota, as counted by the node's watch (which may trail the adds a little)
        dry = lambda lines: as_user(ANN, "-add", "-", "-mem", "1T", server=node.socket, stdin="true\n" * lines)  # noqa: E731
        for _ in range(3):
            added(as_user(ANN, "-add", "true", server=node.socket))
        until(lambda: dry(3).returncode == 3, "the node's watch to count ann's 3 jobs")
        for action in (["-add", "true", "-array", "3"], ["-add", "-"]):
            refused = as_user(ANN, *action, server=node.socket, stdin="true\ntrue\ntrue\n")
            one_line(refused, 3, f"user {ANN} has 3 jobs in the cluster", "at most 5 (--max-jobs-per-user)",
                     "this add of 3")
        assert len(as_user(ANN, "-add", "-", server=node.socket, stdin="true\ntrue\n").stdout.split()) == 2
        until(lambda: dry(1).returncode == 3, "the node's watch to count ann's 5 jobs")
        one_line(as_user(ANN, "-add", "true", server=node.socket), 3, "has 5 jobs in the cluster")
        added(as_user(BOB, "-add", "true", server=node.socket))  # others are not held by ann's
        added(run_lclient("-add", "true", "-array", "10", server=node.socket))  # nor root, an admin
        mine = [json.loads(line) for line in as_user(ANN, "-list", "-json", server=node.socket).stdout.splitlines()]
        assert len(mine) == 5
    finally:
        cluster.close()


def test_one_users_queue_does_not_hold_the_cluster_for_others(module_etcd, place: Path, users):
    """--max-running-per-user: past it a user's jobs wait (saying why) and another user's later
    jobs run past them, on a node with room for three (first in, first out, bob's job would
    wait for ann's fourth)."""
    cluster = Cluster(place, module_etcd)
    directory = place / "ids-fair"
    directory.mkdir(mode=0o711)
    node = cluster.daemon("ids-fair", extra=["--max-running-per-user", "2", "--capacity", "3"], directory=directory)
    state = lambda job: json.loads(run_lclient("-check", job, "-json", server=node.socket).stdout)  # noqa: E731
    try:
        anns = [added(as_user(ANN, "-add", "sleep 300", server=node.socket)) for _ in range(4)]
        bobs = added(as_user(BOB, "-add", "sleep 300", server=node.socket))
        until(lambda: state(bobs)["state"] == "RUNNING", "bob's job to run past ann's queue")
        until(lambda: [state(job)["state"] for job in anns] == ["RUNNING", "RUNNING", "QUEUED", "QUEUED"],
              "two of ann's jobs to run and two to wait")
        waiting = state(anns[2])["waiting"]
        assert waiting == f"its owner {ANN} has 2 jobs running (--max-running-per-user)", waiting
        assert run_lclient("-kill", anns[0], server=node.socket).returncode == 0
        until(lambda: state(anns[2])["state"] == "RUNNING", "ann's third job to start once her first ended")
        assert state(anns[3])["state"] == "QUEUED"
    finally:
        cluster.close()
