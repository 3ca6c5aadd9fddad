"""Retention for real (a real etcd, a real daemon with --keep 2s, lclient and etcdctl as readers):
an ended job's record, ended/ key and log files go and lclient then says it was removed; running
and queued jobs stay however old; etcd's history is compacted; and the daemon's watches survive
the compaction, through their re-read path when a stream has to resume from a compacted revision."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path

from lclusterd.cluster.keys import Keys
from lclusterd.cluster.store import Store

from support.etcd_readers import etcd_prefix, etcd_records, etcdctl
from support.jobs import add, check, until

KEEP = ["--keep", "2s"]
WAIT = 30  # seconds: the bound of every wait here (until's default is 20)


def log_files(daemon, job: str) -> list[Path]:
    return [p for p in (Path(daemon.state_dir, "logs", f"{job}.{s}") for s in ("out", "err")) if p.exists()]


def make_old(paths: list[Path], seconds: float = 3600) -> None:
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


def revision_of(cluster, key: str) -> int:
    result = etcdctl(cluster.etcd.endpoint, "get", key, "-w", "json")
    assert result.returncode == 0, result.stderr
    return int(json.loads(result.stdout)["header"]["revision"])


def compacted(cluster, revision: int, key: str) -> bool:
    result = etcdctl(cluster.etcd.endpoint, "get", f"--rev={revision}", key)
    return result.returncode != 0 and "compacted" in result.stderr


def test_an_ended_job_goes_with_its_logs_and_lclient_says_so_running_and_queued_stay(cluster):
    node = cluster.daemon("keep-a", extra=KEEP)
    sleeper = add(node, "sleep 600")
    until(lambda: check(node, sleeper)["state"] == "RUNNING", "the sleep job to run", timeout=WAIT)
    make_old(log_files(node, sleeper))  # silent for an hour: still running, so kept
    queued = add(node, "true", "-node", "keep-nowhere")  # no such node: stays QUEUED
    job = add(node, "echo out; echo err >&2")
    assert node.lclient("-wait", job).returncode == 0
    record = etcd_records(cluster)[job]
    ended_key = Keys(cluster.prefix).ended(record["finished_at"], job)
    assert ended_key in etcd_prefix(cluster, "ended")  # written with the terminal record
    assert len(log_files(node, job)) == 2

    until(lambda: job not in etcd_records(cluster), "the ended job's record to be removed", timeout=WAIT)
    assert ended_key not in etcd_prefix(cluster, "ended")
    stone = json.loads(etcd_prefix(cluster, "removed")[f"{cluster.prefix}/removed/{job}"])
    assert stone["finished_at"] == Keys(cluster.prefix).ended_parts(ended_key)[0] and stone["keep"] == 2  # (in ms)
    until(lambda: not log_files(node, job), "the ended job's log files to be removed", timeout=WAIT)

    line = re.compile(rf"lclient: job {job} was removed by retention at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d "
                      rf"\(it ended at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d; ended jobs are kept for 2s, --keep\)\n")
    for action in ("-check", "-wait", "-logs", "-kill"):
        result = node.lclient(action, job)
        assert (result.returncode, result.stdout) == (1, ""), (action, result.stderr)
        assert line.fullmatch(result.stderr), (action, result.stderr)
    unknown = node.lclient("-check", "0" * 32)
    assert (unknown.returncode, unknown.stderr) == (1, f"lclient: no job with uuid {'0' * 32}\n")

    # the log sweep has run since the sleep job's files were made old, and the prime's passes
    # since the queued job was added: both jobs are untouched
    assert (check(node, sleeper)["state"], check(node, queued)["state"]) == ("RUNNING", "QUEUED")
    # (its stdout's file only: it wrote nothing on stderr, so it has no file there)
    assert len(log_files(node, sleeper)) == 1 and {sleeper, queued} <= set(etcd_records(cluster))
    assert node.lclient("-kill", sleeper).returncode == 0 and node.lclient("-kill", queued).returncode == 0
    assert node.lclient("-wait", sleeper).returncode != 0


def test_a_pool_goes_with_its_last_member(cluster):
    node = cluster.daemon("keep-c", extra=KEEP)
    pool = add(node, "true", "-all-nodes")
    assert node.lclient("-wait", pool).returncode == 0
    until(lambda: f"{cluster.prefix}/pools/{pool}" not in etcd_prefix(cluster, "pools"), "the pool record to be removed",
          timeout=WAIT)
    assert not [r for r in etcd_records(cluster).values() if r.get("pool") == pool]
    result = node.lclient("-check", pool)
    assert result.returncode == 1 and result.stderr.startswith(f"lclient: pool {pool} was removed by retention at "), result.stderr


def test_the_store_range_reads_in_key_order_with_a_limit(etcd):
    store = Store(etcd.endpoint)
    keys = Keys(f"/test-{uuid.uuid4().hex[:8]}")
    try:
        for i, finished_at in enumerate([30.0, 10.0, 20.0, 40.0]):
            store.put(keys.ended(finished_at, f"{i:032x}"), b"")
        kvs, revision = store.get_range(keys.ended_prefix, keys.ended_before(40.0), limit=2)
        assert [keys.ended_parts(kv.key)[0] for kv in kvs] == [10.0, 20.0] and revision == store.revision()
        kvs, _ = store.get_range(keys.ended_prefix, keys.ended_before(40.0))
        assert [keys.ended_parts(kv.key)[0] for kv in kvs] == [10.0, 20.0, 30.0]
    finally:
        store.close()


def test_history_is_compacted_and_the_daemon_watches_survive_it(cluster):
    node = cluster.daemon("keep-b", extra=KEEP)
    prime_key = f"{cluster.prefix}/prime"
    old = revision_of(cluster, prime_key)
    assert etcdctl(cluster.etcd.endpoint, "get", f"--rev={old}", prime_key).returncode == 0
    first = add(node, "echo first")
    assert node.lclient("-wait", first).returncode == 0  # writes: the revision moves past `old`
    until(lambda: compacted(cluster, old, prime_key), "etcd's history to be compacted past the daemon's start", timeout=WAIT)
    after = add(node, "echo after")
    assert node.lclient("-wait", after).returncode == 0 and node.lclient("-logs", after).stdout == "after\n"

    # Once both jobs are removed nothing writes under the daemon's prefix; writes outside it
    # move etcd's revision past the point the daemon's watch stream has delivered. Once that is
    # compacted, a restart of etcd makes the stream resume from a compacted revision, and every
    # watch re-reads (on_resync) instead of failing for good.
    until(lambda: not etcd_records(cluster), "both jobs to be removed", timeout=WAIT)
    for i in range(5):
        assert etcdctl(cluster.etcd.endpoint, "put", f"/elsewhere-{cluster.prefix[1:]}/{i}", "x").returncode == 0
    outside = revision_of(cluster, prime_key)
    until(lambda: compacted(cluster, outside - 1, prime_key), "the outside writes to be compacted", timeout=WAIT)
    cluster.etcd.stop()
    cluster.etcd.start()
    until(lambda: "history compacted" in node.log(), "the daemon's watch to meet the compaction", timeout=WAIT)
    again = add(node, "echo again")
    result = node.lclient("-wait", again)
    assert result.returncode == 0, result.stderr
    assert node.lclient("-logs", again).stdout == "again\n"
