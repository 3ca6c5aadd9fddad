"""-after through real nodes and the real lclient: a chain of three runs in order and each
waits meanwhile saying for what; a failed parent cancels its children (and theirs), also one
that had failed before the child was added; an array (and a pool) as a parent; an unknown
parent refused at add with nothing queued."""

from __future__ import annotations

import os
import signal
import uuid

from support.etcd_readers import etcd_prefix, etcd_records
from support.jobs import add, check, until


def held(daemon, text: str, *args: str) -> tuple[str, int]:
    """A job that runs until released (SIGUSR1 to its shell, PID 1 of its namespace), then prints
    `text` and exits 0, so a test sees its children wait however slow a loaded host is; its id
    and host pid once it runs."""
    job = add(daemon, f"trap 'echo {text}; exit 0' USR1; while :; do sleep 0.05; done", *args)
    until(lambda: check(daemon, job)["state"] == "RUNNING", "the held job to run")
    return job, check(daemon, job)["host_pid"]


def test_a_chain_of_three_runs_in_order_each_saying_what_it_waits_for(cluster):
    a = cluster.daemon("a", extra=["--capacity", "4"])
    first, pid = held(a, "one")
    second = add(a, "echo two", "-after", first)
    third = add(a, "echo three", "-after", second)
    until(lambda: check(a, second)["waiting"] == f"after {first} (RUNNING)", "the second to say it waits for the first")
    until(lambda: check(a, third)["waiting"] == f"after {second} (QUEUED)", "the third to say it waits for the second")
    text = a.lclient("-check", second).stdout.splitlines()
    assert f"waiting:  after {first} (RUNNING)" in text and f"after:    {first}" in text
    os.kill(pid, signal.SIGUSR1)
    assert a.lclient("-wait", third).returncode == 0
    one, two, three = (check(a, job) for job in (first, second, third))
    assert [j["state"] for j in (one, two, three)] == ["EXITED"] * 3
    assert one["finished_at"] <= two["started_at"] and two["finished_at"] <= three["started_at"]
    assert [a.lclient("-logs", j).stdout for j in (first, second, third)] == ["one\n", "two\n", "three\n"]
    assert two["after"] == [first] and three["waiting"] is None


def test_a_failed_parent_cancels_its_children_and_theirs(cluster):
    a = cluster.daemon("a", extra=["--capacity", "4"])
    parent = add(a, "sleep 0.5; exit 3")
    child = add(a, "echo never", "-after", parent)
    grandchild = add(a, "echo never", "-after", child)
    waited = a.lclient("-wait", grandchild)
    assert waited.returncode == 1
    reason = f"not started: its -after parent job {parent} ended EXITED with exit code 3"
    assert check(a, child)["state"] == "CANCELLED" and check(a, child)["error"] == reason
    assert check(a, grandchild)["error"] == f"not started: its -after parent job {child} ended CANCELLED: {reason}"
    assert waited.stderr == f"lclient: job {grandchild} ended CANCELLED: {check(a, grandchild)['error']}\n"
    assert check(a, child)["started_at"] is None and a.lclient("-logs", child).stdout == ""
    # a parent that had already failed when the child was added
    late = add(a, "echo never", "-after", parent)
    assert a.lclient("-wait", late).returncode == 1 and check(a, late)["error"] == reason
    # two parents: the one that fails decides, whichever is named first
    ok = add(a, "true")
    both = add(a, "echo never", "-after", f"{ok},{parent}")
    assert a.lclient("-wait", both).returncode == 1 and check(a, both)["error"] == reason
    in_etcd = etcd_records(cluster)
    assert [in_etcd[j]["state"] for j in (child, grandchild, late, both)] == ["CANCELLED"] * 4
    assert etcd_prefix(cluster, "queue") == {}


def test_an_array_and_a_pool_as_parents(cluster):
    a = cluster.daemon("a", extra=["--capacity", "4"])
    array = add(a, "trap 'exit 0' USR1; while :; do sleep 0.05; done", "-array", "3")
    until(lambda: check(a, array)["state"] == "RUNNING", "the array to run")
    after_array = add(a, "echo done", "-after", array)
    until(lambda: check(a, after_array)["waiting"] == f"after {array} (RUNNING)", "the child to wait for the array")
    until(lambda: all(m["state"] == "RUNNING" for m in check(a, array)["members"]), "every member to run")
    for m in check(a, array)["members"]:
        os.kill(m["host_pid"], signal.SIGUSR1)
    assert a.lclient("-wait", after_array).returncode == 0
    members = check(a, array)["members"]
    assert check(a, after_array)["started_at"] >= max(m["finished_at"] for m in members)

    failing = add(a, '[ "$LCLUSTER_ARRAY_INDEX" != 1 ]', "-array", "3")
    cancelled = add(a, "echo never", "-after", failing)
    assert a.lclient("-wait", cancelled).returncode == 1
    bad = check(a, failing)["members"][1]
    assert check(a, cancelled)["error"] == (f"not started: its -after parent array {failing} ended EXITED with exit code 1: "
                                            f"member {bad['id']} ended EXITED")

    pool = add(a, "true", "-all-nodes")
    after_pool = add(a, "echo pooled", "-after", pool)
    assert a.lclient("-wait", after_pool).returncode == 0 and a.lclient("-logs", after_pool).stdout == "pooled\n"
    # an array can wait for a job, each member like a job
    gate = add(a, "sleep 0.3")
    gated = add(a, "true", "-array", "2", "-after", gate)
    assert a.lclient("-wait", gated).returncode == 0
    assert min(m["started_at"] for m in check(a, gated)["members"]) >= check(a, gate)["finished_at"]


def test_an_unknown_or_malformed_parent_is_refused_at_add(cluster):
    a = cluster.daemon("a")
    nobody = uuid.uuid4().hex
    refused = a.lclient("-add", "true", "-after", nobody)
    assert (refused.returncode, refused.stdout, refused.stderr) == (1, "", f"lclient: no job with uuid {nobody}\n")
    real = add(a, "true")
    refused = a.lclient("-add", "true", "-after", f"{real},{nobody}", "-array", "2")
    assert (refused.returncode, refused.stderr) == (1, f"lclient: no job with uuid {nobody}\n")
    bad = a.lclient("-add", "true", "-after", "xyz")
    assert (bad.returncode, bad.stderr) == (2, "lclient: -after: malformed uuid 'xyz': expected 32 hex digits\n")
    empty = a.lclient("-add", "true", "-after", f"{real},")
    assert (empty.returncode, empty.stderr) == (2, f"lclient: bad -after value '{real},': expected UUID[,UUID...]\n")
    twice = a.lclient("-add", "true", "-after", f"{real},{real}")
    assert (twice.returncode, twice.stderr) == (2, "lclient: -after names the same job twice\n")
    misplaced = a.lclient("-check", real, "-after", real)
    assert (misplaced.returncode, misplaced.stderr) == (2, "lclient: -after goes with -add\n")
    assert list(etcd_records(cluster)) == [real]
