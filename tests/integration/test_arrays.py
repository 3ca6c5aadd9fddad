"""Job arrays through real nodes and the real lclient: each member's index and array id in its
environment, -check, -list folded and -expand, -wait and -kill of an array, the %K limit on
members running at once, an array spread over two nodes, and bad -array values refused."""

from __future__ import annotations

import json

import pytest

from support.etcd_readers import etcd_prefix, etcd_records
from support.jobs import add, check, pid_alive, until


def overlap(members: list[dict]) -> int:
    """The most members that ran at one instant, from the start and end times their records hold."""
    edges = sorted([(m["started_at"], 1) for m in members] + [(m["finished_at"], -1) for m in members])
    most = running = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        running += step
        most = max(most, running)
    return most


def test_members_get_their_index_and_array_id_and_the_array_reads_as_one(cluster):
    a = cluster.daemon("a", extra=["--capacity", "4"])
    array = add(a, 'echo "$LCLUSTER_ARRAY_INDEX $LCLUSTER_ARRAY_ID"', "-array", "2-4", quiet=True)
    assert a.lclient("-wait", array).returncode == 0

    record = check(a, array)
    assert (record["id"], record["is_array"], record["is_pool"], record["state"], record["exit_code"]) == \
        (array, True, False, "EXITED", 0)
    assert [(m["array_index"], m["array"], m["state"]) for m in record["members"]] == [(i, array, "EXITED") for i in (2, 3, 4)]
    for m in record["members"]:
        assert a.lclient("-logs", m["id"]).stdout == f"{m['array_index']} {array}\n"
    text = a.lclient("-check", array).stdout.splitlines()
    assert "array:    3 member(s), indexes 2-4" in text
    rows = text[text.index("members:") + 1:]
    assert rows[0].split() == ["INDEX", "JOB", "STATE", "NODE", "EXIT"]
    assert [r.split() for r in rows[1:]] == [[str(m["array_index"]), m["id"], "EXITED", "a", "0"] for m in record["members"]]

    lone = add(a, "true")
    assert a.lclient("-wait", lone).returncode == 0
    folded = a.lclient("-list").stdout.splitlines()
    assert folded[1].split()[:6] == [array, "EXITED", "(exit", "code", "0)", "3"] and "3 members" in folded[1]
    assert folded[2].split()[:2] == [lone, "EXITED"]
    assert len(folded) == 3
    listed = [json.loads(line) for line in a.lclient("-list", "-json").stdout.splitlines()]
    assert [(j["id"], j["is_array"], j.get("member_count")) for j in listed] == [(array, True, 3), (lone, False, None)]
    expanded = [json.loads(line) for line in a.lclient("-list", "-expand", "-json").stdout.splitlines()]
    assert [(j["array_index"], j["array"]) for j in expanded] == [(2, array), (3, array), (4, array), (None, None)]
    newest = a.lclient("-list", "-state", "EXITED", "-limit", "1").stdout.splitlines()
    assert [line.split()[0] for line in newest[1:]] == [lone]
    assert a.lclient("-list", "-state", "RUNNING").stdout.splitlines()[1:] == []

    stored = json.loads(etcd_prefix(cluster, "pools")[f"{cluster.prefix}/pools/{array}"])  # the independent reader
    assert (stored["kind"], stored["max_running"]) == ("array", 0)
    assert stored["members"] == {str(m["array_index"]): m["id"] for m in record["members"]}
    in_etcd = etcd_records(cluster)
    assert all((in_etcd[m["id"]]["pool"], in_etcd[m["id"]]["array_index"]) == (array, m["array_index"]) for m in record["members"])
    logs = a.lclient("-logs", array)
    assert (logs.returncode, logs.stderr) == (1, f"lclient: {array} is an array of 3 job(s); read a member's logs "
                                                 f"(lclient -check {array} lists them)\n")


def test_at_most_K_members_run_at_once(cluster):
    a = cluster.daemon("a", extra=["--capacity", "8"])
    array = add(a, "sleep 0.4", "-array", "6%2")
    assert a.lclient("-wait", array, "-timeout", "120s").returncode == 0
    members = check(a, array)["members"]
    assert [m["state"] for m in members] == ["EXITED"] * 6
    assert overlap(members) <= 2, [(m["started_at"], m["finished_at"]) for m in members]
    assert json.loads(etcd_prefix(cluster, "pools")[f"{cluster.prefix}/pools/{array}"])["max_running"] == 2
    # without a limit the same node runs them side by side
    free = add(a, "sleep 1", "-array", "4")
    assert a.lclient("-wait", free).returncode == 0
    assert overlap(check(a, free)["members"]) > 2


