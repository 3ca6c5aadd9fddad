"""-list from the listed/ index (cluster/listing.py) against an in-memory etcd: histories written
through the real write paths (single adds, adds placed at once, -add - batches, arrays, pools,
at clocks that tie, jump and step back) must list exactly as a full read of jobs/ sorted in
-list's order does, for every filter and limit, folded and expanded; keys someone else wrote
change nothing; the reads stay narrow; a user's listing reads only their records."""

from __future__ import annotations

import random
import weakref

import pytest

from lclusterd.cluster import decode
from lclusterd.cluster.arrays import Arrays
from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Delete, Put
from lclusterd.cluster.listing import AddClock, Listing, fold, order
from lclusterd.cluster.pools import Pools
from lclusterd.errors import RecordError
from lclusterd.model import (ASSIGNED, CANCELLED, EXITED, FAILED, QUEUED, RUNNING, JobRecord, JobSpec, NodeInfo,
                             new_job_id)
from memstore import MemStore

KEYS = Keys("/t")
START = 1_764_676_800.0  # the histories' first add
OWNERS = ["ann", "bob", "root"]


class Clock:
    """The nanoseconds AddClock reads, moved by the test (also backwards)."""

    def __init__(self, now: float):
        self.ns = int(now * 1e9)

    def __call__(self) -> int:
        return self.ns


def history(seed: int, adds: int, small: bool = False) -> tuple[Jobs, MemStore]:
    """`adds` adds of every kind by random owners, the clock moving by nothing, a microsecond, a
    millisecond, seconds, an hour or 5 s back between them; then some jobs change state (their
    records rewritten as a node would, the index untouched). `small`: batches and arrays of at
    most 42 and 12 (one transaction each), as for comparing with the order by creation revision."""
    rng = random.Random(seed)
    store = MemStore()
    for i in range(3):
        store.put(KEYS.node(f"n{i}"), NodeInfo(f"n{i}", "localhost:1", 4).to_bytes())
    jobs = Jobs(store, KEYS)
    clock = Clock(START)
    jobs.added_at = AddClock(clock)
    arrays, pools = Arrays(jobs), Pools(jobs)
    for step in range(adds):
        step_back = -5.0 if not small else 0.0
        clock.ns += int(rng.choice([0, 1e-6, 1e-3, 1.0, 3600.0, step_back]) * 1e9)
        owner, spec = rng.choice(OWNERS), JobSpec(f"job {step}")
        kind = rng.choice(["single"] * 4 + ["placed", "batch", "array", "pool"])
        if kind == "single":
            jobs.add(JobRecord(id=new_job_id(), spec=spec, created_at=jobs.added_at(), owner=owner))
        elif kind == "placed":
            jobs.add_assigned(JobRecord(id=new_job_id(), spec=spec, created_at=jobs.added_at(), owner=owner), "n1", [])
        elif kind == "batch":
            arrays.add_batch([JobSpec(f"job {step}.{i}") for i in range(rng.randint(1, 42 if small else 90))], owner)
        elif kind == "array":
            first = rng.randint(0, 5)
            arrays.add_array(spec, first, first + rng.randint(0, 11 if small else 120), 0, owner)
        else:
            pools.add(spec, owner)
    for kv in store.get_prefix(KEYS.jobs_prefix)[0]:
        if rng.random() < 0.4:
            record = JobRecord.from_bytes(kv.value, KEYS.last(kv.key))
            if record.state == QUEUED:
                record = record.moved_to(rng.choice([CANCELLED, ASSIGNED]), node="n1")
            if record.state == ASSIGNED and rng.random() < 0.7:
                record = record.moved_to(RUNNING)
                record = record.moved_to(rng.choice([EXITED, FAILED])) if rng.random() < 0.7 else record
            store.put(kv.key, record.to_bytes())
    store.put(KEYS.listed_complete, b"1")  # (as the prime's first pass does: listindex.py)
    jobs.listing = Listing(store, KEYS, clock=lambda: clock.ns / 1e9)
    return jobs, store


