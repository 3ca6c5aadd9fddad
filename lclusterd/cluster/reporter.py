"""The worker's write path: what happens to the jobs this node owns, written to etcd.

Reports (outcome.Update) are queued by whoever learns them (the runtime's event thread, the
worker) and written by one thread, in batches: each dirty job's record as last written plus
its unwritten updates is folded (outcome.fold) into the record to write, and the changes of a
batch go out in guarded transactions (Jobs.commit), so a job whose start and end are both
pending is written once. While etcd is unreachable the updates stay queued and are retried,
so no result is lost; and every terminal record is journaled (journal.py) before its first
try and dropped from the journal once etcd has it (or has rejected it), so a result also
survives the daemon stopping or dying before etcd answers: the next start writes it. A guard
that fails means someone else (a prime that declared this node dead) owns the job now: its
record is re-read, and unless it is still this node's attempt the job is forgotten and
`on_fenced` is told (the worker then kills its copy).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable

from lclusterd.cluster import outcome
from lclusterd.cluster.jobs import Change, Jobs
from lclusterd.cluster.journal import Journal
from lclusterd.cluster.linger import Linger
from lclusterd.errors import JobNotFound, StoreUnavailable
from lclusterd.model import ASSIGNED, QUEUED, RUNNING, JobRecord

log = logging.getLogger(__name__)

WRITE_BATCH = 200
_STOP = object()
_RETRY = object()  # look at the job again (its guard failed, its record was re-read)


@dataclass
class Owned:
    """A job this node owns: the record as last written and that write's revision."""

    record: JobRecord
    revision: int
    submitted: bool = False  # handed to the runtime
    submitted_at: float = 0.0  # when (time.monotonic), for the spawn latency
    kill_requested: bool = False
    pending: list[outcome.Update] = field(default_factory=list)  # not yet written