def test_wait_and_kill_of_an_array(cluster):
    a = cluster.daemon("a", extra=["--capacity", "4"])
    array = add(a, "sleep 300", "-array", "3")
    until(lambda: [m["state"] for m in check(a, array)["members"]] == ["RUNNING"] * 3, "every member to run")
    pids = [m["host_pid"] for m in check(a, array)["members"]]
    waited = a.lclient("-wait", array, "-timeout", "0.2s")
    assert (waited.returncode, waited.stderr) == (124, f"lclient: array {array} is still RUNNING after 0.2s\n")
    killed = a.lclient("-kill", array)
    assert killed.returncode == 0 and killed.stdout.startswith(f"{array} RUNNING (kill requested)")
    assert a.lclient("-wait", array).returncode in (137, 143)
    after = check(a, array)
    assert after["state"] == "KILLED" and [m["state"] for m in after["members"]] == ["KILLED"] * 3
    until(lambda: not any(pid_alive(p) for p in pids), "every member's process to be gone")
    again = a.lclient("-kill", array)
    assert (again.returncode, again.stderr) == (1, f"lclient: array {array} has already finished (KILLED)\n")
    # a queued member is cancelled: a %1 array has two waiting behind the first
    slow = add(a, "sleep 300", "-array", "3%1")
    until(lambda: [m["state"] for m in check(a, slow)["members"]] == ["RUNNING", "QUEUED", "QUEUED"], "one member to run")
    assert a.lclient("-kill", slow).returncode == 0
    assert a.lclient("-wait", slow).returncode in (137, 143)
    assert [m["state"] for m in check(a, slow)["members"]] == ["KILLED", "CANCELLED", "CANCELLED"]
    assert etcd_prefix(cluster, "queue") == {} and etcd_prefix(cluster, "assign") == {}


def test_an_array_spreads_over_two_nodes(cluster):
    a = cluster.daemon("a", extra=["--capacity", "2"])
    b = cluster.daemon("b", extra=["--capacity", "2"])
    array = add(b, 'sleep 0.5; echo "$LCLUSTER_ARRAY_INDEX"', "-array", "10-17")
    assert a.lclient("-wait", array, "-timeout", "120s").returncode == 0
    members = check(b, array)["members"]
    assert {m["node"] for m in members} == {"a", "b"}
    for m in members:
        assert b.lclient("-logs", m["id"]).stdout == f"{m['array_index']}\n"  # through either node


@pytest.mark.parametrize("value, why", [
    ("0", "bad -array value '0': must be at least 1"),
    ("-3", "bad -array value '-3': must be at least 1"),
    ("5-2", "bad -array value '5-2': the range is reversed (5 is above 2)"),
    ("0-10000", "bad -array value '0-10000': 10001 members is more than the limit of 10000"),
    ("4%0", "bad -array value '4%0': %K (most members at once) must be at least 1"),
    ("x", "bad -array value 'x': expected a whole number"),
    ("3-", "bad -array value '3-': expected a whole number"),
])
def test_bad_array_values_are_refused_with_exit_2(cluster, value, why):
    a = cluster.daemon("a")
    refused = a.lclient("-add", "true", "-array", value)
    assert (refused.returncode, refused.stdout, refused.stderr) == (2, "", f"lclient: {why}\n")
    assert etcd_prefix(cluster, "jobs") == {} and etcd_prefix(cluster, "pools") == {}


def test_an_array_goes_with_its_last_member_under_retention(cluster):
    a = cluster.daemon("a", extra=["--keep", "2s", "--capacity", "4"])
    array = add(a, "true", "-array", "3")
    assert a.lclient("-wait", array).returncode == 0
    until(lambda: f"{cluster.prefix}/pools/{array}" not in etcd_prefix(cluster, "pools"), "the array record to be removed",
          timeout=30)
    assert not [r for r in etcd_records(cluster).values() if r.get("pool") == array]
