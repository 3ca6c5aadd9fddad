"""How a pool is written, against a real etcd and no daemons: more ready nodes than one etcd
transaction holds (chunks first, the pool record last), a node that goes away between the read
of the ready nodes and the write, a transaction applied twice by the store's retry, etcd failing
between two chunks, and no ready node."""

from __future__ import annotations

import uuid

import pytest

from lclusterd.cluster import pools as pools_module
from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.node import ready_nodes
from lclusterd.cluster.pools import Pools, plan_chunks
from lclusterd.cluster.kv import Put
from lclusterd.cluster.store import Store
from lclusterd.errors import NoReadyNode, StoreUnavailable
from lclusterd.model import CANCELLED, QUEUED, JobRecord, JobSpec, NodeInfo, PoolRecord


@pytest.fixture
def world(etcd):
    store = Store(etcd.endpoint)
    keys = Keys(f"/test-{uuid.uuid4().hex[:8]}")
    lease = store.grant(60)
    yield store, keys, lease, Pools(Jobs(store, keys))
    store.revoke(lease)
    store.close()


def register(store: Store, keys: Keys, lease: int, names: list[str]) -> None:
    for name in names:
        store.put(keys.node(name), NodeInfo(name, f"localhost:{len(name)}", 4).to_bytes(), lease)


def test_a_pool_larger_than_one_transaction_is_written_in_chunks_pool_record_last(world):
    store, keys, lease, pools = world
    names = [f"n{i:03d}" for i in range(100)]
    register(store, keys, lease, names)
    store.txn([], [Put(keys.drain("n007"), b"1"), Put(keys.drain("n042"), b"1")])
    pool, members = pools.add(JobSpec("uname -n", retries=1))

    ready = [n for n in names if n not in ("n007", "n042")]
    assert [m.spec.node for m in members] == ready and plan_chunks(len(ready)) == [42, 42, 14]
    stored = store.get(keys.pool(pool.id))
    assert PoolRecord.from_bytes(stored.value, pool.id).members == {m.spec.node: m.id for m in members}
    records = store.get_many([keys.job(m.id) for m in members])
    queued = store.get_many([keys.queue(m.id) for m in members])
    read = [JobRecord.from_bytes(kv.value, Keys.last(kv.key)) for kv in records]
    assert all(r.pool == pool.id and r.state == QUEUED for r in read)
    assert all(q is not None and q.mod_revision == r.mod_revision for q, r in zip(queued, records))  # the prime's guard
    revisions = sorted({kv.mod_revision for kv in records})
    assert len(revisions) == 3  # three transactions: 42 members twice, then 14 with the pool record
    assert stored.mod_revision == revisions[-1] and [sum(kv.mod_revision == r for kv in records) for r in revisions] == [42, 42, 14]
    listed = store.get_many([keys.listed(r.created_at, None, r.id) for r in read])  # -list's index, in each record's transaction
    assert [kv.mod_revision for kv in listed] == [kv.mod_revision for kv in records]
    assert [r.id for r, _ in pools.members(pool)] == [m.id for m in members]


def test_a_node_gone_between_read_and_write_is_left_out(world, monkeypatch):
    store, keys, lease, pools = world
    register(store, keys, lease, ["a", "b"])
    reads = []

    def stale(store_, keys_, image=""):  # the first read still sees "ghost", which has died since (no nodes/ghost key)
        reads.append(1)
        found, why = ready_nodes(store_, keys_, image)
        return (found + [("ghost", 12345)], why) if len(reads) == 1 else (found, why)

    monkeypatch.setattr(pools_module, "ready_nodes", stale)
    pool, members = pools.add(JobSpec("true"))
    assert len(reads) == 2 and [m.spec.node for m in members] == ["a", "b"]
    assert sorted(PoolRecord.from_bytes(store.get(keys.pool(pool.id)).value, pool.id).members) == ["a", "b"]
    kvs, _ = store.get_prefix(keys.jobs_prefix)
    assert sorted(JobRecord.from_bytes(kv.value, Keys.last(kv.key)).spec.node for kv in kvs) == ["a", "b"]  # nothing for ghost


def test_a_transaction_the_store_applied_twice_counts_once(world, monkeypatch):
    store, keys, lease, pools = world
    register(store, keys, lease, ["a", "b"])
    real_txn = store.txn

    def applied_then_retried(compares, ops, else_ops=()):  # the answer to the first try was lost; the retry's guard fails
        real_txn(compares, ops, else_ops)
        return real_txn(compares, ops, else_ops)

    monkeypatch.setattr(store, "txn", applied_then_retried)
    pool, members = pools.add(JobSpec("true"))
    assert [m.spec.node for m in members] == ["a", "b"]
    kvs, _ = store.get_prefix(keys.jobs_prefix)
    written = [*kvs, store.get(keys.pool(pool.id)), *store.get_prefix(keys.queue_prefix)[0]]
    assert len(written) == 5 and all(kv.mod_revision == kv.create_revision for kv in written)  # each written once
    assert sorted(kv.key for kv in kvs) == sorted(keys.job(m.id) for m in members)


def test_etcd_failing_between_chunks_cancels_the_members_written(world, monkeypatch):
    store, keys, lease, pools = world
    register(store, keys, lease, [f"n{i:03d}" for i in range(50)])  # two transactions: 42, then 8 with the pool
    real_txn = store.txn
    calls = []

    def second_fails(compares, ops, else_ops=()):
        calls.append(1)
        if len(calls) == 2:
            raise StoreUnavailable("etcd at test is unavailable (UNAVAILABLE: test)")
        return real_txn(compares, ops, else_ops)

    monkeypatch.setattr(store, "txn", second_fails)
    with pytest.raises(StoreUnavailable):
        pools.add(JobSpec("true"))
    kvs, _ = store.get_prefix(keys.jobs_prefix)
    assert len(kvs) == 42 and {JobRecord.from_bytes(kv.value, Keys.last(kv.key)).state for kv in kvs} == {CANCELLED}
    assert store.get_prefix(keys.queue_prefix)[0] == [] and store.get_prefix(keys.pools_prefix)[0] == []


def test_no_ready_node(world):
    store, keys, lease, pools = world
    with pytest.raises(NoReadyNode, match="no node can run the pool: no node is registered"):
        pools.add(JobSpec("true"))
    register(store, keys, lease, ["a"])
    store.put(keys.drain("a"), b"1")
    with pytest.raises(NoReadyNode, match="every registered node is draining"):
        pools.add(JobSpec("true"))
    assert store.get_prefix(keys.jobs_prefix)[0] == [] and store.get_prefix(keys.pools_prefix)[0] == []
