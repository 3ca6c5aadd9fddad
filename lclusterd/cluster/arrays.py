"""Arrays (-array) and batches (-add -): many jobs written by one call, in a handful of
transactions.

An array is a group record under pools/<uuid> of kind "array" (model.PoolRecord: the spec,
created_at, max_running, members as index -> job uuid) plus one ordinary QUEUED job per
index, each naming the array (record.pool), its index (record.array_index) and the array's %K
(record.array_limit, which the prime's scheduler reads from the queue entry), with
LCLUSTER_ARRAY_INDEX and LCLUSTER_ARRAY_ID added to its environment. Reading, waiting on,
killing and removing an array is a pool's (pools.py, retention.py): only the labels differ.

The write is a pool's too (pools.write_chunk, plan_chunks): chunks of up to 64 members (2
puts and 1 compare each), the array record last, so the array exists, and its id is
returned, only once every member does; the prime may start the first chunk's members before
the last is written. If etcd fails between chunks, the members already written are
cancelled (best effort) and the caller gets the error; a member that outlives that (etcd
down, daemon crashed) runs as an ordinary job whose `pool` names no record.

A batch is the same without a group record: its jobs are independent, written in chunks of
64 in the order given; a failure part way cancels those written, as for an array.
"""

from __future__ import annotations

import logging
import time

from lclusterd import limits
from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.kv import MAX_TXN_OPS
from lclusterd.cluster.pools import cancel_written, plan_chunks, write_chunk
from lclusterd.errors import StoreUnavailable
from lclusterd.model import ARRAY, JobRecord, JobSpec, PoolRecord, new_job_id

log = logging.getLogger(__name__)

KEY_BYTES = 128  # what a member's key adds to its value, at most, in a transaction's size


def member_spec(spec: JobSpec, array_id: str, index: int) -> JobSpec:
    """The spec of member `index`: the array's, with its environment variables added (a copy
    without dataclasses.replace: this runs once per member of arrays of thousands)."""
    new = object.__new__(JobSpec)
    new.__dict__.update(spec.__dict__)
    new.env = {**spec.env, limits.ARRAY_INDEX_ENV: str(index), limits.ARRAY_ID_ENV: array_id}
    return new


class Arrays:
    """Writes arrays and batches. Thread-safe (holds no state but the store)."""

    def __init__(self, jobs: Jobs):
        self.jobs = jobs
        self.store = jobs.store
        self.keys = jobs.keys

    def add_array(self, spec: JobSpec, first: int, last: int, max_running: int, owner: str = ""
                  ) -> tuple[PoolRecord, list[JobRecord]]:
        """Write an array of `spec` over indexes first..last (checked by admission); its record
        and its members in index order. StoreUnavailable (the members written are cancelled)."""
        now = time.time()
        array = PoolRecord(id=new_job_id(), spec=spec, created_at=now, owner=owner, kind=ARRAY, max_running=max_running)
        members = [JobRecord(id=new_job_id(), spec=member_spec(spec, array.id, index), created_at=now, pool=array.id,
                             array_index=index, array_limit=max_running, owner=owner) for index in range(first, last + 1)]
        array.members = {str(m.array_index): m.id for m in members}
        self._write(array, members)
        log.info("array %s: %d member(s), %d-%d%s", array.id, len(members), first, last,
                 f" at most {max_running} at once" if max_running else "")
        return array, members

    def add_batch(self, specs: list[JobSpec], owner: str = "") -> list[JobRecord]:
        """Write one QUEUED job per spec (each admitted), in order. StoreUnavailable (the jobs
        written are cancelled)."""
        now = time.time()
        records = [JobRecord(id=new_job_id(), spec=spec, created_at=now, owner=owner) for spec in specs]
        self._write(None, records)
        return records

    def _write(self, group: PoolRecord | None, members: list[JobRecord]) -> None:
        encoded = [(m, m.to_bytes()) for m in members]
        member_bytes = 2 * (max(len(raw) for _, raw in encoded) + KEY_BYTES)
        group_bytes = len(group.to_bytes()) + KEY_BYTES if group is not None else 0
        left, written = encoded, 0
        try:
            while True:
                plan = plan_chunks(len(left), MAX_TXN_OPS, member_bytes, group_bytes)
                size, last = plan[0], len(plan) == 1  # (64 members: [64, 0], the record alone last)
                if not write_chunk(self.store, self.keys, group if last else None, left[:size]):
                    raise StoreUnavailable("a fresh job id was taken in etcd; try again")  # (uuid4: never in practice)
                written += size
                left = left[size:]
                if last:
                    return
        except StoreUnavailable:
            kind, group_id = ("array", group.id) if group is not None else ("batch", "")
            cancel_written(self.jobs, [m.id for m in members[:written]], group_id, kind)
            raise
