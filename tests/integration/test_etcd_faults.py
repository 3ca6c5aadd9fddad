"""etcd under faults, with real daemons on a real 3-member etcd cluster (every daemon's --etcd
lists all three members): one member killed while jobs are added and run, all members stopped
while daemons run jobs and started again, and the prime killed (-9) in the middle of a stream of
300 jobs, with the failover time measured. The final state is read with lclient and with etcdctl (against the live members).

Nothing here asserts a duration: each wait is for a condition, with a generous deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor, as_completed

from prime_stream import stream_with_prime_killed

from support.etcd_readers import etcd_prefix, etcd_records
from support.jobs import add, check, nodes, pid_alive, ran_on, until


def test_one_etcd_member_killed_while_jobs_are_added_no_request_fails(cluster3):
    daemons = [cluster3.daemon(name) for name in ("a", "b", "c")]
    until(lambda: nodes(daemons[1])["a"]["prime"], "a to be the prime")
    victim = cluster3.etcd.leader()  # the worst member to lose: the others must elect a new leader

    def add_one(i: int) -> tuple[int, subprocess.CompletedProcess]:
        return i, daemons[i % 3].lclient("-add", f"sleep 0.{i % 5}; echo job {i}")

    results: dict[int, subprocess.CompletedProcess] = {}
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(add_one, i) for i in range(60)]
        for future in as_completed(futures):
            i, result = future.result()
            results[i] = result
            if len(results) == 20:
                victim.kill_hard()  # SIGKILL, while the other 40 are being added and the first run
    failed = {i: r.stderr for i, r in results.items() if r.returncode != 0}
    assert not failed, failed
    ids = [results[i].stdout.strip() for i in range(60)]
    assert len(set(ids)) == 60

    for n, job in enumerate(ids):  # every node answers for every job, with one member down
        waited = daemons[n % 3].lclient("-wait", job, timeout=120)
        assert waited.returncode == 0, (job, waited.stderr)
    checked = [check(daemons[(n + 1) % 3], job) for n, job in enumerate(ids)]
    assert [(r["state"], r["exit_code"]) for r in checked] == [("EXITED", 0)] * 60
    assert daemons[2].lclient("-logs", ids[7]).stdout == "job 7\n"

    in_etcd = etcd_records(cluster3)  # etcdctl, against the two surviving members only
    for job in ids:
        record = in_etcd[job]
        assert (record["state"], record["exit_code"], record["attempt"], record["history"]) == ("EXITED", 0, 1, []), record
        assert ran_on(cluster3.daemons, job) == {record["node"]}, (job, record)
    assert list(etcd_prefix(cluster3, "queue")) == [] and list(etcd_prefix(cluster3, "assign")) == []
    assert {name: n["state"] for name, n in nodes(daemons[0]).items()} == {"a": "prime", "b": "ready", "c": "ready"}
    assert all(d.process.poll() is None for d in daemons)


def test_all_etcd_members_stopped_jobs_go_on_and_results_are_written_back(cluster3):
    a, b = cluster3.daemon("a"), cluster3.daemon("b")
    pids_before = (a.process.pid, b.process.pid)
    before = add(a, "echo before")
    assert b.lclient("-wait", before).returncode == 0
    running = [add(a if i % 2 else b, f"sleep 15; echo during {i}", "-node", "a" if i % 2 else "b") for i in range(4)]
    until(lambda: all(check(a, j)["state"] == "RUNNING" for j in running), "the jobs to run")
    host_pids = [check(b, j)["host_pid"] for j in running]

    # Hold the jobs (each is its own process group) until etcd is fully down: on a busy machine
    # stopping three members can outlast the jobs (and so can starting them: 15 s to be safe), and a result written while two members
    # still served would leave nothing to buffer.
    for pid in host_pids:
        os.killpg(pid, signal.SIGSTOP)
    cluster3.etcd.stop()  # every member
    for pid in host_pids:
        os.killpg(pid, signal.SIGCONT)
    for d in (a, b):
        for args in (["-add", "true"], ["-check", before], ["-list"], ["-nodes"]):
            result = d.lclient(*args)
            assert result.returncode == 3, (args, result)
            assert result.stderr.startswith(f"lclient: lclusterd at {d.server} cannot serve the request: "
                                            f"etcd at {cluster3.etcd.endpoint} is unavailable ("), result.stderr
            assert result.stderr.count("\n") == 1
    # the daemons ran their jobs to the end without etcd (a condition, not a timing assertion)
    until(lambda: not any(pid_alive(p) for p in host_pids), "the jobs to end while etcd is down")
    until(lambda: all("cannot record job states yet" in d.log() for d in (a, b)), "both daemons to buffer results")

    cluster3.etcd.start()
    # gRPC reconnects within its backoff (at most 1 s), so a request may still fail just after
    # etcd is back: wait for both daemons to serve again (as the one-member outage test does)
    until(lambda: all(d.lclient("-check", before).returncode == 0 for d in (a, b)), "the daemons to reach etcd again")
    for job in running:
        assert a.lclient("-wait", job, timeout=120).returncode == 0
    for i, job in enumerate(running):
        assert b.lclient("-logs", job).stdout == f"during {i}\n"
    after = until(lambda: (r := a.lclient("-add", "echo after")).returncode == 0 and r.stdout.strip(), "adds to work again")
    assert b.lclient("-wait", after).returncode == 0

    in_etcd = etcd_records(cluster3)
    for i, job in enumerate(running):
        record = in_etcd[job]
        assert (record["state"], record["exit_code"], record["attempt"], record["history"]) == ("EXITED", 0, 1, []), record
        assert record["node"] == ("a" if i % 2 else "b")
    assert all(in_etcd[j]["state"] == "EXITED" for j in (before, after))
    assert list(etcd_prefix(cluster3, "assign")) == [] and list(etcd_prefix(cluster3, "queue")) == []
    assert (a.process.pid, b.process.pid) == pids_before and all(d.process.poll() is None for d in (a, b))
    assert {name: n["state"] for name, n in nodes(a).items()} in ({"a": "prime", "b": "ready"}, {"a": "ready", "b": "prime"})


def test_prime_killed_on_three_member_etcd_failover_time(cluster3, capsys):
    line = stream_with_prime_killed(cluster3, "3-member etcd")
    with capsys.disabled():
        print("\n" + line)
