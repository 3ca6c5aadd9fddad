"""Retention: ended jobs are kept for --keep, then removed, and etcd's history is compacted.

The prime runs a pass every `interval_for(keep)` while it is the prime (started and stopped
with the scheduler). A pass range-reads ended/ (keys.py: one key per terminal record, written
in the record's own transaction, sorted by end time) up to now - keep, so it never scans the
jobs; it removes them in batches, each one transaction under the prime guard: jobs/<uuid>, its
ended/ key, its listed/ key (-list's index, made from the record: listing.py), and a tombstone
removed/<uuid> under one lease per pass with TTL = keep (at least
MIN_TOMBSTONE_SECONDS), so that for another keep period Check, Wait, Logs and Kill can say the job was removed rather than unknown
(`removal_of`). A pool record goes once none of its members' records is left.

Each pass then compacts etcd to the revision the previous pass saw: watches never need anything
older than one interval (one that does re-reads: WatchHandler.on_resync), and etcd reuses the
space of the removed keys and of the history, so its database stops growing.

Every node also sweeps its own log files (LogSweep): those of jobs not running here whose files
were last written, or marked ended, more than keep ago.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from typing import Callable

from lclusterd.cluster import decode
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.listing import index_key as index_key_of
from lclusterd.cluster.logs import LogFiles
from lclusterd.cluster.kv import MAX_TXN_OPS, Delete, KeyValue, ModIs, Op, Put
from lclusterd.cluster.store import Store
from lclusterd.errors import JobRemoved, RecordError, StoreUnavailable
from lclusterd.records import JOB_ID
from lclusterd.units import format_duration

log = logging.getLogger(__name__)

# A tombstone is a few dozen bytes; with a short --keep it still outlives a script that asks a
# little late (or a busy machine between two calls), instead of turning "removed" into "unknown".
MIN_TOMBSTONE_SECONDS = 600
JOB_OPS = 4  # per removed job: delete jobs/<uuid>, its ended/ and listed/ keys, put removed/<uuid>
JOBS_PER_TXN = MAX_TXN_OPS // JOB_OPS
POOLS_PER_TXN = MAX_TXN_OPS // 2  # delete pools/<uuid>, put removed/<uuid>


def interval_for(keep: float) -> float:
    """Seconds between passes (and log sweeps): a quarter of keep, within 0.5 s and 5 min."""
    return min(max(keep / 4, 0.5), 300.0)


def tombstone(finished_at: float, removed_at: float, keep: float, kind: str = "job") -> bytes:
    return json.dumps({"finished_at": finished_at, "removed_at": removed_at, "keep": keep, "kind": kind},
                      separators=(",", ":")).encode()


def removal_of(store: Store, keys: Keys, job_id: str) -> JobRemoved | None:
    """The error to answer for an id with no record, when retention removed it (None if not,
    or if its tombstone has expired too)."""
    kv = store.get(keys.removed(job_id))
    if kv is None:
        return None
    try:
        data = json.loads(kv.value)
        return JobRemoved(job_id, float(data["finished_at"]), float(data["removed_at"]), format_duration(float(data["keep"])),
                          str(data.get("kind") or "job"))
    except (ValueError, TypeError, KeyError):
        log.warning("ignoring a malformed tombstone %s", kv.key)
        return None


class Loop:
    """A thread calling `work` every `interval` seconds until stopped; each start gets its own
    stop flag, so a thread still finishing after stop() never sees a later start as its own."""

    def __init__(self, name: str, interval: float, work: Callable[[threading.Event], None]):
        self.name, self.interval, self._work = name, interval, work
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopped = stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(stopped,), name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self, stopped: threading.Event) -> None:
        while not stopped.is_set():
            try:
                self._work(stopped)
            except StoreUnavailable as exc:
                log.warning("%s: %s", self.name, exc)
            except Exception:  # a bug in one pass must not end the passes for good
                log.exception("%s failed", self.name)
            stopped.wait(self.interval)


class Retention:
    """The prime's retention passes: start(prime_revision) on election, stop() when deposed."""

    def __init__(self, store: Store, keys: Keys, keep: float, clock: Callable[[], float] = time.time):
        self.store, self.keys, self.keep = store, keys, keep
        self._clock = clock
        self._prime_revision = 0
        self._previous = 0  # the revision the previous pass saw: compacted to at this pass
        self._loop = Loop("retention", interval_for(keep), self.run_pass)

    def start(self, prime_revision: int) -> None:
        self._prime_revision, self._previous = prime_revision, 0
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def _guard(self) -> list[ModIs]:
        return [ModIs(self.keys.prime, self._prime_revision)]

    def run_pass(self, stopped: threading.Event | None = None) -> int:
        """Remove every job that ended more than keep ago, then compact to the previous pass's
        revision. Returns how many jobs were removed; a failed prime guard ends the pass at once
        (this node is no longer the prime: it neither removes nor compacts anything more)."""
        now = self._clock()
        end = self.keys.ended_before(now - self.keep)
        removed, lease, seen = 0, 0, 0
        while True:
            if stopped is not None and stopped.is_set():  # deposed or shutting down
                return removed
            kvs, revision = self.store.get_range(self.keys.ended_prefix, end, limit=JOBS_PER_TXN)
            seen = seen or revision
            if not kvs:
                break
            lease = lease or self.store.grant(math.ceil(max(self.keep, MIN_TOMBSTONE_SECONDS)))
            if not self._remove_jobs(kvs, lease, now):
                log.warning("retention: the prime key is no longer ours; removing nothing more")
                return removed
            removed += len(kvs)
            if len(kvs) < JOBS_PER_TXN:
                break
        if removed:
            log.info("retention: removed %d job(s) that ended more than %s ago", removed, format_duration(self.keep))
        if self._previous:
            self.store.compact(self._previous)
        self._previous = seen
        return removed

    def _remove_jobs(self, kvs: list[KeyValue], lease: int, now: float) -> bool:
        """One transaction for a batch of expired ended/ keys; then the pools they emptied."""
        ops: list[Op] = []
        pools: dict[str, float] = {}  # pool -> when its latest member in this batch ended
        for kv, finished_at, job_id, pool_id, listed in self._expired(kvs):
            ops.append(Delete(kv.key))
            if job_id:
                ops += [Delete(self.keys.job(job_id)), Put(self.keys.removed(job_id), tombstone(finished_at, now, self.keep), lease)]
            if listed:
                ops.append(Delete(listed))
            if pool_id:
                pools[pool_id] = finished_at
        if not self.store.txn(self._guard(), ops).succeeded:
            return False
        return self._remove_empty_pools(pools, lease, now)

    def _expired(self, kvs: list[KeyValue]) -> list[tuple[KeyValue, float, str, str, str]]:
        """Each index key with its end time, the job to remove ("" for none), its pool ("") and its
        listed/ key (made from its record, "" without one: listindex.py removes a key left so).

        The index is input like the records: a job is removed only when its record is gone
        already or is a record lclusterd wrote that ended when its key says, so an index key
        written by hand never removes a queued, running or recent job; such a key (and one
        that is not an index key at all, which left in place would stop every pass here) is
        removed alone."""
        parsed: list[tuple[KeyValue, float, str]] = []
        for kv in kvs:
            try:
                finished_at, job_id = self.keys.ended_parts(kv.key)
            except ValueError:
                finished_at, job_id = 0.0, ""
            if not JOB_ID.match(job_id):
                log.warning("retention: removing a malformed index key %s", kv.key)
                job_id = ""
            parsed.append((kv, finished_at, job_id))
        found = self.store.get_many([self.keys.job(job_id) for _, _, job_id in parsed if job_id])
        records = iter(found)
        expired = []
        for kv, finished_at, job_id in parsed:
            record_kv = next(records) if job_id else None
            pool_id, listed = kv.value.decode(errors="replace"), ""
            if record_kv is not None:
                job_id, pool_id, listed = self._ended_as_indexed(kv.key, record_kv, job_id)
            expired.append((kv, finished_at, job_id, pool_id if JOB_ID.match(pool_id) else "", listed))
        return expired

    def _ended_as_indexed(self, index_key: str, record_kv: KeyValue, job_id: str) -> tuple[str, str, str]:
        """(job id, pool id, listed/ key) to remove for an index key whose job has a record, or
        ("", "", "")."""
        try:
            record = decode.job_kv(record_kv)
        except RecordError:  # logged once; not ours to remove
            return "", "", ""
        if not record.terminal or self.keys.ended(record.finished_at or 0.0, job_id) != index_key:
            log.warning("retention: removing the index key %s, which does not match job %s (%s)", index_key, job_id,
                        record.state)
            return "", "", ""
        return job_id, record.pool, index_key_of(self.keys, record)

    def _remove_empty_pools(self, pools: dict[str, float], lease: int, now: float) -> bool:
        """Remove the pool records none of whose members' records is left."""
        empty: list[tuple[str, float]] = []
        found = self.store.get_many([self.keys.pool(pool_id) for pool_id in pools])
        for (pool_id, finished_at), kv in zip(pools.items(), found):
            if kv is None:
                continue
            try:
                members = decode.pool(kv.key, kv.value, kv.mod_revision).member_ids()
            except RecordError:  # logged once; left for whoever wrote it
                continue
            if not any(self.store.get_many([self.keys.job(job_id) for job_id in members])):
                empty.append((pool_id, finished_at))
        for first in range(0, len(empty), POOLS_PER_TXN):
            ops: list[Op] = []
            for pool_id, finished_at in empty[first:first + POOLS_PER_TXN]:
                stone = tombstone(finished_at, now, self.keep, "pool")
                ops += [Delete(self.keys.pool(pool_id)), Put(self.keys.removed(pool_id), stone, lease)]
            if not self.store.txn(self._guard(), ops).succeeded:
                return False
        return True


class LogSweep:
    """Every node: removes the log files of its jobs that ended more than keep ago."""

    def __init__(self, logs: LogFiles, keep: float, running: Callable[[], set[str]], clock: Callable[[], float] = time.time):
        self.logs, self.keep = logs, keep
        self._running = running
        self._clock = clock
        self._loop = Loop("log sweep", interval_for(keep), lambda _stopped: self.sweep())

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def sweep(self) -> int:
        """Remove the files of every job not running here whose files were all last written
        before now - keep; returns how many files were removed."""
        cutoff = self._clock() - self.keep
        old = self.logs.written_before(cutoff)
        if not old:
            return 0
        running = self._running()  # read after the listing: a job started since is spared
        removed = sum(self.logs.remove(job_id, cutoff) for job_id in old if job_id not in running)
        if removed:
            log.info("log sweep: removed %d log file(s) older than %s", removed, format_duration(self.keep))
        return removed
