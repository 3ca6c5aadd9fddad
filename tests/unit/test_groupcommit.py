"""Group commit (groupcommit.py) against a fake store that records transactions: concurrent
writes share transactions, every caller gets its own outcome, one failing guard does not
fail the others, an etcd failure reaches every caller of its batch, and etcd's op limit holds."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lclusterd.cluster.groupcommit import GroupCommit
from lclusterd.cluster.store import Absent, Put, TxnResult
from lclusterd.errors import StoreUnavailable


class FakeStore:
    """Keys that exist; a transaction succeeds when no Absent compare names one of them."""

    def __init__(self, existing=(), fail_with: Exception | None = None, delay: float = 0.02):
        self.existing = set(existing)
        self.fail_with = fail_with
        self.delay = delay
        self.txns: list[tuple[int, int]] = []  # (compares, ops) per transaction
        self.revision = 0
        self.lock = threading.Lock()

    def txn(self, compares, ops):
        time.sleep(self.delay)  # a round trip, so that other callers queue up meanwhile
        with self.lock:
            self.txns.append((len(compares), len(ops)))
            if self.fail_with is not None:
                raise self.fail_with
            if any(c.key in self.existing for c in compares):
                return TxnResult(False, self.revision)
            self.revision += 1
            self.existing.update(op.key for op in ops)
            return TxnResult(True, self.revision)


def add(group: GroupCommit, name: str) -> TxnResult:
    return group.txn([Absent(f"jobs/{name}")], [Put(f"jobs/{name}", b"x"), Put(f"queue/{name}", b"x")])


def test_concurrent_writes_share_transactions_and_each_caller_gets_its_outcome():
    store = FakeStore()
    group = GroupCommit(store)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: add(group, f"j{i}"), range(64)))
    assert all(r.succeeded for r in results)
    assert len(store.txns) < 64 and sum(ops for _, ops in store.txns) == 128
    assert {f"jobs/j{i}" for i in range(64)} <= store.existing


def test_alone_a_write_goes_out_at_once_as_its_own_transaction():
    store = FakeStore(delay=0)
    result = add(GroupCommit(store), "a")
    assert result.succeeded and store.txns == [(1, 2)]


def test_a_failing_guard_fails_only_its_own_request():
    store = FakeStore(existing={"jobs/taken"})
    group = GroupCommit(store)
    names = ["taken"] + [f"j{i}" for i in range(15)]
    with ThreadPoolExecutor(16) as pool:
        results = dict(zip(names, pool.map(lambda n: add(group, n), names)))
    assert not results["taken"].succeeded
    assert all(results[n].succeeded for n in names[1:])


def test_an_etcd_failure_reaches_every_caller_of_its_batch():
    group = GroupCommit(FakeStore(fail_with=StoreUnavailable("etcd at x is unavailable")))
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(add, group, f"j{i}") for i in range(8)]
    for future in futures:
        with pytest.raises(StoreUnavailable):
            future.result()
    assert add(GroupCommit(FakeStore(delay=0)), "after").succeeded  # nothing stuck


def test_a_transaction_never_exceeds_the_op_limit():
    store = FakeStore()
    group = GroupCommit(store, max_ops=10)
    with ThreadPoolExecutor(16) as pool:
        assert all(r.succeeded for r in pool.map(lambda i: add(group, f"j{i}"), range(40)))
    assert all(compares <= 10 and ops <= 10 for compares, ops in store.txns)
