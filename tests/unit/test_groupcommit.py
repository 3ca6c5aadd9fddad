"""Group commit (groupcommit.py) against a fake store that records transactions: concurrent
writes share transactions, every caller gets its own outcome, one failing guard does not
fail the others, an etcd failure reaches every caller of its batch, and etcd's op limit holds."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lclusterd.cluster.groupcommit import GroupCommit
from lclusterd.cluster.kv import Absent, Put, TxnResult
from lclusterd.errors import StoreUnavailable


class FakeStore:
    """Keys that exist; a transaction succeeds when no Absent compare names one of them. With
    `hold` set, the first transaction waits until `hold` more callers are queued behind it, so
    the batching the tests look at does not depend on thread timing."""

    def __init__(self, existing=(), fail_with: Exception | None = None, hold: int = 0):
        self.existing = set(existing)
        self.fail_with = fail_with
        self.hold = hold
        self.group: GroupCommit | None = None
        self.txns: list[tuple[int, int]] = []  # (compares, ops) per transaction
        self.revision = 0
        self.lock = threading.Lock()

    def txn(self, compares, ops):
        if self.hold and not self.txns:
            deadline = time.monotonic() + 10
            while len(self.group._queue) < self.hold and time.monotonic() < deadline:
                time.sleep(0.001)
        with self.lock:
            self.txns.append((len(compares), len(ops)))
            if self.fail_with is not None:
                raise self.fail_with
            if any(c.key in self.existing for c in compares):
                return TxnResult(False, self.revision)
            self.revision += 1
            self.existing.update(op.key for op in ops)
            return TxnResult(True, self.revision)


def grouped(store: FakeStore, **kw) -> GroupCommit:
    store.group = GroupCommit(store, **kw)
    return store.group


def add(group: GroupCommit, name: str) -> TxnResult:
    return group.txn([Absent(f"jobs/{name}")], [Put(f"jobs/{name}", b"x"), Put(f"queue/{name}", b"x")])


def test_concurrent_writes_share_transactions_and_each_caller_gets_its_outcome():
    store = FakeStore(hold=15)  # the first write waits until the 15 other callers are queued
    group = grouped(store)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: add(group, f"j{i}"), range(16)))
    assert all(r.succeeded for r in results)
    assert store.txns == [(1, 2), (15, 30)]  # the first alone, the 15 that queued behind it in one
    assert {f"jobs/j{i}" for i in range(16)} <= store.existing


def test_alone_a_write_goes_out_at_once_as_its_own_transaction():
    store = FakeStore()
    result = add(grouped(store), "a")
    assert result.succeeded and store.txns == [(1, 2)]


def test_a_failing_guard_fails_only_its_own_request():
    store = FakeStore(existing={"jobs/taken"}, hold=7)
    group = grouped(store)
    names = [f"j{i}" for i in range(4)] + ["taken"] + [f"j{i}" for i in range(4, 7)]
    with ThreadPoolExecutor(8) as pool:
        results = dict(zip(names, pool.map(lambda n: add(group, n), names)))
    assert not results["taken"].succeeded
    assert all(results[n].succeeded for n in names if n != "taken")
    assert (7, 14) in store.txns  # the batch with the taken key was tried whole, then one by one


def test_an_etcd_failure_reaches_every_caller_of_its_batch():
    store = FakeStore(fail_with=StoreUnavailable("etcd at x is unavailable"), hold=7)
    group = grouped(store)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(add, group, f"j{i}") for i in range(8)]
    for future in futures:
        with pytest.raises(StoreUnavailable):
            future.result()
    assert store.txns == [(1, 2), (7, 14)]
    store.fail_with = None
    assert add(group, "after").succeeded  # nothing stuck: the next caller leads again


def test_a_transaction_never_exceeds_the_op_limit():
    store = FakeStore(hold=15)
    group = grouped(store, max_ops=10)
    with ThreadPoolExecutor(16) as pool:
        assert all(r.succeeded for r in pool.map(lambda i: add(group, f"j{i}"), range(16)))
    assert store.txns == [(1, 2), (5, 10), (5, 10), (5, 10)]  # 15 queued: three batches of 5 (10 ops)


def test_a_transaction_never_exceeds_the_byte_limit():
    """Adds of large specs share transactions only as far as etcd's request size allows."""
    store = FakeStore(hold=7)
    group = grouped(store, max_bytes=1000)
    big = lambda i: group.txn([Absent(f"jobs/b{i}")], [Put(f"jobs/b{i}", b"x" * 300)])  # noqa: E731 - ~310 bytes each
    with ThreadPoolExecutor(8) as pool:
        assert all(r.succeeded for r in pool.map(big, range(8)))
    assert store.txns == [(1, 1), (3, 3), (3, 3), (1, 1)]  # 7 queued: at most 3 a transaction
    assert group.txn([], [Put("jobs/huge", b"x" * 2000)]).succeeded  # one alone larger than the limit still goes
