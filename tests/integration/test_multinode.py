"""Three real daemons on one real etcd, under faults: a worker node killed (-9), the prime
killed during a stream of 300 jobs (failover time printed), a node paused past its lease and
resumed (fenced), drain and undrain, -nodes, logs read through any node, and -all-nodes pools. Every test reads the final state twice: with
lclient and with the official etcdctl (an independent reader of the keys).

The daemons run with --lease-ttl 2 (support.processes.NodeProcess), so a dead node is noticed in seconds.
Nothing here asserts a duration: each wait is for a condition, with a generous deadline.
"""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from prime_stream import stream_with_prime_killed

from lclient import errors
from lclient.client import JobsClient
from lclusterd.rpc import lclusterd_pb2 as pb

from support.etcd_readers import etcd_prefix, etcd_records
from support.jobs import add, check, nodes, pid_alive, ran_on, until


def test_killed_worker_jobs_are_lost_and_retried_only_when_allowed(cluster):
    a = cluster.daemon("a", extra=["--capacity", "1", "--scheduling", "first-fit"])
    b = cluster.daemon("b", extra=["--capacity", "2", "--scheduling", "first-fit"])
    c = cluster.daemon("c", extra=["--capacity", "2", "--scheduling", "first-fit"])
    busy = add(a, "sleep 300")  # first-fit: a (first by name) takes it and is then full
    until(lambda: check(a, busy)["state"] == "RUNNING", "the first job to run")
    retried = add(a, "echo try; sleep 300", "-retries", "1")
    once = add(a, "sleep 300")
    until(lambda: all(check(a, j)["state"] == "RUNNING" for j in (retried, once)), "both jobs to run")
    assert {check(a, j)["node"] for j in (retried, once)} == {"b"}

    b.kill_hard()
    until(lambda: check(a, once)["state"] == "LOST", "the job without retries to be LOST")
    until(lambda: check(a, retried)["state"] == "RUNNING" and check(a, retried)["attempt"] == 2, "the retry to run")

    lost, again = check(c, once), check(c, retried)
    assert lost["error"].startswith("node b was lost") and lost["finished_at"] and lost["attempts"] == []
    assert (again["node"], again["attempt"]) == ("c", 2)
    (first,) = again["attempts"]
    assert (first["attempt"], first["node"], first["state"]) == (1, "b", "LOST")
    assert first["reason"].startswith("node b was lost") and first["started_at"] and first["ended_at"]
    text = c.lclient("-check", retried).stdout
    assert "attempts:" in text and "attempt:  2 of at most 2" in text
    assert c.lclient("-logs", retried).stdout == "try\n"  # attempt 2's output, read through c from c

    in_etcd = etcd_records(cluster)
    assert (in_etcd[once]["state"], in_etcd[retried]["state"], in_etcd[retried]["node"]) == ("LOST", "RUNNING", "c")
    assert not [k for k in etcd_prefix(cluster, "assign") if "/assign/b/" in k]

    b.start()  # same state dir: sweeps what the crash left, runs nothing again
    until(lambda: nodes(a)["b"]["state"] == "ready", "b to be back")
    assert (check(b, once)["state"], check(b, retried)["attempt"]) == ("LOST", 2)
    assert ran_on(cluster.daemons, once) == {"b"} and ran_on(cluster.daemons, retried) == {"b", "c"}


def test_prime_killed_during_a_stream_every_job_ends_once(cluster, capsys):
    line = stream_with_prime_killed(cluster, "one etcd")
    with capsys.disabled():
        print("\n" + line)


def test_paused_node_is_declared_dead_then_fenced(cluster):
    a = cluster.daemon("a")
    b = cluster.daemon("b")
    job = add(a, "echo started; sleep 300", "-node", "b")
    until(lambda: check(a, job)["state"] == "RUNNING", "the pinned job to run on b")
    pid = check(a, job)["host_pid"]
    assert pid_alive(pid)

    b.process.send_signal(signal.SIGSTOP)  # the daemon only: its job runs on
    try:
        until(lambda: check(a, job)["state"] == "LOST", "the paused node's job to be LOST")
        until(lambda: nodes(a)["b"]["state"] == "gone", "b to be listed as gone")
        assert pid_alive(pid)
        gone = a.lclient("-logs", job)
        assert gone.returncode == 3 and "which is gone" in gone.stderr
    finally:
        b.process.send_signal(signal.SIGCONT)

    until(lambda: not pid_alive(pid), "b to kill its fenced copy")
    until(lambda: nodes(a)["b"]["state"] == "ready", "b to register again")
    until(lambda: "fencing job" in b.log(), "b to log the fencing")
    record = check(b, job)
    assert (record["state"], record["node"], record["attempt"]) == ("LOST", "b", 1)
    assert record["error"].startswith("node b was lost")
    assert etcd_records(cluster)[job]["state"] == "LOST"  # b's late result was not written
    assert a.lclient("-logs", job).stdout == "started\n"  # proxied to b, which is back


