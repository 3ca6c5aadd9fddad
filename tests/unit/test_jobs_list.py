"""Listing the newest jobs of a long history (Jobs.list with a limit) reads from the newest
end in pages; every answer must be the full read's: the same jobs in the same order, with
jobs added in one transaction (one creation revision) never split between pages."""

from __future__ import annotations

import random

import pytest

from lclusterd.cluster import jobs as jobs_module
from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Put
from lclusterd.model import JobRecord, JobSpec
from lclusterd.states import EXITED, FAILED, QUEUED, RUNNING
from memstore import MemStore

KEYS = Keys("/t")


def full_read(jobs: Jobs, states, limit, owner):
    """What list() answered before paging: every record, sorted by creation, then filtered."""
    kvs, _ = jobs.store.get_prefix(KEYS.jobs_prefix)
    from lclusterd.cluster import decode
    records = [r for r, _ in decode.jobs_of(sorted(kvs, key=lambda kv: kv.create_revision))
               if (not states or r.state in states) and (owner is None or r.owner == owner)]
    return records[-limit:] if limit else records


@pytest.fixture
def history():
    """300 jobs in transactions of 1 to 7 (shared creation revisions), mixed states and owners,
    and one record that does not decode."""
    rng = random.Random(13)
    store = MemStore()
    n = 0
    while n < 300:
        ops = []
        for _ in range(rng.randint(1, 7)):
            record = JobRecord(id=f"{rng.getrandbits(128):032x}", spec=JobSpec(command=f"job {n}"),
                               state=rng.choice([EXITED, EXITED, FAILED, QUEUED, RUNNING]),
                               owner=rng.choice(["ann", "bob", "root"]))
            ops.append(Put(KEYS.job(record.id), record.to_bytes()))
            n += 1
        store.txn([], ops)
    store.txn([], [Put(KEYS.job("f" * 32), b"not json")])
    return Jobs(store, KEYS)


@pytest.mark.parametrize("page", [3, 8, 256])
@pytest.mark.parametrize("limit", [1, 5, 20, 299, 400])
@pytest.mark.parametrize("states,owner", [(None, None), ({EXITED}, None), ({QUEUED, RUNNING}, "ann"), (None, "bob"),
                                          ({"LOST"}, None)])
def test_the_newest_are_the_full_reads(history, monkeypatch, page, limit, states, owner):
    monkeypatch.setattr(jobs_module, "LIST_PAGE", page)
    assert history.list(states, limit, owner) == full_read(history, states, limit, owner)


def test_a_transaction_larger_than_a_page_falls_back_to_the_full_read(monkeypatch):
    store = MemStore()
    records = [JobRecord(id=f"{i:032x}", spec=JobSpec(command="x"), state=EXITED) for i in range(10)]
    store.txn([], [Put(KEYS.job(r.id), r.to_bytes()) for r in records])
    jobs = Jobs(store, KEYS)
    monkeypatch.setattr(jobs_module, "LIST_PAGE", 4)
    assert jobs._newest(None, 2, None) is None
    assert jobs.list(None, 2) == records[-2:]  # by key within the one revision
