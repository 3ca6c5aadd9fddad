"""Retention without etcd (an in-memory store with etcd's semantics): every terminal write carries
its ended/ index entry in the same transaction; a pass removes exactly the jobs that ended more
than keep ago, in batches etcd accepts, each under the prime guard, leaving tombstones under one
lease; a deposed prime removes and compacts nothing; pools go once no member is left; compaction
trails one pass behind; the log sweep spares running and recent jobs."""

from __future__ import annotations

import json
import os
import time

import grpc
import pytest
from memstore import MemStore

from lclusterd.api.errors import status_of
from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.logs import LogFiles
from lclusterd.cluster.listing import index_key, index_put
from lclusterd.cluster.retention import (JOB_OPS, JOBS_PER_TXN, MIN_TOMBSTONE_SECONDS, LogSweep, Retention, interval_for,
                                         removal_of, tombstone)
from lclusterd.cluster.kv import ModIs, Put
from lclusterd.errors import JobNotFound, JobRemoved
from lclusterd.model import ASSIGNED, EXITED, LOST, QUEUED, RUNNING, JobRecord, JobSpec, PoolRecord
from lclusterd.units import format_duration, parse_duration

KEYS = Keys("/t")
NOW = 10_000.0
KEEP = 60.0


@pytest.fixture
def store() -> MemStore:
    s = MemStore()
    s.put(KEYS.prime, b"p")
    return s


def running(store: MemStore, job_id: str, pool: str = "", retries: int = 0) -> tuple[JobRecord, int]:
    record = JobRecord(id=job_id, spec=JobSpec("true", retries=retries), node="n1", pool=pool).moved_to(ASSIGNED, node="n1")
    record = record.moved_to(RUNNING, started_at=1.0)
    return record, store.txn([], [Put(KEYS.job(job_id), record.to_bytes()), index_put(KEYS, record)]).revision  # as added


def ended(jobs: Jobs, store: MemStore, job_id: str, finished_at: float, pool: str = "") -> None:
    record, revision = running(store, job_id, pool)
    new = record.moved_to(EXITED, exit_code=0, finished_at=finished_at)
    assert jobs.commit([jobs.finish(new, revision)]) == {job_id: store.rev}


def retention(store: MemStore, clock: list[float]) -> Retention:
    r = Retention(store, KEYS, KEEP, clock=lambda: clock[0])
    r._prime_revision = store.get(KEYS.prime).mod_revision  # as start() does, without its thread
    return r


# -- the index entry ---------------------------------------------------------------------------
def test_finish_and_lost_carry_the_ended_entry_and_a_retry_does_not(store):
    jobs = Jobs(store, KEYS)
    record, revision = running(store, "a" * 32, pool="f" * 32)
    done = record.moved_to(EXITED, exit_code=0, finished_at=1234.5678)
    assert Put("/t/ended/000000001234567/" + "a" * 32, b"f" * 32) in jobs.finish(done, revision).ops
    lost = jobs.lose(record, revision, "node gone")
    assert lost.record.state == LOST and Put(KEYS.ended(lost.record.finished_at, "a" * 32), b"f" * 32) in lost.ops
    retried, retry_revision = running(store, "b" * 32, retries=1)
    again = jobs.lose(retried, retry_revision, "node gone")
    assert again.record.state == QUEUED
    assert not [op for op in again.ops if op.key.startswith(KEYS.ended_prefix)]
    assert Put(KEYS.queue("b" * 32), again.record.to_bytes()) in again.ops


def test_non_terminal_changes_carry_no_ended_entry(store):
    jobs = Jobs(store, KEYS)
    record, revision = running(store, "a" * 32)
    queued = JobRecord(id="c" * 32, spec=JobSpec("true"))
    for change in (jobs.update(record, revision), jobs.assign(queued, 1, "n1"), jobs.note_waiting(queued, 1, "full")):
        assert not [op for op in change.ops if op.key.startswith(KEYS.ended_prefix)]


