"""Jobs.commit's cut of changes into transactions: etcd limits a transaction's operations and
its compares apart (128 each by default), so a full batch of the scheduler's assignments (4
operations and 1 compare each, plus the prime guard) is one transaction, not two."""

from lclusterd.cluster.jobs import Change, _batches
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import MAX_TXN_BYTES, MAX_TXN_OPS, Delete, Put
from lclusterd.cluster.scheduler import BATCH
from lclusterd.model import JobRecord, JobSpec

KEYS = Keys("/t")


def change(i: int, ops: int) -> Change:
    record = JobRecord(id=f"{i:032x}", spec=JobSpec("true"))
    return Change(record.id, 1, record, [Put(KEYS.job(record.id), b"") for _ in range(ops - 1)] + [Delete(KEYS.queue(record.id))])


def test_a_full_batch_of_assignments_with_the_prime_guard_is_one_transaction():
    assignments = [change(i, 3) for i in range(BATCH)]
    assert [len(b) for b in _batches(assignments, guard_compares=1)] == [BATCH]


def test_operations_and_compares_are_counted_apart():
    finishes = [change(i, 3) for i in range(MAX_TXN_OPS // 3 + 1)]  # 43 x 3 operations: one too many
    assert [len(b) for b in _batches(finishes)] == [42, 1]
    notes = [change(i, 1) for i in range(MAX_TXN_OPS + 1)]  # 129 compares
    assert [len(b) for b in _batches(notes, guard_compares=1)] == [MAX_TXN_OPS - 1, 2]
    assert list(_batches([])) == []


def big_change(i: int, value_bytes: int) -> Change:
    record = JobRecord(id=f"{i:032x}", spec=JobSpec("true"))
    return Change(record.id, 1, record, [Put(KEYS.job(record.id), b"x" * value_bytes), Put(KEYS.assign("n1", record.id), b"x" * value_bytes)])


def test_large_records_are_cut_by_bytes_too():
    """Jobs whose specs are near the limit (two records of up to ~512 KiB a change) go out one
    per transaction instead of one request etcd refuses; small ones still share one."""
    big = [big_change(i, 500 << 10) for i in range(3)]
    assert [len(b) for b in _batches(big, guard_compares=1)] == [1, 1, 1]
    mixed = [big_change(0, 300 << 10), big_change(1, 10), big_change(2, 300 << 10)]
    assert [len(b) for b in _batches(mixed)] == [2, 1]
    assert [len(b) for b in _batches(mixed, max_bytes=MAX_TXN_BYTES * 2)] == [3]
