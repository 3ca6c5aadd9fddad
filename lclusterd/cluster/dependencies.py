"""-after: a queued job starts only once every parent (a job, pool or array) ended EXITED with
code 0; if one ends any other way, the job is CANCELLED with the reason (Slurm's afterok).

Parents must exist when the job is added (the API checks), so no cycle can be formed: a job
can only name jobs older than itself. The prime's scheduler decides on each pass: it reads the
parents' states here (`Parents`) and `verdict` turns them into what happens to the job, so a
parent that ended before its child was added is seen at the child's first pass. A job waiting
for parents says so in its record ("after <uuid> (RUNNING)"), which -check shows.

A parent's end is what wakes its children: its assignment is deleted, or its queue entry, and
the scheduler's next pass reads it. States are cached: an ended parent's for good (it cannot
change), another's for STALE_AFTER seconds, so a pass per watch event does not re-read a big
array's members each time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from lclusterd.cluster import decode
from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.pools import Pools
from lclusterd.errors import MalformedRecord, RecordError
from lclusterd.model import EXITED, TERMINAL, pool_outcome

STALE_AFTER = 0.5  # seconds a parent's unfinished state is used before it is read again
ENDED_KEPT = 100_000  # ended parents' states remembered (then forgotten all at once and read again)
SHOWN = 3  # parents named in a waiting note


@dataclass(frozen=True)
class ParentState:
    """A parent as its children see it: its state (summed up for a pool or an array), and how
    it ended. state "" when there is no such job any more (`error` says why)."""

    id: str
    state: str
    exit_code: int | None = None
    error: str = ""
    kind: str = "job"

    @property
    def succeeded(self) -> bool:
        return self.state == EXITED and self.exit_code == 0


@dataclass(frozen=True)
class Verdict:
    """What to do with a job that has parents: start it (ready), cancel it (with `cancel` as
    its error), or let it wait (with `waiting` as its note)."""

    ready: bool = False
    cancel: str = ""
    waiting: str = ""


def verdict(parents: list[ParentState]) -> Verdict:
    """The job's fate from its parents' states (in the order -after named them). Pure."""
    pending = []
    for parent in parents:
        if not parent.state:
            return Verdict(cancel=f"not started: its -after parent {parent.id} {parent.error or 'does not exist'}")
        if parent.state in TERMINAL:
            if parent.succeeded:
                continue
            code = f" with exit code {parent.exit_code}" if parent.state == EXITED and parent.exit_code is not None else ""
            why = f": {parent.error}" if parent.error else ""
            return Verdict(cancel=f"not started: its -after parent {parent.kind} {parent.id} ended {parent.state}{code}{why}")
        pending.append(parent)
    if not pending:
        return Verdict(ready=True)
    shown = ", ".join(f"{p.id} ({p.state})" for p in pending[:SHOWN])
    more = f" and {len(pending) - SHOWN} more" if len(pending) > SHOWN else ""
    return Verdict(waiting=f"after {shown}{more}")


class Parents:
    """Reads parents' states for the scheduler (its thread only), with the caches above."""

    def __init__(self, jobs: Jobs):
        self.jobs = jobs
        self._pools: Pools | None = None  # made at first use
        self._ended: dict[str, ParentState] = {}
        self._seen: dict[str, tuple[float, ParentState]] = {}

    def states(self, ids: list[str]) -> dict[str, ParentState]:
        """Each id's state (StoreUnavailable when etcd cannot be read)."""
        now = time.monotonic()
        self._seen = {i: seen for i, seen in self._seen.items() if now - seen[0] < STALE_AFTER}
        found = {i: self._ended.get(i) or self._seen.get(i, (0, None))[1] for i in ids}
        unread = [i for i, state in found.items() if state is None]
        if unread:
            kvs = self.jobs.store.get_many([self.jobs.keys.job(i) for i in unread])
            for parent, kv in zip(unread, kvs):
                found[parent] = state = self._job(parent, kv) if kv is not None else self._group(parent)
                if state.state in TERMINAL:
                    if len(self._ended) >= ENDED_KEPT:
                        self._ended.clear()
                    self._ended[parent] = state
                else:
                    self._seen[parent] = (now, state)
        return found

    @staticmethod
    def _job(parent: str, kv) -> ParentState:
        try:
            record = decode.job_kv(kv)
        except RecordError as exc:
            return ParentState(parent, "", error=f"has a malformed record ({exc})")
        return ParentState(parent, record.state, record.exit_code, record.error)

    def _group(self, parent: str) -> ParentState:
        if self._pools is None:
            self._pools = Pools(self.jobs)
        try:
            group = self._pools.get(parent)
        except MalformedRecord as exc:
            return ParentState(parent, "", error=f"has a malformed record ({exc.reason})")
        if group is None:
            return ParentState(parent, "", error="no longer exists (removed, or never written)")
        state, decided = pool_outcome([record for record, _ in self._pools.members(group)])
        if decided is None:
            return ParentState(parent, state, 0 if state == EXITED else None, kind=group.kind)
        return ParentState(parent, state, decided.exit_code, f"member {decided.id} ended {decided.state}", group.kind)