_read: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # store -> (its revision, its records sorted)


def reference(store: MemStore, states, limit: int, owner, expand: bool) -> list:
    """What -list answers, from a full read of jobs/: every valid record, sorted by created_at in
    microseconds, array index and id, then folded, filtered and cut."""
    revision, records = _read.get(store, (None, []))
    if revision != store.rev:
        records = []
        for kv in store.get_prefix(KEYS.jobs_prefix)[0]:
            try:
                records.append(JobRecord.from_bytes(kv.value, KEYS.last(kv.key)))
            except RecordError:
                continue
        records.sort(key=lambda r: (round(r.created_at * 1e6), r.array_index or 0, r.id))
        _read[store] = (store.rev, records)
    return fold([r for r in records if owner is None or r.owner == owner], states, limit, expand)


def listed(jobs: Jobs, states, limit: int, owner, expand: bool) -> list:
    return jobs.list(states, limit, owner) if expand else jobs.rows(states, limit, owner)


@pytest.fixture(scope="module")
def mixed():
    return history(13, 120)


CASES = [(None, None), ({EXITED}, None), ({QUEUED, RUNNING}, "ann"), (None, "bob"), ({"LOST"}, None), ({CANCELLED}, "root")]


@pytest.mark.parametrize("expand", [False, True], ids=["folded", "expanded"])
@pytest.mark.parametrize("limit", [1, 2, 5, 20, 57, 300, 100_000])
@pytest.mark.parametrize("states,owner", CASES)
def test_the_newest_from_the_index_are_the_full_reads(mixed, states, owner, limit, expand):
    jobs, store = mixed
    assert listed(jobs, states, limit, owner, expand) == reference(store, states, limit, owner, expand)


@pytest.mark.parametrize("seed", range(6))
def test_random_histories_list_as_the_full_read(seed):
    jobs, store = history(seed, 60)
    rng = random.Random(seed)
    for _ in range(12):
        states, owner = rng.choice(CASES)
        limit, expand = rng.choice([1, 3, 10, 40, 1000]), rng.random() < 0.5
        assert listed(jobs, states, limit, owner, expand) == reference(store, states, limit, owner, expand)


def test_without_a_limit_the_order_is_the_same():
    jobs, store = history(3, 80)
    assert jobs.rows() == reference(store, None, 0, None, False) and jobs.list() == reference(store, None, 0, None, True)


def test_one_node_adding_in_turn_lists_as_the_creation_revisions_did():
    """The order before this index (creation revision, then array index and key) for one node's
    adds one after another: only adds at once on nodes whose clocks differ can come out otherwise."""
    jobs, store = history(5, 80, small=True)
    kvs = sorted(store.get_prefix(KEYS.jobs_prefix)[0], key=lambda kv: kv.create_revision)
    by_revision = [r for r, kv in sorted(decode.jobs_of(kvs), key=lambda p: (p[1].create_revision, p[0].array_index or 0,
                                                                                p[1].key))]
    assert jobs.list() == by_revision and jobs.list(None, 25) == by_revision[-25:]


def test_keys_someone_else_wrote_change_nothing(caplog):
    jobs, store = history(21, 60)
    records = {KEYS.last(kv.key): JobRecord.from_bytes(kv.value, KEYS.last(kv.key)) for kv in store.get_prefix(KEYS.jobs_prefix)[0]}
    real = sorted(records.values(), key=order)[-1]  # the newest job
    malformed, missing = new_job_id(), new_job_id()
    store.put(KEYS.job(malformed), b"not json")
    future = START + 10**6
    forged = [KEYS.listed_prefix + "!!", KEYS.listed_prefix + "zz", KEYS.listed_prefix + "\udcff" * 4,
              KEYS.listed(future, None, missing),  # newest of all, no record
              KEYS.listed(future, None, malformed),  # a record that does not decode
              KEYS.listed(future, 3, real.id),  # a second key for a real job, newer than its own
              KEYS.listed(real.created_at - 7200, None, real.id),  # and one older
              KEYS.listed_prefix + "00000000000000000/9999999999/" + "0" * 32]  # as far in the future as can be
    for key in forged:
        store.put(key, b"root")
    for states, owner in CASES:
        for limit, expand in ((1, False), (4, True), (30, False), (500, True)):
            assert listed(jobs, states, limit, owner, expand) == reference(store, states, limit, owner, expand)
    skipped = [r.getMessage() for r in caplog.records if "ignoring the value of" in r.getMessage()]
    assert any(KEYS.listed(future, 3, real.id) in line and "not the index key of job" in line for line in skipped)
    assert any("not an index key" in line for line in skipped)
    assert len(skipped) == len(set(skipped))  # once each, however often read