class OwnedJobs:
    """The jobs this node owns, by id; the worker and the reporter share it under `lock`."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._jobs: dict[str, Owned] = {}

    def get(self, job_id: str) -> Owned | None:
        return self._jobs.get(job_id)

    def add(self, owned: Owned) -> Owned:
        self._jobs[owned.record.id] = owned
        return owned

    def forget(self, job_id: str, owned: Owned | None = None) -> bool:
        """Drop the job (only if it is still `owned`, when given); whether it was there."""
        current = self._jobs.get(job_id)
        if current is None or (owned is not None and current is not owned):
            return False
        del self._jobs[job_id]
        return True

    def records(self) -> dict[str, JobRecord]:
        with self.lock:
            return {job_id: owned.record for job_id, owned in self._jobs.items()}

    def __len__(self) -> int:
        return len(self._jobs)


class Reporter:
    def __init__(self, jobs: Jobs, owned: OwnedJobs, on_fenced: Callable[[str], None], journal: Journal,
                 on_final: Callable[[str], None] = lambda job_id: None):
        """on_final(job_id): the job's record is final (this node wrote it terminal, or it was
        found terminal or gone when fenced); it must not raise (the worker seals the logs)."""
        self.jobs = jobs
        self.owned = owned
        self.on_fenced = on_fenced
        self.journal = journal
        self.on_final = on_final
        self.shutdown_note = ""  # the reason a job the node's shutdown killed gets
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_loop, name="worker writer", daemon=True)
        self._linger = Linger(WRITE_BATCH)  # under load, more updates per transaction

    def start(self) -> None:
        self._thread.start()

    def report(self, job_id: str, update: outcome.Update) -> None:
        self._queue.put((job_id, update))

    def stop(self, timeout: float) -> bool:
        """Write what is queued, then end; False if etcd stayed unreachable for `timeout`."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the write loop ------------------------------------------------------------------------
    def _write_loop(self) -> None:
        dirty: dict[str, None] = {}  # job ids with unwritten updates, in arrival order
        stopping = False
        backoff = 0.0
        while not (stopping and not dirty and self._queue.empty()):
            for item in self._take(None if not dirty else backoff):
                if item is _STOP:
                    stopping = True
                else:
                    self._note(dirty, *item)
            if dirty:
                try:
                    self._flush(dirty)
                    backoff = 0.0
                except StoreUnavailable as exc:
                    log.warning("cannot record job states yet: %s", exc)
                    backoff = min(max(backoff * 2, 0.05), 1.0)

    def _note(self, dirty: dict[str, None], job_id: str, update: object) -> None:
        with self.owned.lock:
            owned = self.owned.get(job_id)
            if owned is None:  # not ours (any more): fenced, or given back
                return
            if update is not _RETRY:
                owned.pending.append(update)  # type: ignore[arg-type]
            dirty[job_id] = None

    def _take(self, wait: float | None) -> list:
        """Up to WRITE_BATCH items; waits `wait` seconds for the first (None: forever)."""
        items = []
        try:
            items.append(self._queue.get_nowait() if wait == 0 else self._queue.get(timeout=wait))
        except queue.Empty:
            return items
        self._linger.before_batch(1 + self._queue.qsize())
        while len(items) < WRITE_BATCH:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _flush(self, dirty: dict[str, None]) -> None:
        changes: list[Change] = []
        with self.owned.lock:
            for job_id in list(dirty):
                owned = self.owned.get(job_id)
                change = self._change_for(owned) if owned is not None else None
                if change is None:
                    del dirty[job_id]
                else:
                    changes.append(change)
        if not changes:
            return
        self._journal([change.record for change in changes if change.record.terminal])
        results = self.jobs.commit(changes)  # StoreUnavailable: everything stays dirty
        self._linger.sent()
        with self.owned.lock:
            for change in changes:
                del dirty[change.job_id]
                self._written(change, results.get(change.job_id))

    def _journal(self, records: list[JobRecord]) -> None:
        """Journal each terminal record before it is written. A journal that cannot be written
        does not hold the write back: the result still goes to etcd, it only loses its
        protection against the daemon dying before etcd has it."""
        for record in records:
            try:
                self.journal.put(record)
            except (OSError, ValueError) as exc:
                log.warning("cannot journal the result of job %s (%s): %s", record.id, record.state, exc)

    def _change_for(self, owned: Owned) -> Change | None:
        new = outcome.fold(owned.record, owned.pending, owned.kill_requested, self.shutdown_note, owned.submitted)
        if isinstance(new, outcome.GiveBack):
            return self.jobs.give_back(owned.record, owned.revision)
        if new is owned.record:
            owned.pending.clear()
            return None
        return self.jobs.finish(new, owned.revision) if new.terminal else self.jobs.update(new, owned.revision)

    def _written(self, change: Change, revision: int | None) -> None:
        owned = self.owned.get(change.job_id)
        if owned is None:  # fenced while we wrote
            return
        if revision is None:
            self._fenced(change.job_id, owned)
            return
        owned.record, owned.revision = change.record, revision
        owned.pending.clear()
        if change.record.terminal:
            self.journal.remove(change.job_id)
        if change.record.terminal or change.record.state == QUEUED:
            self.owned.forget(change.job_id)
        if change.record.terminal:
            self.on_final(change.job_id)

    def _fenced(self, job_id: str, owned: Owned) -> None:
        """Our guard failed: re-read. If the job is still ours, retry later; else forget it."""
        try:
            record, revision = self.jobs.get(job_id)
        except JobNotFound:
            record, revision = None, 0
        except StoreUnavailable:
            self._queue.put((job_id, _RETRY))
            return
        if record is not None and same_attempt(record, owned.record) and record.state in (ASSIGNED, RUNNING):
            owned.record, owned.revision = record, revision
            self._queue.put((job_id, _RETRY))
            return
        log.warning("job %s attempt %d is no longer this node's (%s); its result is rejected and our copy stopped",
                    job_id, owned.record.attempt, f"{record.state}, attempt {record.attempt}" if record else "deleted")
        self.owned.forget(job_id, owned)
        self.journal.remove(job_id)  # etcd's record is the truth: our result was rejected
        self.on_fenced(job_id)
        if record is None or record.terminal:
            self.on_final(job_id)


def same_attempt(record: JobRecord, ours: JobRecord) -> bool:
    """Whether etcd's `record` is still the attempt this node runs (fencing by attempt number)."""
    return record.node == ours.node and record.attempt == ours.attempt
