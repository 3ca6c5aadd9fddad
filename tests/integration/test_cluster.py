"""The control plane for real: daemon restarts, etcd outages, crash reconcile, 200 jobs at once,
and the embedded etcd. Each test has its own etcd and daemons (the `cluster` fixture, support/)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from lclient.client import JobsClient
from lclusterd.cluster.store import Store
from lclusterd.cluster.watch import Watches
from lclusterd.rpc import lclusterd_pb2 as pb

from support.jobs import add, check, until
from support.processes import LCLUSTERD, Cluster, NodeProcess

TERMINAL = {"EXITED", "KILLED", "OOM_KILLED", "TIMED_OUT", "FAILED", "CANCELLED", "LOST"}


def etcd_history(cluster, section: str, done) -> list[tuple[str, str]]:
    """An independent look at etcd: every change under <prefix>/<section>/ since revision 1, as
    (job id, its state or "deleted"), read until `done(history so far)`."""
    store = Store(cluster.etcd.endpoint)
    seen: list[tuple[str, str]] = []
    try:
        class Collect:
            def on_events(self, events):
                for e in events:
                    seen.append((e.key.rsplit("/", 1)[-1], json.loads(e.value)["state"] if e.kind == "put" else "deleted"))

            def on_resync(self):
                raise AssertionError("history compacted")

        watch = Watches(store).watch(f"{cluster.prefix}/{section}/", 1, Collect())
        until(lambda: done(list(seen)), f"the {section}/ history to be read")
        watch.stop()
    finally:
        store.close()
    return seen


def by_job(history: list[tuple[str, str]]) -> dict[str, list[str]]:
    states: dict[str, list[str]] = {}
    for job, state in history:
        states.setdefault(job, []).append(state)
    return states


def test_restart_keeps_history_and_logs(cluster):
    first = cluster.daemon()
    job = add(first, "echo kept")
    assert first.lclient("-wait", job).returncode == 0
    assert first.stop() == 0

    second = cluster.daemon(directory=first.dir)
    record = check(second, job)
    assert (record["state"], record["exit_code"], record["node"]) == ("EXITED", 0, "node1")
    assert second.lclient("-logs", job).stdout == "kept\n"


def test_kill_of_a_queued_job_cancels_it(cluster):
    node = cluster.daemon(extra=["--capacity", "1"])
    busy = add(node, "sleep 300")
    until(lambda: check(node, busy)["state"] == "RUNNING", "the first job to run")
    queued = add(node, "echo never")
    assert check(node, queued)["state"] == "QUEUED"
    killed = node.lclient("-kill", queued)
    assert killed.returncode == 0 and "CANCELLED" in killed.stdout
    record = check(node, queued)
    assert record["state"] == "CANCELLED"
    assert record["error"] == "cancelled by request before it started"
    assert node.lclient("-kill", busy).returncode == 0
    assert node.lclient("-wait", busy).returncode in (137, 143)
    assert check(node, queued)["state"] == "CANCELLED"  # never ran, even once a slot was free


def test_jobs_queued_while_no_node_runs_them_later(cluster):
    node = cluster.daemon(extra=["--capacity", "1"])
    busy = add(node, "sleep 300")
    until(lambda: check(node, busy)["state"] == "RUNNING", "the first job to run")
    waiting = add(node, "echo later")
    assert node.stop() == 0  # kill mode: the running job is recorded KILLED; the queued stays queued

    again = cluster.daemon(directory=node.dir)
    assert check(again, busy)["state"] == "KILLED"
    assert "shutdown" in check(again, busy)["error"]
    assert again.lclient("-wait", waiting).returncode == 0
    assert again.lclient("-logs", waiting).stdout == "later\n"


def test_crash_with_running_job_becomes_lost_and_is_not_rerun(cluster):
    node = cluster.daemon()
    job = add(node, "echo ran >> /tmp/x; sleep 300")
    until(lambda: check(node, job)["state"] == "RUNNING", "the job to run")
    node.kill_hard()

    again = cluster.daemon(directory=node.dir)
    record = json.loads(again.lclient("-wait", job, "-json").stdout)
    assert record["state"] == "LOST"
    assert record["error"].startswith("lclusterd on node node1 restarted while the job was running")
    assert again.lclient("-list", "-state", "running").stdout.count(job) == 0


def test_fork_server_death_fails_its_jobs_and_stops_the_node_for_a_restart(cluster):
    node = cluster.daemon()
    job = add(node, "echo started; sleep 300")
    until(lambda: check(node, job)["state"] == "RUNNING", "the job to run")
    job_pid = check(node, job)["host_pid"]
    helper = next(pid for pid in _children(node.process.pid) if _comm(pid) == "lclusterd:fork")
    os.kill(helper, 9)

    assert node.process.wait(30) == 3  # non-zero, so that a supervisor restarts it
    assert "the runtime helper (fork server) exited unexpectedly" in node.log()
    again = cluster.daemon(directory=node.dir)
    record = check(again, job)
    assert (record["state"], record["error"]) == ("FAILED", "the runtime helper exited")
    # The job outlived its helper; the restarted node's sweep ended it.
    until(lambda: not os.path.exists(f"/proc/{job_pid}") or _state(job_pid) == "Z", "the orphaned job to be swept")


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0]
    except FileNotFoundError:
        return "gone"


def test_etcd_outage_gives_unavailable_then_recovers_without_restart(cluster):
    node = cluster.daemon()
    before = add(node, "echo before")
    assert node.lclient("-wait", before).returncode == 0

    during = add(node, "sleep 1; echo during")
    until(lambda: check(node, during)["state"] == "RUNNING", "the job to run")
    cluster.etcd.stop()
    time.sleep(1.5)  # let the job end while etcd is down (not a timing assertion)
    for args in (["-add", "true"], ["-check", before], ["-list"]):
        result = node.lclient(*args)
        assert result.returncode == 3, result
        assert result.stderr.startswith(f"lclient: lclusterd at {node.server} cannot serve the request: "
                                        f"etcd at {cluster.etcd.endpoint} is unavailable (")
        assert result.stderr.count("\n") == 1

    cluster.etcd.start()
    assert node.lclient("-wait", during).returncode == 0  # its end was kept and written once etcd was back
    assert node.lclient("-logs", during).stdout == "during\n"
    after = until(lambda: (r := node.lclient("-add", "echo after")).returncode == 0 and r.stdout.strip(), "adds to work again")
    assert node.lclient("-wait", after).returncode == 0
    assert node.lclient("-logs", after).stdout == "after\n"
    assert check(node, before)["state"] == "EXITED"
    assert node.process.poll() is None


def test_200_jobs_at_once_each_end_exactly_once(cluster):
    node = cluster.daemon(extra=["--capacity", "64"])
    with JobsClient(node.server) as client, ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda i: client.add(pb.JobSpec(command=f"echo {i}")).id, range(200)))
        finished = list(pool.map(lambda job: client.wait(job, 120), ids))
    assert len(set(ids)) == 200
    assert [j.state for j in finished] == ["EXITED"] * 200
    with JobsClient(node.server) as client:
        assert sorted(j.id for j in client.list()) == sorted(ids)

    # etcd's own history: every job was assigned once, went RUNNING at most once and ended once
    def all_ended(history):
        states = by_job(history)
        return len(states) == len(ids) and all(s[-1] in TERMINAL for s in states.values())

    seen = by_job(etcd_history(cluster, "jobs", all_ended))
    assert set(seen) == set(ids)
    for job, states in seen.items():
        # QUEUED first, or ASSIGNED when the prime placed it in the add's own transaction
        assert states[0] in ("QUEUED", "ASSIGNED") and states.count("ASSIGNED") == 1, (job, states)
        assert states.count("EXITED") == 1 and states.count("RUNNING") <= 1, (job, states)
        assert states[-1] == "EXITED"
    for i, job in enumerate(ids[:5]):
        assert node.lclient("-logs", job).stdout == f"{i}\n"


def test_graceful_shutdown_finish_mode_lets_jobs_end(cluster):
    node = cluster.daemon(extra=["--on-shutdown", "finish"])
    job = add(node, "sleep 3; echo done")
    until(lambda: check(node, job)["state"] == "RUNNING", "the job to run")
    assert node.stop() == 0
    again = cluster.daemon(directory=node.dir)
    record = check(again, job)
    assert (record["state"], record["exit_code"]) == ("EXITED", 0)
    assert again.lclient("-logs", job).stdout == "done\n"


def test_node_and_prime_keys_released_on_shutdown(cluster):
    node = cluster.daemon()
    assert node.stop() == 0
    out = subprocess.run(["etcdctl", "--endpoints", cluster.etcd.endpoint, "get", "--prefix", cluster.prefix, "--keys-only"],
                         capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}).stdout
    assert f"{cluster.prefix}/nodes/" not in out and f"{cluster.prefix}/prime" not in out


def test_embedded_etcd_is_the_default(tmp_path):
    c = Cluster(tmp_path, None)
    try:
        node = c.daemon()
        job = add(node, "echo embedded")
        assert node.lclient("-wait", job).returncode == 0
        assert node.lclient("-logs", job).stdout == "embedded\n"
        pid = int((node.state_dir / "etcd.pid").read_text())
        assert node.stop() == 0
        assert not os.path.exists(f"/proc/{pid}") or b"etcd" not in open(f"/proc/{pid}/cmdline", "rb").read()
        again = c.daemon(directory=node.dir)  # the embedded etcd keeps its data
        assert check(again, job)["state"] == "EXITED"
    finally:
        c.close()


def test_startup_errors_are_one_line_and_exit_3(cluster, tmp_path):
    cases = [
        (["--tls-dir", str(tmp_path)], f"lclusterd: ERROR --tls-dir {tmp_path} has no ca.pem (make it with: lclusterd "
                                       f"certs node {tmp_path} bad --host ADDRESS)"),
        (["--rootfs", str(tmp_path / "none")], f"lclusterd: ERROR rootfs {tmp_path / 'none'} has no /bin/sh"),
        (["--etcd", "http://127.0.0.1:1", "--etcd-wait", "0.5"], "lclusterd: ERROR etcd at http://127.0.0.1:1 is unavailable ("),
    ]
    for extra, start in cases:
        d = NodeProcess(tmp_path / f"bad{len(extra[1])}", cluster.etcd.endpoint, cluster.prefix, "bad", extra)
        argv = d.argv()
        if extra[0] == "--etcd":  # drop the fixture's --etcd (the last two arguments)
            argv = argv[:-2]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert result.returncode == 3, result.stderr
        errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
        assert len(errors) == 1 and errors[0].startswith(start), result.stderr


def test_port_in_use_is_refused(cluster):
    first = cluster.daemon()
    second = NodeProcess(first.dir.parent / "second", cluster.etcd.endpoint, cluster.prefix, "second")
    second.port = first.port
    result = subprocess.run(second.argv(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert f"lclusterd: ERROR cannot listen on localhost:{first.port}" in result.stderr


def test_two_nodes_share_the_queue_and_logs_are_proxied(cluster):
    first = cluster.daemon("node1", extra=["--capacity", "1"])
    busy = add(first, "sleep 300")
    until(lambda: check(first, busy)["state"] == "RUNNING", "the first job to run")
    second = cluster.daemon("node2", extra=["--capacity", "2"])
    job = add(first, "echo on two")  # the prime (node1) is full: node2 runs it
    assert first.lclient("-wait", job).returncode == 0
    assert check(first, job)["node"] == "node2"
    assert second.lclient("-logs", job).stdout == "on two\n"
    logs = first.lclient("-logs", job)  # node1 reads them from node2 for the client
    assert (logs.returncode, logs.stdout, logs.stderr) == (0, "on two\n", "")
    nodes = {json.loads(line)["name"]: json.loads(line) for line in first.lclient("-nodes", "-json").stdout.splitlines()}
    assert (nodes["node1"]["state"], nodes["node2"]["state"]) == ("prime", "ready")
    assert second.lclient("-kill", busy).returncode == 0  # any node accepts a kill
    assert first.lclient("-wait", busy).returncode in (137, 143)


def test_bad_options_are_one_line_and_exit_2():
    for args, line in [(["--capacity", "0"], "lclusterd: Invalid value for '--capacity': 0 is not in the range x>=1."),
                       (["--on-shutdown", "later"], "lclusterd: Invalid value for '--on-shutdown': 'later' is not one of 'kill', 'finish'."),
                       (["--bogus"], "lclusterd: No such option '--bogus'.")]:
        result = subprocess.run([LCLUSTERD, *args], capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stderr, result.stdout) == (2, line + "\n", "")


def test_an_add_on_the_idle_prime_is_assigned_in_its_own_transaction_a_later_one_queues(cluster):
    node = cluster.daemon(extra=["--capacity", "1"])
    first = add(node, "sleep 300")
    until(lambda: check(node, first)["state"] == "RUNNING", "the first job to run")
    second = add(node, "echo second")  # the one slot is taken: it waits in the queue
    assert check(node, second)["state"] == "QUEUED"
    assert node.lclient("-kill", first).returncode == 0
    assert node.lclient("-wait", second).returncode == 0

    jobs = by_job(etcd_history(cluster, "jobs", lambda h: by_job(h).get(second, [""])[-1] == "EXITED"))
    assert jobs[first][:2] == ["ASSIGNED", "RUNNING"]  # never QUEUED
    assert jobs[second][:2] == ["QUEUED", "ASSIGNED"]
    queue = etcd_history(cluster, "queue", lambda h: ("deleted" in by_job(h).get(second, [])))
    assert set(by_job(queue)) == {second}  # the first job never had a queue entry