def test_without_the_complete_mark_it_reads_everything():
    jobs, store = history(8, 40)
    store.txn([], [Delete(KEYS.listed_complete)])
    assert jobs.listing.newest(None, 5, None, False) is None
    store.ranges.clear()
    assert jobs.rows(None, 5) == reference(store, None, 5, None, False)
    assert any(start.startswith(KEYS.jobs_prefix) for start, _, _ in store.ranges)


def test_a_record_without_its_key_is_not_listed_from_the_index_until_the_prime_gives_it_one():
    jobs, store = history(9, 20)
    late = JobRecord(id=new_job_id(), spec=JobSpec("old"), created_at=START + 10**7, owner="ann")
    store.put(KEYS.job(late.id), late.to_bytes())  # as a node of an older version adds it
    assert late not in jobs.list(None, 5) and jobs.list()[-1] == late


def uniform(count: int, gap: float, burst: int = 0, idle: float = 0, restarted: bool = False) -> tuple[Jobs, MemStore]:
    """`count` single adds `gap` seconds apart, then `burst` more a microsecond apart, listed
    `idle` seconds after the last; by the node that added them, or (`restarted`) by one that
    knows of no job yet."""
    store = MemStore()
    jobs = Jobs(store, KEYS)
    clock = Clock(START)
    jobs.added_at = AddClock(clock)
    for i in range(count + burst):
        clock.ns += int(gap * 1e9) if i < count else 0
        jobs.add(JobRecord(id=new_job_id(), spec=JobSpec("x"), created_at=jobs.added_at(), owner=OWNERS[i % 3]))
    store.put(KEYS.listed_complete, b"1")
    jobs.listing = Listing(store, KEYS, clock=lambda: clock.ns / 1e9 + idle, added=None if restarted else jobs.added_at)
    return jobs, store


def visited(store: MemStore) -> int:
    """Keys etcd visits for the range reads of listed/ so far (it counts every key of a range)."""
    return sum(n for start, _, n in store.ranges if start.startswith(KEYS.listed_prefix))


@pytest.mark.parametrize("gap,idle,restarted", [(1.0, 30, True), (0.001, 0, True), (3600.0, 10, True), (0.5, 86400, False),
                                                (0.01, 86400, False)])
def test_the_reads_stay_narrow_however_long_the_history(gap, idle, restarted):
    """etcd visits every key of a range to count it: -list -limit N visits the keys of a few
    windows of time (at first the last second's adds), not every key of listed/; after a quiet
    spell too, when the node knows of a job from before it (it added or listed one)."""
    jobs, store = uniform(9000, gap, 0, idle, restarted)
    store.ranges.clear()
    assert jobs.list(None, 20) == reference(store, None, 20, None, True)
    assert visited(store) <= 1100 and len(store.ranges) <= 14, store.ranges
    store.ranges.clear()
    assert jobs.list(None, 600) == reference(store, None, 600, None, True)
    assert visited(store) <= 2500 and len(store.ranges) <= 18, store.ranges


