"""Pools (-all-nodes): one copy of a job on every ready node, read, waited on and killed as one.

A pool is a record under pools/<uuid> (model.PoolRecord: the spec, created_at, and its members
as node -> job uuid) plus one ordinary job per member: a QUEUED record and queue entry like any
other, pinned to its node (spec.node) and naming the pool (record.pool). The prime places a
member like any pinned job, and its life (assignment, LOST and retries, kill, logs) is a job's.
A pool's state is never stored: it is summed up from its members' records on every read
(model.pool_outcome), so it cannot disagree with them.

"Ready" = registered (nodes/<name> under a live lease) and not draining (no drain/<name>),
and for a spec with an image, publishing that image; read when the pool is added. Each member's write compares its node's nodes/<name> mod revision
with the one read, so a node that died or re-registered meanwhile fails the transaction and the
rest of the pool is written again without it: the members are the nodes ready at the commit. (A
node that starts draining in that very instant is not compared; its member waits for the
undrain, like any job pinned there.) Each member's write also requires its jobs/<uuid> to be
absent, so a transaction that etcd applied but whose answer was lost, and that the store
retried on another etcd member, can never be applied twice.

One transaction writes the pool record and all its members whenever they fit: etcd allows
MAX_TXN_OPS (128) operations and as many compares per transaction; a member costs 3 puts
(jobs/, queue/ and its listed/ key) and 2 compares, the pool record 1 of each, so up to 42
members go in one transaction with their pool. A larger pool is written as chunks of 42
members, the pool record with the last (plan_chunks): the pool exists, and its id is
returned, only once every member does, and the chunks are queued in node order as they land (the prime may start the first
members before the last are written). If etcd fails between chunks, the members already
written are cancelled (best effort; the caller gets the error, so nobody knows the pool's id);
one that outlives that (etcd down, daemon crashed) runs as an ordinary job whose `pool` names
no pool record.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from lclusterd.cluster import decode
from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.listing import index_put
from lclusterd.cluster.node import ready_nodes
from lclusterd.cluster.placement import Needs
from lclusterd.cluster.kv import MAX_TXN_BYTES, MAX_TXN_OPS, Absent, Compare, ModIs, Op, Put
from lclusterd.cluster.store import Store
from lclusterd.errors import (InvalidSpec, JobFinished, JobNotFound, LclusterdError, MalformedRecord, NoReadyNode, RecordError,
                              StoreUnavailable)
from lclusterd.model import ASSIGNED, LOST, RUNNING, JobRecord, JobSpec, PoolRecord, new_job_id, pool_outcome

log = logging.getLogger(__name__)

MEMBER_OPS = 3  # puts per member: jobs/<uuid>, queue/<uuid> and its listed/ key (compares: jobs/ absent, nodes/ unchanged)
MAX_REPLANS = 5  # the ready nodes changed under a write this often in a row: give up ("try again")


def plan_chunks(members: int, max_ops: int = MAX_TXN_OPS, member_bytes: int = 0, pool_bytes: int = 0,
                max_bytes: int = MAX_TXN_BYTES) -> list[int]:
    """How many members each transaction writes, in order; the last one also writes the pool
    record (1 put + 1 compare), so it holds at most (max_ops - 1) // MEMBER_OPS members, the others
    max_ops // MEMBER_OPS. One transaction for up to 42 members (at the default 128: both 42), then
    chunks of 42, the last with the pool record ([42, 1] for 43; [3, 0] for 3 at max_ops 9). With `member_bytes` (what one member's keys and values
    take) and `pool_bytes` (the pool record's), each also stays within `max_bytes` (at least one
    member a chunk), so a pool of a large spec is written in smaller chunks."""
    per_chunk, with_pool = max_ops // MEMBER_OPS, (max_ops - 1) // MEMBER_OPS
    if member_bytes:
        per_chunk = min(per_chunk, max(1, max_bytes // member_bytes))
        with_pool = min(with_pool, max(0, (max_bytes - pool_bytes) // member_bytes))
    sizes = []
    left = members
    while left > with_pool:
        take = min(per_chunk, left)
        sizes.append(take)
        left -= take
    sizes.append(left)
    return sizes


def _sizes(pool: PoolRecord, members: dict[str, JobRecord]) -> tuple[int, int]:
    """(bytes of one member's writes, bytes of the pool record's), keys included, for plan_chunks."""
    member = next(iter(members.values()))
    full = PoolRecord(pool.id, pool.spec, pool.created_at, {node: m.id for node, m in members.items()}, pool.owner)
    return 2 * (len(member.to_bytes()) + 128) + 128 + len(member.owner.encode()), len(full.to_bytes()) + 128


def write_chunk(store: Store, keys: Keys, group: PoolRecord | None, chunk: list[tuple[str, bytes, Put]],
                guards: list[Compare] = ()) -> bool:
    """One transaction: the chunk's members (job id, encoded record and listed/ key each: jobs/,
    queue/ and the key, jobs/ absent), the group's record when given, and `guards` (a pool's:
    each member's node still the registration read). False when a guard failed (the caller
    plans again). Also used for arrays and batches (arrays.py)."""
    compares: list[Compare] = [*guards]
    ops: list[Op] = []
    for job_id, raw, listed in chunk:
        compares.append(Absent(keys.job(job_id)))
        ops += [Put(keys.job(job_id), raw), Put(keys.queue(job_id), raw), listed]
    if group is not None:
        compares.append(Absent(keys.pool(group.id)))
        ops.append(Put(keys.pool(group.id), group.to_bytes()))
    if store.txn(compares, ops).succeeded:
        return True
    # Whether a transaction whose guard failed had in fact been applied by an earlier try (its
    # answer lost, the store retried it): its first key exists, and under a fresh uuid4 that can
    # only be our own write (as in Jobs.add).
    return store.get(keys.job(chunk[0][0]) if chunk else keys.pool(group.id)) is not None


def cancel_written(jobs: Jobs, job_ids: list[str], group_id: str, kind: str = "pool") -> None:
    """Cancel (or kill) the members of a group whose writing failed part way (best effort)."""
    for job_id in job_ids:
        try:
            jobs.kill(job_id)
        except (JobFinished, JobNotFound):
            pass
        except LclusterdError as exc:
            log.warning("%s %s was not written; its member %s may still run as a job on its own: %s", kind, group_id,
                        job_id, exc)


class Pools:
    """Adds, reads and kills pools. Thread-safe (holds no state but the store)."""

    def __init__(self, jobs: Jobs):
        self.jobs = jobs
        self.store: Store = jobs.store
        self.keys: Keys = jobs.keys

    def _meeting(self, needs: Needs) -> set[str]:
        """The registered nodes that meet `needs` (a malformed registration meets none)."""
        kvs, _ = self.store.get_prefix(self.keys.nodes_prefix)
        names = set()
        for kv in kvs:
            try:
                info = decode.node(kv.key, kv.value, kv.mod_revision)
            except RecordError:
                continue
            if needs.met_by(info.subnet, info.volume_roots):
                names.add(info.name)
        return names

    # -- add -------------------------------------------------------------------------------
    def add(self, spec: JobSpec, owner: str = "") -> tuple[PoolRecord, list[JobRecord]]:
        """Write a pool of `spec` with one member per ready node (see the module docstring).
        The spec must have been admitted (admission.py). InvalidSpec for a pinned spec,
        NoReadyNode when no node is ready, StoreUnavailable."""
        if spec.node:
            raise InvalidSpec(f"a pool runs on every ready node; it cannot be pinned to node {spec.node} as well")
        pool = PoolRecord(id=new_job_id(), spec=spec, created_at=self.jobs.added_at(), owner=owner)
        ready, why = ready_nodes(self.store, self.keys, spec.image)
        needs = Needs.of(spec)
        if needs is not None and ready:  # members only where their network and volumes can be had
            meeting = self._meeting(needs)
            ready = [(node, revision) for node, revision in ready if node in meeting]
            why = "no ready node offers what it needs (-net bridge, or --volume-root for its volumes)"
        if not ready:
            raise NoReadyNode(f"no node can run the pool: {why}")
        revisions = dict(ready)
        members = {node: JobRecord(id=new_job_id(), spec=replace(spec, node=node), created_at=pool.created_at, pool=pool.id,
                                   owner=owner) for node in revisions}
        left = sorted(revisions)  # nodes whose member is not written yet
        written: list[str] = []
        replans = 0
        sizes = _sizes(pool, members)
        try:
            while True:
                plan = plan_chunks(len(left), MAX_TXN_OPS, *sizes)
                size = plan[0]
                chunk, last = left[:size], len(plan) == 1  # (the last chunk may hold the pool record alone)
                if last:
                    pool.members = {node: members[node].id for node in written + chunk}
                if self._write(pool if last else None, [members[n] for n in chunk], revisions):
                    written += chunk
                    left = left[size:]
                    if last:
                        break
                    continue
                replans += 1
                if replans > MAX_REPLANS:
                    raise StoreUnavailable("the ready nodes kept changing while the pool was written; try again")
                ready, why = ready_nodes(self.store, self.keys, spec.image)  # a node died or re-registered meanwhile
                revisions = dict(ready)
                left = [node for node in left if node in revisions]
                if not left and not written:
                    raise NoReadyNode(f"no node can run the pool: {why}")
        except StoreUnavailable:
            self._cancel_written([members[n].id for n in written], pool.id)
            raise
        log.info("pool %s: %d member(s) on %s", pool.id, len(pool.members), ", ".join(sorted(pool.members)))
        return pool, [members[node] for node in sorted(pool.members)]

    def _write(self, pool: PoolRecord | None, chunk: list[JobRecord], revisions: dict[str, int]) -> bool:
        guards = [ModIs(self.keys.node(m.spec.node), revisions[m.spec.node]) for m in chunk]
        return write_chunk(self.store, self.keys, pool, [(m.id, m.to_bytes(), index_put(self.keys, m)) for m in chunk],
                           guards)

    def _cancel_written(self, job_ids: list[str], pool_id: str) -> None:
        cancel_written(self.jobs, job_ids, pool_id)

    # -- reads -----------------------------------------------------------------------------
    def get(self, pool_id: str) -> PoolRecord | None:
        """The pool, None if there is none; MalformedRecord (a JobNotFound) if its record is not
        a valid one of that id."""
        kv = self.store.get(self.keys.pool(pool_id))
        if kv is None:
            return None
        try:
            return decode.pool(kv.key, kv.value, kv.mod_revision)
        except RecordError as error:
            raise MalformedRecord(pool_id, str(error), "pool") from None

    def members(self, pool: PoolRecord) -> list[tuple[JobRecord, int]]:
        """Every member's record and mod revision, in node order. A member whose record is gone
        (deleted by hand), malformed or another pool's (a forged pool record that lists other
        jobs acts on none of them) stands in as LOST with revision 0, so the pool can still end."""
        labels = pool.labels()
        ids = [pool.members[label] for label in labels]
        found = self.store.get_many([self.keys.job(job_id) for job_id in ids])
        result = []
        for label, job_id, kv in zip(labels, ids, found):
            try:
                record = decode.job_kv(kv) if kv is not None else None
                missing = "its record is missing from etcd"
            except RecordError as error:
                record, missing = None, f"its record in etcd is malformed ({error})"
            if record is not None and record.pool != pool.id:
                record, missing = None, f"its record in etcd is not a member of pool {pool.id}"
            if record is None:
                node = "" if pool.is_array else label
                stand_in = JobRecord(id=job_id, spec=replace(pool.spec, node=node), state=LOST, node=node,
                                     created_at=pool.created_at, pool=pool.id, error=missing,
                                     array_index=int(label) if pool.is_array else None)
                result.append((stand_in, 0))
            else:
                result.append((record, kv.mod_revision))
        return result

    def with_kill_requests(self, members: list[JobRecord]) -> list[JobRecord]:
        """The members, with kill_requested set on assigned or running ones that have a kill/ key."""
        asked = [m for m in members if m.state in (ASSIGNED, RUNNING)]
        if not asked:
            return members
        found = self.store.get_many([self.keys.kill(m.id) for m in asked])
        pending = {m.id for m, kv in zip(asked, found) if kv is not None}
        return [replace(m, kill_requested=True) if m.id in pending else m for m in members]

    # -- kill --------------------------------------------------------------------------------
    def kill(self, pool: PoolRecord) -> list[JobRecord]:
        """Cancel each queued member, ask each assigned or running one's node to kill it, in
        batched transactions; the members afterwards. JobFinished when every member has ended."""
        found = self.members(pool)
        members = [record for record, _ in found]
        if all(m.terminal for m in members):
            raise JobFinished(pool.id, pool_outcome(members)[0], kind=pool.kind)
        return self.jobs.kill_many(found)  # (a stand-in is LOST: left alone)
