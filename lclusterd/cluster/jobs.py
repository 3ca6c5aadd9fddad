"""Job records in etcd: add, read, list, kill, and guarded transitions.

Every state change is one Change: a compare on the record's mod revision plus the writes of
that transition. `commit` sends many Changes in one transaction (the common case: every guard
holds) and falls back to one transaction each when a guard fails, so one stale job never
blocks the others. Whoever loses a guard re-reads; two actors can never both win.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from lclusterd import metrics
from lclusterd.cluster import decode
from lclusterd.cluster.groupcommit import GroupCommit
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.listing import AddClock, Listing, Row, fold, index_put
from lclusterd.cluster.kv import MAX_TXN_BYTES, MAX_TXN_OPS, Absent, Compare, Delete, ModIs, Op, Put, txn_bytes
from lclusterd.cluster.store import Store
from lclusterd.errors import JobFinished, JobNotFound
from lclusterd.model import ASSIGNED, CANCELLED, QUEUED, JobRecord

log = logging.getLogger(__name__)

KILLS_PER_TXN = MAX_TXN_OPS // 3  # a queued job's cancel is 3 operations
KILLS_IN_FLIGHT = 8


@dataclass
class Change:
    """One guarded transition: apply `ops` if jobs/<job_id> still has `expect_revision`."""

    job_id: str
    expect_revision: int
    record: JobRecord
    ops: list[Op] = field(default_factory=list)


class Jobs:
    """Reads and guarded writes of job records. Thread-safe (holds no state but the store)."""

    def __init__(self, store: Store, keys: Keys):
        self.store = store
        self.keys = keys
        self._adds = GroupCommit(store)  # concurrent adds share transactions
        self.added_at = AddClock()  # created_at of a new job (listing.py: -list's order)
        self.listing = Listing(store, keys, added=self.added_at)

    # -- transitions as Changes (pure apart from the key layout) ---------------------------
    def assign(self, record: JobRecord, revision: int, node: str) -> Change:
        new = record.moved_to(ASSIGNED, node=node, assigned_at=time.time(), waiting="")
        raw = new.to_bytes()
        ops = [Delete(self.keys.queue(record.id)), Put(self.keys.job(record.id), raw), Put(self.keys.assign(node, record.id), raw)]
        return Change(record.id, revision, new, ops)

    def update(self, new: JobRecord, revision: int) -> Change:
        """A non-terminal change of an assigned or running job (e.g. ASSIGNED -> RUNNING)."""
        return Change(new.id, revision, new, [Put(self.keys.job(new.id), new.to_bytes())])

    def finish(self, new: JobRecord, revision: int) -> Change:
        """A terminal record written by the node that ran (or refused) the job."""
        ops = [Put(self.keys.job(new.id), new.to_bytes()), Delete(self.keys.assign(new.node, new.id)), Delete(self.keys.kill(new.id)),
               self.ended(new)]
        return Change(new.id, revision, new, ops)

    def ended(self, new: JobRecord) -> Put:
        """The retention index entry every terminal write carries (see keys.py: ended/)."""
        return Put(self.keys.ended(new.finished_at or time.time(), new.id), new.pool.encode())

    def give_back(self, record: JobRecord, revision: int) -> Change:
        """ASSIGNED -> QUEUED for a job this node never started (it is shutting down)."""
        new = record.moved_to(QUEUED, node="", assigned_at=None)
        raw = new.to_bytes()
        ops = [Put(self.keys.job(new.id), raw), Put(self.keys.queue(new.id), raw), Delete(self.keys.assign(record.node, new.id))]
        return Change(new.id, revision, new, ops)

    def lose(self, record: JobRecord, revision: int, reason: str) -> Change:
        """ASSIGNED/RUNNING on a dead node -> the next attempt (QUEUED) or LOST; written by
        the prime. The dead node's assignment goes either way (fencing: its guard now fails)."""
        new = record.lost_on(reason)
        ops: list[Op] = [Put(self.keys.job(new.id), new.to_bytes()), Delete(self.keys.assign(record.node, new.id)),
                         Delete(self.keys.kill(new.id))]
        ops.append(Put(self.keys.queue(new.id), new.to_bytes()) if new.state == QUEUED else self.ended(new))
        return Change(new.id, revision, new, ops)

    def note_waiting(self, record: JobRecord, revision: int, why: str) -> Change:
        """A QUEUED job no node can take: say why in the record (and its queue entry, whose
        mod revision must stay the record's)."""
        new = replace(record, waiting=why)
        raw = new.to_bytes()
        return Change(new.id, revision, new, [Put(self.keys.job(new.id), raw), Put(self.keys.queue(new.id), raw)])

    def cancel(self, record: JobRecord, revision: int, reason: str) -> Change:
        """QUEUED -> CANCELLED with `reason` (a kill, or a parent of -after that failed)."""
        new = record.moved_to(CANCELLED, error=reason, waiting="")
        ops = [Put(self.keys.job(new.id), new.to_bytes()), Delete(self.keys.queue(new.id)), self.ended(new)]
        return Change(new.id, revision, new, ops)

    # -- commit ------------------------------------------------------------------------------
    def commit(self, changes: list[Change], guard: list[Compare] = ()) -> dict[str, int | None]:
        """Apply changes; returns job id -> the record's new mod revision, or None where the
        guard failed (someone else changed the job first, or a `guard` compare, e.g. "the
        prime key is still ours", does not hold). Raises StoreUnavailable."""
        results: dict[str, int | None] = {}
        guard = list(guard)
        try:
            for batch in _batches(changes, len(guard)):
                compares = guard + [ModIs(self.keys.job(c.job_id), c.expect_revision) for c in batch]
                ops = [op for c in batch for op in c.ops]
                outcome = self.store.txn(compares, ops)
                if outcome.succeeded:
                    results.update((c.job_id, outcome.revision) for c in batch)
                    continue
                for c in batch:
                    if len(batch) == 1:
                        results[c.job_id] = None
                        break
                    single = self.store.txn(guard + [ModIs(self.keys.job(c.job_id), c.expect_revision)], c.ops)
                    results[c.job_id] = single.revision if single.succeeded else None
        finally:  # the ends written, also when a later batch found etcd gone
            for c in changes:
                if c.record.terminal and results.get(c.job_id) is not None:
                    metrics.job_ended(c.record.state)
        return results

    # -- user requests -----------------------------------------------------------------------
    def add(self, record: JobRecord) -> JobRecord:
        """Write a new job's record (QUEUED), its queue entry and its listed/ key in one
        transaction, shared with the adds of other clients arriving meanwhile (groupcommit.py).
        The spec must have been admitted (admission.py)."""
        raw = record.to_bytes()
        key = self.keys.job(record.id)
        # The guard fails only if jobs/<uuid> exists: with a fresh uuid4 that is our own write,
        # applied by an earlier try whose answer was lost (the store retried on another member).
        self._adds.txn([Absent(key)], [Put(key, raw), Put(self.keys.queue(record.id), raw), index_put(self.keys, record)])
        return record

    def add_assigned(self, record: JobRecord, node: str, guard: list[Compare]) -> tuple[JobRecord, int | None]:
        """Write a new job straight to ASSIGNED on `node` under the prime's `guard`: the record
        and its revision, or None for the revision if the guard failed (this node stopped
        being the prime meanwhile; then add it to the queue instead)."""
        assigned = record.moved_to(ASSIGNED, node=node, assigned_at=time.time())
        raw = assigned.to_bytes()
        key = self.keys.job(record.id)
        result = self._adds.txn([Absent(key), *guard], [Put(key, raw), Put(self.keys.assign(node, record.id), raw),
                                                        index_put(self.keys, record)])
        if result.succeeded:
            return assigned, result.revision
        kv = self.store.get(key)  # (as in add) an earlier try of ours may have landed
        return assigned, kv.mod_revision if kv is not None else None

    def get(self, job_id: str) -> tuple[JobRecord, int]:
        """The record and its mod revision; JobNotFound if there is none, MalformedRecord (a
        JobNotFound) if it is not a valid record of that id."""
        kv = self.store.get(self.keys.job(job_id))
        if kv is None:
            raise JobNotFound(job_id)
        return decode.job_or_missing(kv, job_id), kv.mod_revision

    def list(self, states: set[str] | None = None, limit: int = 0, owner: str | None = None) -> list[JobRecord]:
        """Records in -list's order, oldest first (listing.py: by created_at, then array index and
        id), optionally only in `states` and only `owner`'s; the newest `limit` when given, read
        from the listed/ index. Malformed records are left out (decode.py logs them)."""
        return self._rows(states, limit, owner, True)

    def rows(self, states: set[str] | None = None, limit: int = 0, owner: str | None = None) -> list[Row]:
        """As `list`, with each array folded into one row (its members, by index) at its place;
        `states` and `limit` then count rows, an array by its summed-up state."""
        return self._rows(states, limit, owner, False)

    def _rows(self, states: set[str] | None, limit: int, owner: str | None, expand: bool) -> list[Row]:
        if limit > 0:
            newest = self.listing.newest(states, limit, owner, expand)
            if newest is not None:
                return newest
        return fold(self.listing.everything(owner), states, limit, expand)

    def kill_requested(self, job_id: str) -> bool:
        return self.store.get(self.keys.kill(job_id)) is not None

    def kill(self, job_id: str) -> JobRecord:
        """Cancel a queued job here and now; ask the owning node to kill an assigned or running
        one (kill/<uuid>). JobFinished if it has already ended."""
        while True:
            record, revision = self.get(job_id)
            if record.terminal:
                raise JobFinished(job_id, record.state)
            guard = [ModIs(self.keys.job(job_id), revision)]
            if record.state == QUEUED:
                change = self.cancel(record, revision, "cancelled by request before it started")
                new, ops = change.record, change.ops
            else:  # ASSIGNED or RUNNING: the node owns the record now
                new = replace(record, kill_requested=True)
                ops: list[Op] = [Put(self.keys.kill(job_id), record.node.encode())]
            if self.store.txn(guard, ops).succeeded:
                if new.terminal:
                    metrics.job_ended(new.state)
                return new
            log.debug("kill %s: record changed under us, retrying", job_id)

    def kill_many(self, found: list[tuple[JobRecord, int]]) -> list[JobRecord]:
        """Kill (as `kill`) each job not ended of `found` (records with their mod revisions, as
        read), in batched transactions: a pool's or an array's members. Those that changed since
        they were read are killed one by one. Each job's record afterwards, in the order given."""
        changes = [_kill_change(self, record, revision) for record, revision in found if not record.terminal]
        results: dict[str, int | None] = {}
        # several transactions in flight (etcd commits concurrent ones together): one after the
        # other, the cancels of a 10,000-member array took 11 s on a loaded VM, near the call's 15
        with ThreadPoolExecutor(KILLS_IN_FLIGHT) as pool:
            for part in pool.map(self.commit, [changes[i:i + KILLS_PER_TXN] for i in range(0, len(changes), KILLS_PER_TXN)]):
                results.update(part)
        after = {c.job_id: c.record for c in changes if results.get(c.job_id) is not None}
        done = []
        for record, _ in found:
            if record.terminal or record.id in after:
                done.append(after.get(record.id, record))
                continue
            try:
                done.append(self.kill(record.id))
            except JobFinished:  # it ended just now
                done.append(self.get(record.id)[0])
            except JobNotFound:
                done.append(record)
        return done