def test_cancelling_a_queued_job_writes_the_ended_entry_in_the_same_transaction(store):
    jobs = Jobs(store, KEYS)
    job = jobs.add(JobRecord(id="f" * 32, spec=JobSpec("true")))
    cancelled = jobs.kill(job.id)
    _, ops, succeeded = store.txns[-1]
    assert succeeded and Put(KEYS.ended(cancelled.finished_at, job.id), b"") in ops
    assert store.get(KEYS.ended(cancelled.finished_at, job.id)) is not None


# -- the pass ----------------------------------------------------------------------------------
def test_a_pass_removes_exactly_the_expired_jobs_in_guarded_batches(store):
    jobs = Jobs(store, KEYS)
    expired = [f"{i:032x}" for i in range(100)]
    for i, job_id in enumerate(expired):
        ended(jobs, store, job_id, NOW - KEEP - 100 + i * 0.5)
    recent = "e" * 32
    ended(jobs, store, recent, NOW - KEEP + 1)
    still_running, _ = running(store, "d" * 32)
    queued = jobs.add(JobRecord(id="c" * 32, spec=JobSpec("sleep 1")))
    prime = store.get(KEYS.prime).mod_revision
    writes_before = len(store.txns)

    assert retention(store, [NOW]).run_pass() == 100

    removals = store.txns[writes_before:]
    assert JOBS_PER_TXN == 32 and [len(ops) for _, ops, _ in removals] == [JOB_OPS * n for n in (32, 32, 32, 4)]
    assert all(compares == [ModIs(KEYS.prime, prime)] and ok for compares, _, ok in removals)
    assert store.leases == {1: max(int(KEEP), MIN_TOMBSTONE_SECONDS)}  # one lease for the pass, TTL = keep (or the floor)
    for job_id in expired:
        assert store.get(KEYS.job(job_id)) is None
        stone = store.get(KEYS.removed(job_id))
        assert stone.lease == 1 and json.loads(stone.value)["removed_at"] == NOW
    assert [kv.key for kv in store.get_prefix(KEYS.ended_prefix)[0]] == [KEYS.ended(NOW - KEEP + 1, recent)]
    left = {KEYS.last(kv.key): kv for kv in store.get_prefix(KEYS.jobs_prefix)[0]}
    assert set(left) == {recent, still_running.id, queued.id}
    # -list's index went with each record, and no key is left without its record
    assert sorted(kv.key for kv in store.get_prefix(KEYS.listed_prefix)[0]) == sorted(
        index_key(KEYS, JobRecord.from_bytes(kv.value, job_id)) for job_id, kv in left.items())


def test_compaction_trails_one_pass_behind(store):
    r = retention(store, [NOW])
    first_seen = store.rev
    r.run_pass()
    assert store.compacted == []  # nothing is known to be one interval old yet
    store.put("/t/other", b"x")
    second_seen = store.rev
    r.run_pass()
    r.run_pass()
    assert store.compacted == [first_seen, second_seen]


def test_a_deposed_prime_removes_and_compacts_nothing(store):
    jobs = Jobs(store, KEYS)
    ended(jobs, store, "a" * 32, NOW - KEEP - 1)
    r = retention(store, [NOW])
    store.put(KEYS.prime, b"another node")  # the key's mod revision moves on: the guard fails
    assert r.run_pass() == 0
    assert r.run_pass() == 0
    assert store.get(KEYS.job("a" * 32)) is not None and store.get(KEYS.removed("a" * 32)) is None
    assert store.compacted == []


def test_a_malformed_index_key_does_not_stop_retention(store):
    jobs = Jobs(store, KEYS)
    store.put(KEYS.ended_prefix + "0000000001", b"")  # sorts first, and names no job
    ended(jobs, store, "a" * 32, NOW - KEEP - 1)
    retention(store, [NOW]).run_pass()
    assert store.get_prefix(KEYS.ended_prefix)[0] == [] and store.get(KEYS.job("a" * 32)) is None