@pytest.mark.parametrize("gap,burst,idle", [(1.0, 3000, 0), (0.01, 0, 86400), (0.5, 0, 86400)])
def test_what_a_window_can_cost(gap, burst, idle):
    """A burst of adds in one window (here 3000 in 3 ms), and a dense stretch behind a quiet spell
    that a node just started knows nothing of, put many keys in one window: still the right
    answer, and once it has listed the node knows where to look."""
    jobs, store = uniform(9000, gap, burst, idle, restarted=True)
    for limit in (1, 20, 600):
        store.ranges.clear()
        assert jobs.list(None, limit) == reference(store, None, limit, None, True)
        assert visited(store) <= 2 * (9000 + burst) and len(store.ranges) <= 18
    if not burst:
        store.ranges.clear()
        assert jobs.list(None, 20) == reference(store, None, 20, None, True) and visited(store) <= 1100


def test_a_users_listing_reads_only_their_records():
    jobs, store = uniform(900, 1.0)
    fetched: list[str] = []
    real = store.get_many
    store.get_many = lambda keys: fetched.extend(keys) or real(keys)
    assert jobs.list(None, 10, "ann") == reference(store, None, 10, "ann", True)
    owners = {JobRecord.from_bytes(store.get(key).value, KEYS.last(key)).owner for key in fetched}
    assert owners == {"ann"} and len(fetched) == 10


def test_an_array_is_one_row_whatever_page_its_members_fall_on():
    store = MemStore()
    jobs = Jobs(store, KEYS)
    clock = Clock(START)
    jobs.added_at = AddClock(clock)
    ids = [jobs.add(JobRecord(id=new_job_id(), spec=JobSpec("before"), created_at=jobs.added_at())).id for _ in range(3)]
    array, members = Arrays(jobs).add_array(JobSpec("member"), 0, 599, 0)
    ids += [jobs.add(JobRecord(id=new_job_id(), spec=JobSpec("after"), created_at=jobs.added_at())).id for _ in range(2)]
    store.put(KEYS.listed_complete, b"1")
    jobs.listing = Listing(store, KEYS, clock=lambda: clock.ns / 1e9)
    for limit in (1, 2, 3, 4, 6):
        rows = jobs.rows(None, limit)
        assert rows == reference(store, None, limit, None, False)
        assert [r.id if isinstance(r, JobRecord) else len(r) for r in rows] == (ids[:3] + [600] + ids[3:])[-limit:]
    assert [m.array_index for m in jobs.rows(None, 3)[0]] == list(range(600))
    assert [r.array_index for r in jobs.list(None, 5)] == [597, 598, 599, None, None]


def test_the_add_clock_is_strictly_increasing_in_whole_microseconds():
    clock = Clock(START)
    added = AddClock(clock)
    first = added()
    clock.ns -= 5 * 10**9  # the wall clock steps back
    stamps = [first] + [added() for _ in range(3)]
    clock.ns += 10 * 10**9
    stamps.append(added())
    assert [round(s * 1e6) for s in stamps] == [round(START * 1e6) + i for i in range(4)] + [round(START * 1e6) + 5 * 10**6]
    assert stamps == sorted(set(stamps)) and all(s == round(s * 1e6) / 1e6 for s in stamps)


def test_a_record_is_written_with_its_index_key_in_every_first_transaction():
    jobs, store = history(4, 40)
    for _, ops, ok in store.txns:
        new = [op for op in ops if isinstance(op, Put) and op.key.startswith(KEYS.jobs_prefix)]
        if ok and new and any(op.key.startswith(KEYS.queue_prefix) or "/assign/" in op.key for op in ops):
            keys = {op.key for op in ops}
            for op in new:
                record = JobRecord.from_bytes(op.value, KEYS.last(op.key))
                assert KEYS.listed(record.created_at, record.array_index, record.id) in keys
    listed = {KEYS.listed_parts(kv.key)[2]: kv.value for kv in store.get_prefix(KEYS.listed_prefix)[0]}
    records = {KEYS.last(kv.key): JobRecord.from_bytes(kv.value, KEYS.last(kv.key)) for kv in store.get_prefix(KEYS.jobs_prefix)[0]}
    assert listed == {job_id: r.owner.encode() for job_id, r in records.items()}