def _kill_change(jobs: Jobs, record: JobRecord, revision: int) -> Change:
    """Jobs.kill's write for one job as a Change: a queued one cancelled, another's node asked."""
    if record.state == QUEUED:
        return jobs.cancel(record, revision, "cancelled by request before it started")
    return Change(record.id, revision, replace(record, kill_requested=True),
                  [Put(jobs.keys.kill(record.id), record.node.encode())])


def _batches(changes: list[Change], guard_compares: int = 0, max_bytes: int = MAX_TXN_BYTES):
    """The changes cut into transactions etcd takes: at most MAX_TXN_OPS operations and as
    many compares each (etcd limits the two apart), and at most `max_bytes` of keys and values
    (etcd limits a request's size: a batch of jobs with large specs goes out in several); a
    change's compare is its record's revision."""
    batch: list[Change] = []
    compares, ops, size = guard_compares, 0, 0
    for change in changes:
        change_bytes = txn_bytes([], change.ops)
        if batch and (compares + 1 > MAX_TXN_OPS or ops + len(change.ops) > MAX_TXN_OPS or size + change_bytes > max_bytes):
            yield batch
            batch, compares, ops, size = [], guard_compares, 0, 0
        batch.append(change)
        compares += 1
        ops += len(change.ops)
        size += change_bytes
    if batch:
        yield batch