def test_drain_undrain_pins_and_why_a_job_waits(cluster):
    a = cluster.daemon("a", extra=["--scheduling", "first-fit", "--memory", "1G"])
    b = cluster.daemon("b", extra=["--scheduling", "first-fit", "--memory", "2G"])
    drained = subprocess.run([cluster.daemons[0].argv()[0], "drain", "a", "--server", b.server],
                             capture_output=True, text=True, timeout=60)
    assert drained.returncode == 0, drained.stderr
    assert nodes(b)["a"]["state"] == "draining"
    elsewhere = add(a, "echo elsewhere")
    assert a.lclient("-wait", elsewhere).returncode == 0 and check(a, elsewhere)["node"] == "b"

    pinned = add(b, "echo pinned", "-node", "a")
    until(lambda: check(b, pinned)["waiting"] == "pinned to node a, which is draining", "the pin to be explained")
    assert "waiting:" in b.lclient("-check", pinned).stdout
    # more than any node offers: refused at add (a job waiting for a node that is away is explained instead)
    big = b.lclient("-add", "true", "-mem", "3G")
    assert (big.returncode, big.stderr) == (2, "lclient: -mem 3.0 GiB is more than any node offers its jobs (the most: 2.0 GiB on b)\n")
    nowhere = add(b, "true", "-node", "zz")
    until(lambda: check(b, nowhere)["waiting"] == "pinned to node zz, which is not registered", "the unknown pin")

    undrained = b.lclient("-undrain", "a")
    assert undrained.returncode == 0 and ("prime" in undrained.stdout or "ready" in undrained.stdout)
    assert b.lclient("-wait", pinned).returncode == 0 and check(b, pinned)["node"] == "a"

    table = a.lclient("-nodes").stdout.splitlines()
    assert table[0].split()[:6] == ["NAME", "ADDRESS", "STATE", "CAPACITY", "RUNNING", "MEMORY"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["a"][1:4] == [f"localhost:{a.port}", "prime", "256"] and rows["b"][2] == "ready"
    unknown = a.lclient("-drain", "zz")
    assert (unknown.returncode, unknown.stderr) == (1, "lclient: no node named 'zz' has registered\n")
    bad = a.lclient("-drain", "a/b")
    assert (bad.returncode, bad.stderr) == (2, "lclient: invalid node name 'a/b'\n")
    assert a.lclient("-kill", nowhere).returncode == 0
    assert {k.rsplit("/", 1)[1] for k in etcd_prefix(cluster, "drain")} == set()


def test_old_prime_that_comes_back_assigns_nothing(cluster):
    a = cluster.daemon("a")
    b = cluster.daemon("b")
    until(lambda: nodes(b)["a"]["prime"], "a to be the prime")
    a.process.send_signal(signal.SIGSTOP)
    try:
        until(lambda: nodes(b)["b"]["prime"], "b to take the prime key")
        during = [add(b, f"echo during {i}") for i in range(5)]
    finally:
        a.process.send_signal(signal.SIGCONT)
    until(lambda: "is no longer the prime" in a.log(), "a to find out it is no longer the prime")
    until(lambda: nodes(b)["a"]["state"] == "ready", "a to register again, as a plain node")
    after = [add(a, f"echo after {i}") for i in range(5)]
    for job in during + after:
        assert b.lclient("-wait", job).returncode == 0
    assert nodes(a)["b"]["prime"] and not nodes(a)["a"]["prime"]
    in_etcd = etcd_records(cluster)
    assert all(in_etcd[j]["state"] == "EXITED" and in_etcd[j]["attempt"] == 1 for j in during + after)
    assert all(in_etcd[j]["node"] == "b" for j in during)  # a was away: b (the new prime) ran them
    assert a.log().count("is now the prime") == 1


def test_all_nodes_pool_one_member_per_ready_node_check_wait_kill(cluster):
    a, b, c = cluster.daemon("a"), cluster.daemon("b"), cluster.daemon("c")
    assert b.lclient("-drain", "c").returncode == 0
    pool = add(a, "echo member; hostname", "-all-nodes")
    assert b.lclient("-wait", pool).returncode == 0

    record = check(c, pool)  # any node answers, the draining one too
    assert (record["id"], record["is_pool"], record["state"], record["exit_code"], record["pool"]) == (pool, True, "EXITED", 0, None)
    members = {m["node"]: m for m in record["members"]}
    assert sorted(members) == ["a", "b"]  # the ready nodes: c is draining
    for node, m in members.items():
        assert (m["state"], m["exit_code"], m["pool"], m["pinned_node"], m["attempt"]) == ("EXITED", 0, pool, node, 1)
        assert ran_on(cluster.daemons, m["id"]) == {node}  # each ran on its own node, once
        assert c.lclient("-logs", m["id"]).stdout.startswith("member\n")  # a member's logs, through any node
    text = a.lclient("-check", pool).stdout.splitlines()
    assert text[0].split() == ["id:", pool] and "state:    EXITED (exit code 0)" in text
    rows = text[text.index("members:") + 1:]
    assert rows[0].split() == ["NODE", "JOB", "STATE", "EXIT"]
    assert [r.split() for r in rows[1:]] == [[n, members[n]["id"], "EXITED", "0"] for n in ("a", "b")]
    logs = a.lclient("-logs", pool)
    assert (logs.returncode, logs.stderr) == (1, f"lclient: {pool} is a pool of 2 job(s), one per node; read a member's "
                                                 f"logs (lclient -check {pool} lists them)\n")

    stored = json.loads(etcd_prefix(cluster, "pools")[f"{cluster.prefix}/pools/{pool}"])  # the independent reader
    assert stored["members"] == {n: members[n]["id"] for n in ("a", "b")} and stored["spec"]["command"].startswith("echo member")
    in_etcd = etcd_records(cluster)
    assert {n: (in_etcd[m["id"]]["pool"], in_etcd[m["id"]]["spec"]["node"], in_etcd[m["id"]]["state"]) for n, m in members.items()} \
        == {n: (pool, n, "EXITED") for n in ("a", "b")}
    listed = {j["id"]: j for j in map(json.loads, b.lclient("-list", "-json").stdout.splitlines())}
    assert pool not in listed and all(listed[m["id"]]["pool"] == pool for m in members.values())

    # -wait: 0 only when every member exited 0; else the first failing member's status (by node)
    assert b.lclient("-undrain", "c").returncode == 0
    failing = add(b, "exit 3", "-all-nodes")
    waited = c.lclient("-wait", failing)
    first = check(c, failing)["members"][0]
    assert [m["node"] for m in check(c, failing)["members"]] == ["a", "b", "c"]
    assert (waited.returncode, waited.stderr) == (3, f"lclient: pool {failing} ended EXITED (exit code 3): member "
                                                     f"{first['id']} on node a ended EXITED with exit code 3\n")

    # -kill of a pool kills every member
    sleepers = add(c, "sleep 300", "-all-nodes")
    until(lambda: [m["state"] for m in check(a, sleepers)["members"]] == ["RUNNING"] * 3, "every member to run")
    pids = [m["host_pid"] for m in check(a, sleepers)["members"]]
    assert all(pid_alive(p) for p in pids)
    waited = b.lclient("-wait", sleepers, "-timeout", "0.2s")
    assert (waited.returncode, waited.stderr) == (124, f"lclient: pool {sleepers} is still RUNNING after 0.2s\n")
    killed = a.lclient("-kill", sleepers)
    assert killed.returncode == 0 and killed.stdout.startswith(f"{sleepers} RUNNING (kill requested)")
    assert b.lclient("-wait", sleepers).returncode in (137, 143)
    after = check(b, sleepers)
    assert after["state"] == "KILLED" and [m["state"] for m in after["members"]] == ["KILLED"] * 3
    assert all(m["error"].startswith("killed by request") for m in after["members"])
    until(lambda: not any(pid_alive(p) for p in pids), "every member's process to be gone")
    in_etcd = etcd_records(cluster)
    assert [in_etcd[m["id"]]["state"] for m in after["members"]] == ["KILLED"] * 3
    again = a.lclient("-kill", sleepers)
    assert (again.returncode, again.stderr) == (1, f"lclient: pool {sleepers} has already finished (KILLED)\n")
    assert etcd_prefix(cluster, "queue") == {} and etcd_prefix(cluster, "assign") == {}
    assert set(etcd_prefix(cluster, "pools")) == {f"{cluster.prefix}/pools/{p}" for p in (pool, failing, sleepers)}


def test_all_nodes_with_no_ready_node_is_refused(cluster):
    a = cluster.daemon("a")
    assert a.lclient("-drain", "a").returncode == 0
    refused = a.lclient("-add", "true", "-all-nodes")
    assert (refused.returncode, refused.stdout, refused.stderr) == \
        (1, "", "lclient: no node can run the pool: every registered node is draining\n")
    pinned = a.lclient("-add", "true", "-all-nodes", "-node", "a")
    assert (pinned.returncode, pinned.stderr) == (2, "lclient: -all-nodes runs a copy on every ready node; leave out -node\n")
    with JobsClient(a.server) as client, pytest.raises(errors.InvalidRequest, match="it cannot be pinned to node a as well"):
        client.add(pb.JobSpec(command="true", node="a"), all_nodes=True)  # the daemon refuses it too
    assert etcd_prefix(cluster, "pools") == {} and etcd_prefix(cluster, "jobs") == {}
    assert a.lclient("-undrain", "a").returncode == 0
    pool = add(a, "true", "-all-nodes")
    assert a.lclient("-wait", pool).returncode == 0 and [m["node"] for m in check(a, pool)["members"]] == ["a"]
