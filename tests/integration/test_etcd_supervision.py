"""The embedded etcd dying under a running node, with real processes: the node starts it again
and every result of the jobs that ended meanwhile reaches etcd; when it cannot be started
again, the node stops with exit status 3 and one line, keeps the results in its journal, and
its next start writes them: no job is recorded LOST."""

from __future__ import annotations

import os
import signal

from support.embedded import EmbeddedView
from support.etcd_readers import etcd_records
from support.jobs import add, check, pid_alive, until
from support.processes import Cluster

WAITERS = 4


def journaled(node) -> list[str]:
    """The job ids the node's journal holds (its dot-names are spare files, not entries)."""
    return sorted(name for name in os.listdir(node.state_dir / "journal") if not name.startswith("."))


def running_waiters(node) -> tuple[list[str], list[int]]:
    """WAITERS jobs that run until the test ends them (end_jobs), each then printing its
    number and exiting 0, so they end while etcd is down however slow a loaded host is:
    their ids and host pids."""
    ids = [add(node, f"trap 'echo {i}; exit 0' USR1; while :; do sleep 0.05; done") for i in range(WAITERS)]
    until(lambda: all(check(node, j)["state"] == "RUNNING" for j in ids), "the jobs to run")
    return ids, [check(node, j)["host_pid"] for j in ids]


def end_jobs(pids: list[int]) -> None:
    """End the waiters (their shell is PID 1 of its namespace: it gets the signal it traps)."""
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)
    until(lambda: not any(pid_alive(p) for p in pids), "the jobs to end")


def assert_every_result_written(node, view, ids) -> None:
    for i, job in enumerate(ids):
        assert node.lclient("-wait", job, timeout=60).returncode == 0, job
        assert node.lclient("-logs", job).stdout == f"{i}\n"
    records = etcd_records(view)  # etcdctl, with the node's client certificate
    assert [(records[j]["state"], records[j]["exit_code"], records[j]["attempt"], records[j]["history"]) for j in ids] \
        == [("EXITED", 0, 1, [])] * len(ids), [records[j] for j in ids]
    assert journaled(node) == []


def test_embedded_etcd_killed_under_a_running_node_is_started_again_and_no_result_is_lost(tmp_path):
    c = Cluster(tmp_path, None)
    try:
        node = c.daemon("lock-r")
        view = EmbeddedView(node)
        ids, pids = running_waiters(node)
        hung = view.etcd.signal(signal.SIGSTOP)  # first it hangs: nothing the jobs report can be written
        end_jobs(pids)
        until(lambda: journaled(node) == sorted(ids), "their results to be journaled")
        os.kill(hung, signal.SIGKILL)  # then it dies
        until(lambda: "the embedded etcd is running again" in node.log(), "the node to start etcd again", timeout=60)

        assert_every_result_written(node, view, ids)
        assert view.etcd.pid() != hung and node.process.poll() is None
        log = node.log()
        assert log.count(f"WARNING the embedded etcd (pid {hung}) was killed by SIGKILL; starting it again in 0.25s "
                         "(try 1 of 5)") == 1
        assert log.count("the embedded etcd is running again") == 1 and " ERROR " not in log
        after = add(node, "echo after")
        assert node.lclient("-wait", after).returncode == 0
    finally:
        try:
            c.close()
        finally:
            EmbeddedView(c.daemons[0]).etcd.kill_leftover()


def test_a_node_whose_etcd_cannot_be_started_again_exits_3_and_its_next_start_writes_the_results(tmp_path):
    c = Cluster(tmp_path, None)
    try:
        node = c.daemon("lock-x")
        view = EmbeddedView(node)
        ids, pids = running_waiters(node)
        data = view.etcd.data_dir
        held = data.with_name("etcd.held")
        os.rename(data, held)
        data.write_text("not a directory\n")  # etcd cannot start on this
        view.etcd.kill()
        end_jobs(pids)  # while the node tries to start etcd again (about 8 s)
        assert node.process.wait(120) == 3
        errors = [line for line in node.log().splitlines() if " ERROR " in line]
        assert len(errors) == 1, errors
        assert errors[0].startswith("lclusterd: ERROR the embedded etcd could not be started again after 5 tries; the "
                                    "last: the embedded etcd exited with status 1: ")
        assert errors[0].endswith("; stopping this node")
        assert node.log().count("; starting it again in ") == 5
        assert journaled(node) == sorted(ids)  # the results, kept

        data.unlink()
        os.rename(held, data)
        again = c.daemon("lock-x", directory=node.dir)
        assert_every_result_written(again, EmbeddedView(again), ids)
        assert again.log().count("journaled before lclusterd on node lock-x restarted") == WAITERS
    finally:
        try:
            c.close()
        finally:
            EmbeddedView(c.daemons[0]).etcd.kill_leftover()
