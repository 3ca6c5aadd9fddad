"""The prime's upkeep of -list's index (cluster/listindex.py) against an in-memory etcd: records
written without a key (an upgrade, an older node, by hand) get the key their record gives,
keys without a record or that do not parse go, a second key for one job goes, then
listed-complete is written; all under the prime guard, each key guarded by its record's
revision; nothing is read but two counts while the index is whole."""

from __future__ import annotations

import pytest

from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Delete, ModIs, Put
from lclusterd.cluster.listindex import ListedIndex
from lclusterd.cluster.listing import index_key
from lclusterd.model import EXITED, JobRecord, JobSpec, new_job_id
from memstore import MemStore

KEYS = Keys("/t")


@pytest.fixture
def store() -> MemStore:
    s = MemStore()
    s.put(KEYS.prime, b"p")
    return s


def keeper(store: MemStore) -> ListedIndex:
    index = ListedIndex(store, KEYS, 1.0)
    index._prime_revision = store.get(KEYS.prime).mod_revision  # as start() does, without its thread
    return index


def old_record(store: MemStore, owner: str = "ann", created_at: float = 1000.5, **changes) -> JobRecord:
    """A record as an older version wrote it: no listed/ key."""
    record = JobRecord(id=new_job_id(), spec=JobSpec("true"), created_at=created_at, owner=owner, **changes)
    store.put(KEYS.job(record.id), record.to_bytes())
    return record


def listed(store: MemStore) -> dict[str, bytes]:
    return {kv.key: kv.value for kv in store.get_prefix(KEYS.listed_prefix)[0]}


def test_an_upgrade_indexes_every_record_then_marks_the_index_complete(store):
    jobs = Jobs(store, KEYS)
    new = jobs.add(JobRecord(id=new_job_id(), spec=JobSpec("new"), created_at=2000.0, owner="bob"))
    old = [old_record(store, created_at=1000.0 + i) for i in range(300)]
    member = old_record(store, pool="a" * 32, array_index=4, state=EXITED)
    prime = store.get(KEYS.prime).mod_revision
    before = len(store.txns)

    assert keeper(store).run_pass() == 301
    assert listed(store) == {index_key(KEYS, r): r.owner.encode() for r in [new, *old, member]}
    assert store.get(KEYS.listed_complete).value == b"1"
    writes = store.txns[before:]
    assert all(compares[0] == ModIs(KEYS.prime, prime) and ok and len(ops) <= 128 and len(compares) <= 128
               for compares, ops, ok in writes)
    puts = [(c, op) for compares, ops, _ in writes[:-1] for c, op in zip(compares[1:], ops)]
    assert all(c == ModIs(KEYS.job(JobRecord.from_bytes(store.get(KEYS.job(KEYS.listed_parts(op.key)[2])).value,
                                                         KEYS.listed_parts(op.key)[2]).id), c.revision)
               for c, op in puts)  # each key guarded by its record's revision
    assert [kv.key for kv in store.get_prefix(KEYS.jobs_prefix)[0]] == sorted(KEYS.job(r.id) for r in [new, *old, member])
    assert jobs.list(None, 3) == sorted([new, *old, member], key=lambda r: (r.created_at, r.array_index or 0))[-3:]


def test_while_the_index_is_whole_a_pass_reads_two_counts(store):
    jobs = Jobs(store, KEYS)
    for _ in range(5):
        jobs.add(JobRecord(id=new_job_id(), spec=JobSpec("x"), created_at=jobs.added_at()))
    index = keeper(store)
    assert index.run_pass() == 0 and store.get(KEYS.listed_complete) is not None
    reads, writes = len(store.ranges), len(store.txns)
    assert index.run_pass() == 0 and (len(store.ranges), len(store.txns)) == (reads, writes)


def test_keys_without_their_record_or_that_do_not_parse_go_and_a_second_key_for_one_job(store):
    jobs = Jobs(store, KEYS)
    kept = jobs.add(JobRecord(id=new_job_id(), spec=JobSpec("x"), created_at=50.0, owner="ann"))
    store.put(KEYS.listed_complete, b"1")
    gone = KEYS.listed(60.0, None, new_job_id())  # its record deleted by hand
    second = KEYS.listed(70.0, 2, kept.id)  # another key naming a real job
    garbage = [KEYS.listed_prefix + "zz", KEYS.listed_prefix + "\udcff", KEYS.listed_prefix + "1/2/3"]
    for key in [gone, second, *garbage]:
        store.put(key, b"root")
    assert keeper(store).run_pass() == 5
    assert listed(store) == {index_key(KEYS, kept): b"ann"}


def test_a_record_that_is_not_valid_gets_no_key_and_is_not_looked_at_again(store):
    store.put(KEYS.listed_complete, b"1")
    store.put(KEYS.job(new_job_id()), b"not json")
    store.put(KEYS.job("not-a-job-id"), b"{}")
    index = keeper(store)
    assert index.run_pass() == 0 and listed(store) == {}
    reads = len(store.ranges)
    assert index.run_pass() == 0 and len(store.ranges) == reads  # the counts differ as they did: nothing to do
    late = old_record(store)  # a count that changes again is repaired again
    assert index.run_pass() == 1 and listed(store) == {index_key(KEYS, late): b"ann"}


def test_a_record_removed_while_the_pass_runs_gets_no_key(store):
    record = old_record(store)
    real = store.get_many

    def removed_meanwhile(keys):  # retention removes the record between the read and the write
        found = real(keys)
        store.txn([], [Delete(KEYS.job(record.id))])
        return found

    store.get_many = removed_meanwhile
    index = keeper(store)
    assert index.run_pass() == 0 and listed(store) == {}
    assert index._settled is None  # the pass did not do all it meant to: the next one looks again


def test_a_deposed_prime_writes_nothing(store):
    old_record(store)
    index = keeper(store)
    store.put(KEYS.prime, b"q")  # another node won the election
    before = len(store.txns)
    assert index.run_pass() == -1
    assert listed(store) == {} and store.get(KEYS.listed_complete) is None
    assert all(not ok for _, _, ok in store.txns[before:])


def test_a_failed_batch_is_sent_again_one_fix_at_a_time(store):
    records = [old_record(store, created_at=100.0 + i) for i in range(3)]
    real = store.txn
    changed = records[1]

    def one_changes(compares, ops, else_ops=()):
        if len(ops) == 3:  # the batch: job 1 changes just before it lands
            real([], [Put(KEYS.job(changed.id), changed.to_bytes())])
        return real(compares, ops, else_ops)

    store.txn = one_changes
    index = keeper(store)
    assert index.run_pass() == 2
    assert set(listed(store)) == {index_key(KEYS, records[0]), index_key(KEYS, records[2])}
    assert store.get(KEYS.listed_complete) is None  # not until every record has its key
    store.txn = real
    assert index.run_pass() == 1 and len(listed(store)) == 3 and store.get(KEYS.listed_complete) is not None
