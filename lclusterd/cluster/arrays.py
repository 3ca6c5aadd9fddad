"""Arrays (-array) and batches (-add -): many jobs written by one call, in a handful of
transactions.

An array is a group record under pools/<uuid> of kind "array" (model.PoolRecord: the spec,
created_at, max_running, members as index -> job uuid) plus one ordinary QUEUED job per
index, each naming the array (record.pool), its index (record.array_index) and the array's %K
(record.array_limit, which the prime's scheduler reads from the queue entry), with
LCLUSTER_ARRAY_INDEX and LCLUSTER_ARRAY_ID added to its environment. Reading, waiting on,
killing and removing an array is a pool's (pools.py, retention.py): only the labels differ.

The write is a pool's too (pools.write_chunk, plan_chunks): chunks of up to 42 members (3
puts, jobs/, queue/ and the listed/ key, and 1 compare each), up to IN_FLIGHT of them at once, the array record with the last
chunk once the others have landed, so the array exists, and its id is returned, only once
every member does; the prime may start the first chunks' members before the last is written. If etcd fails between chunks, the members already written are
cancelled (best effort) and the caller gets the error; a member that outlives that (etcd
down, daemon crashed) runs as an ordinary job whose `pool` names no record.

A batch is the same without a group record: its jobs are independent, written in chunks of
42 in the order given; a failure part way cancels those written, as for an array.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

from lclusterd import limits
from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.kv import MAX_TXN_OPS, Put
from lclusterd.cluster.listing import index_put
from lclusterd.cluster.pools import cancel_written, plan_chunks, write_chunk
from lclusterd.errors import StoreUnavailable
from lclusterd.model import ARRAY, JobRecord, JobSpec, PoolRecord, new_job_id

log = logging.getLogger(__name__)

KEY_BYTES = 128  # what a member's key adds to its value, at most, in a transaction's size
# Member chunks sent at once: etcd puts concurrent transactions in one raft entry and one fsync.
IN_FLIGHT = 8


def member_spec(spec: JobSpec, array_id: str, index: int | str) -> JobSpec:
    """The spec of member `index`: the array's, with its environment variables added (the
    template the members are encoded from, _member_encoder)."""
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
                  ) -> tuple[PoolRecord, list[str]]:
        """Write an array of `spec` over indexes first..last (checked by admission); its record
        and its member ids in index order. StoreUnavailable (the members written are cancelled)."""
        now = self.jobs.added_at()
        array = PoolRecord(id=new_job_id(), spec=spec, created_at=now, owner=owner, kind=ARRAY, max_running=max_running)
        ids = [uuid.uuid4().hex for _ in range(first, last + 1)]
        array.members = {str(index): job_id for index, job_id in zip(range(first, last + 1), ids)}
        encode = _member_encoder(JobRecord(id="", spec=spec, created_at=now, pool=array.id, array_limit=max_running,
                                           owner=owner), array.id)
        hint = owner.encode(errors="surrogateescape")  # (listing.index_put's value)
        self._write(array, [(job_id, encode(job_id, index), Put(self.keys.listed(now, index, job_id), hint))
                            for index, job_id in zip(range(first, last + 1), ids)])
        log.info("array %s: %d member(s), %d-%d%s", array.id, len(ids), first, last,
                 f" at most {max_running} at once" if max_running else "")
        return array, ids

    def add_batch(self, specs: list[JobSpec], owner: str = "") -> list[JobRecord]:
        """Write one QUEUED job per spec (each admitted), in order. StoreUnavailable (the jobs
        written are cancelled)."""
        now = self.jobs.added_at()
        records = [JobRecord(id=new_job_id(), spec=spec, created_at=now, owner=owner) for spec in specs]
        self._write(None, [(r.id, r.to_bytes(), index_put(self.keys, r)) for r in records])
        return records

    def _write(self, group: PoolRecord | None, members: list[tuple[str, bytes, Put]]) -> None:
        """The members (id, encoded record, listed/ key) in chunks, up to IN_FLIGHT transactions at
        once, then the group's record with the last chunk; on a failure the members written are
        cancelled."""
        listed = members[0][2]
        member_bytes = 2 * (max(len(raw) for _, raw, _ in members) + KEY_BYTES) + len(listed.key) + len(listed.value)
        group_bytes = len(group.to_bytes()) + KEY_BYTES if group is not None else 0
        plan = plan_chunks(len(members), MAX_TXN_OPS, member_bytes, group_bytes)
        starts = [sum(plan[:i]) for i in range(len(plan))]
        chunks = [members[start:start + size] for start, size in zip(starts, plan)]
        written: list[str] = []
        try:
            with ThreadPoolExecutor(IN_FLIGHT) as pool:
                futures = [(chunk, pool.submit(write_chunk, self.store, self.keys, None, chunk)) for chunk in chunks[:-1]]
                failure = None
                for chunk, future in futures:
                    try:
                        _landed(future.result())
                        written += [job_id for job_id, *_ in chunk]
                    except StoreUnavailable as exc:
                        failure = failure or exc
                if failure is not None:
                    raise failure
            _landed(write_chunk(self.store, self.keys, group, chunks[-1]))
        except StoreUnavailable:
            kind, group_id = ("array", group.id) if group is not None else ("batch", "")
            cancel_written(self.jobs, written, group_id, kind)
            raise


def _landed(succeeded: bool) -> None:
    if not succeeded:  # (the jobs/ key of a fresh uuid4 existed: never in practice)
        raise StoreUnavailable("a fresh job id was taken in etcd; try again")


def _member_encoder(template: JobRecord, array_id: str):
    """encode(job_id, index) -> the member's record as JSON bytes: the template encoded once with
    random stand-ins for the three values that differ, which are then replaced (json.dumps of each
    member cost about 60 us, a replace about 1 us; the stand-ins, fresh uuid4s, occur nowhere else)."""
    id_mark, index_mark, number_mark = uuid.uuid4().hex, uuid.uuid4().hex, 10**15 + uuid.uuid4().int % 10**14
    template.id = id_mark
    template.spec = member_spec(template.spec, array_id, index_mark)
    template.array_index = number_mark
    raw = template.to_bytes()
    id_bytes, index_bytes = id_mark.encode(), f'"{index_mark}"'.encode()
    number_bytes = f'"array_index":{number_mark}'.encode()

    def encode(job_id: str, index: int) -> bytes:
        return (raw.replace(id_bytes, job_id.encode()).replace(index_bytes, b'"%d"' % index)
                .replace(number_bytes, b'"array_index":%d' % index))

    return encode