def test_a_pool_record_goes_once_no_member_is_left(store):
    jobs = Jobs(store, KEYS)
    pool = PoolRecord("f" * 32, JobSpec("uname -n"), 1.0, {"n1": "1" * 32, "n2": "2" * 32})
    store.put(KEYS.pool(pool.id), pool.to_bytes())
    ended(jobs, store, "1" * 32, NOW - KEEP - 10, pool=pool.id)
    ended(jobs, store, "2" * 32, NOW - 5, pool=pool.id)
    clock = [NOW]
    r = retention(store, clock)
    assert r.run_pass() == 1
    assert store.get(KEYS.pool(pool.id)) is not None  # member 2 is still kept
    clock[0] = NOW + KEEP
    assert r.run_pass() == 1
    assert store.get(KEYS.pool(pool.id)) is None
    stone = json.loads(store.get(KEYS.removed(pool.id)).value)
    assert (stone["kind"], stone["finished_at"]) == ("pool", NOW - 5)


# -- tombstones --------------------------------------------------------------------------------
def test_a_tombstone_becomes_the_retention_line(store):
    store.put(KEYS.removed("a" * 32), tombstone(1000.0, 1000.0 + 7 * 86400 + 3, 7 * 86400.0))
    error = removal_of(store, KEYS, "a" * 32)
    when = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))  # noqa: E731
    assert isinstance(error, JobNotFound) and status_of(error) == grpc.StatusCode.NOT_FOUND
    assert str(error) == (f"job {'a' * 32} was removed by retention at {when(1000.0 + 7 * 86400 + 3)} "
                          f"(it ended at {when(1000.0)}; ended jobs are kept for 7d, --keep)")
    assert removal_of(store, KEYS, "b" * 32) is None
    store.put(KEYS.removed("c" * 32), b"not json")
    assert removal_of(store, KEYS, "c" * 32) is None
    assert isinstance(JobRemoved("d" * 32, 1.0, 2.0, "2s", "pool"), JobNotFound)


@pytest.mark.parametrize("keep, interval", [(0.1, 0.5), (2, 0.5), (60, 15), (7 * 86400, 300)])
def test_interval_is_a_quarter_of_keep_within_bounds(keep, interval):
    assert interval_for(keep) == interval


@pytest.mark.parametrize("text", ["7d", "2s", "1m30s", "500ms", "1d12h", "1s500ms"])
def test_format_duration_reads_back(text):
    assert format_duration(parse_duration(text)) == text


# -- logs ----------------------------------------------------------------------------------------
def aged(logs: LogFiles, job_id: str, out_age: float, err_age: float | None = None) -> None:
    logs.create(job_id)
    logs.stderr(job_id).write_bytes(b"")  # (the runtime makes it at the job's first output there)
    now = time.time()
    os.utime(logs.stdout(job_id), (now - out_age, now - out_age))
    age = out_age if err_age is None else err_age
    os.utime(logs.stderr(job_id), (now - age, now - age))


def test_the_log_sweep_spares_running_and_recent_jobs(tmp_path):
    logs = LogFiles(tmp_path / "logs")
    logs.prepare()
    aged(logs, "a" * 32, 100)  # ended long ago: goes
    aged(logs, "b" * 32, 100)  # silent but running here: stays
    aged(logs, "c" * 32, 1)  # recent: stays
    aged(logs, "d" * 32, 100, err_age=1)  # wrote to stderr lately: stays
    aged(logs, "e" * 32, 100)
    logs.mark_ended("e" * 32)  # a long silent job that ended just now: stays
    (tmp_path / "logs" / "notes.txt").write_text("not ours")
    os.utime(tmp_path / "logs" / "notes.txt", (0, 0))
    sweep = LogSweep(logs, 10.0, running=lambda: {"b" * 32})
    assert sweep.sweep() == 2
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == sorted(
        [f"{j * 32}.{s}" for j in "bcde" for s in ("out", "err")] + ["notes.txt"])


def test_creating_the_logs_again_makes_them_recent(tmp_path):
    logs = LogFiles(tmp_path)
    aged(logs, "a" * 32, 100)
    assert logs.written_before(time.time() - 10) == ["a" * 32]
    logs.create("a" * 32)  # the job's next attempt, on this node again: appends to them
    assert logs.written_before(time.time() - 10) == []
