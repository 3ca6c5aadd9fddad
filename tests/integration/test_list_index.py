"""-list's index (listed/, cluster/listing.py and listindex.py) through a real etcd, real nodes
and the real lclient: -list -limit N answers the newest N of a full -list, in its order, over
single adds, adds placed at once, -add - batches and arrays (folded and -expand), for every
filter; every record is written with its key and retention removes the key with the record;
a record without a key (written by hand or by an older version, or a whole history after an
upgrade) is still listed; keys someone else wrote under listed/ break -list for no one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Put
from lclusterd.cluster.store import Store
from lclusterd.errors import StoreUnavailable
from support.etcd_readers import etcd_prefix, etcd_records, etcdctl, raw_prefix
from support.jobs import add, until
from support.processes import Cluster
from support.users import as_user, make_user, remove_user

USER = "lcu-lidx"  # in the group lclusterd: lists through the node's socket as themselves
KEEP = ["--keep", "2s"]  # retention's passes, and the index's checks, every 0.5 s


def rows(node, *args: str) -> list[dict]:
    """`lclient -list -json ARGS` through `node` (plain TCP: as an admin)."""
    result = node.lclient("-list", "-json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def ids(listed: list[dict]) -> list[str]:
    return [row["id"] for row in listed]


def listed_keys(cluster) -> dict[str, str]:
    """listed/ keys as etcd holds them (read with etcdctl): uuid -> key."""
    keys = Keys(cluster.prefix)
    return {keys.listed_parts(key)[2]: key for key in etcd_prefix(cluster, "listed")}


def expected_key(cluster, record: dict) -> str:
    return Keys(cluster.prefix).listed(record["created_at"], record.get("array_index"), record["id"])


def assert_limits_are_the_full_lists_tail(node, *filters: str) -> None:
    for expand in ((), ("-expand",)):
        full = rows(node, *filters, *expand)
        for limit in (1, 2, 3, 5, 8, 40, 150, 1000):
            assert rows(node, *filters, *expand, "-limit", str(limit)) == full[-limit:], (filters, expand, limit)


def test_the_newest_n_are_the_full_lists_last_n_across_adds_batches_and_arrays(cluster):
    node = cluster.daemon("lidx-a", extra=["--capacity", "8"])
    assert node.lclient("-drain", "lidx-a").returncode == 0  # everything stays QUEUED: one snapshot
    singles = [add(node, f"echo {i}") for i in range(3)]
    batch = node.lclient("-add", "-", stdin="".join(f"echo batch {i}\n" for i in range(130)).encode())
    assert batch.returncode == 0, batch.stderr
    big = add(node, "echo $LCLUSTER_ARRAY_INDEX", "-array", "0-59")
    singles += [add(node, f"echo {i}") for i in range(3, 5)]
    small_batch = node.lclient("-add", "-", stdin=b"echo x\necho y\necho z\n").stdout.split()
    little = add(node, "true", "-array", "3-5")
    singles.append(add(node, "echo last"))

    full = ids(rows(node))
    by_id = lambda jobs: sorted(jobs)  # jobs added in one instant list by id  # noqa: E731
    assert full == singles[:3] + by_id(batch.stdout.split()) + [big] + singles[3:5] + by_id(small_batch) + [little] + singles[5:]
    expanded = rows(node, "-expand")
    members = [row["array_index"] for row in expanded if row.get("array") == big]
    assert members == list(range(60)) and len(expanded) == 6 + 130 + 60 + 3 + 3
    assert_limits_are_the_full_lists_tail(node)
    assert_limits_are_the_full_lists_tail(node, "-state", "QUEUED")

    assert node.lclient("-kill", singles[3]).returncode == 0 and node.lclient("-kill", little).returncode == 0
    assert ids(rows(node, "-state", "CANCELLED", "-limit", "2")) == [singles[3], little]
    assert_limits_are_the_full_lists_tail(node, "-state", "CANCELLED")
    assert_limits_are_the_full_lists_tail(node, "-state", "QUEUED")

    assert node.lclient("-undrain", "lidx-a").returncode == 0  # adds placed at once (add_assigned) are indexed too
    placed = [add(node, "true") for _ in range(3)]
    for job in placed:
        assert node.lclient("-wait", job).returncode == 0
    assert ids(rows(node, "-limit", "3")) == placed
    records = etcd_records(cluster)  # every record was written with its key, named after it
    assert listed_keys(cluster) == {job: expected_key(cluster, record) for job, record in records.items()}
    assert set(etcd_prefix(cluster, "listed").values()) == {b"root"}  # the owner, as the key's value


class Deletions:
    """The deletes under a prefix as they happen (a watch from now on, in a thread): key -> the
    revision it was deleted at, so a test can tell which transaction deleted what."""

    def __init__(self, store: Store, prefix: str):
        self.deleted: dict[str, int] = {}
        self._stream = store.open_watch(prefix, store.revision() + 1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for response in self._stream:
                self.deleted.update((e.key, e.mod_revision) for e in response.events if e.kind == "delete")
        except StoreUnavailable:
            pass

    def close(self) -> None:
        self._stream.cancel()
        self._thread.join(timeout=5)


def test_retention_removes_the_index_key_with_the_record(cluster, store):
    node = cluster.daemon("lidx-keep", extra=KEEP)
    sleeper = add(node, "sleep 600")
    deletions = Deletions(store, cluster.prefix + "/")
    try:
        jobs = [add(node, "true"), add(node, "true", "-array", "4")]
        jobs += node.lclient("-add", "-", stdin=b"true\ntrue\n").stdout.split()
        indexed = listed_keys(cluster)
        for job in jobs:
            assert node.lclient("-wait", job).returncode == 0
        until(lambda: set(etcd_records(cluster)) == {sleeper}, "the ended jobs to be removed", timeout=30)
        assert listed_keys(cluster) == {sleeper: expected_key(cluster, etcd_records(cluster)[sleeper])}  # none left behind
        removed = [job for job in indexed if job != sleeper]
        assert len(removed) == 1 + 4 + 2
        keys = Keys(cluster.prefix)
        until(lambda: all(keys.job(job) in deletions.deleted for job in removed), "the watch to see the removals")
        for job in removed:  # each in the transaction that removed its record (not by a later repair)
            assert deletions.deleted[indexed[job]] == deletions.deleted[keys.job(job)], job
    finally:
        deletions.close()
    assert ids(rows(node, "-limit", "5")) == [sleeper]
    assert node.lclient("-kill", sleeper).returncode == 0


def forged_record(cluster, store: Store, job: str, created_at: float, **fields) -> dict:
    """A valid EXITED record written straight into etcd, without an index key (as a node of an
    older version, or anyone who can write etcd, writes it)."""
    record = {"id": job, "spec": {"command": "echo old", "env": {}, "stdin_data": "", "retries": 0, "node": ""},
              "state": "EXITED", "node": "gone", "attempt": 1, "created_at": created_at, "finished_at": created_at + 1,
              "exit_code": 0, "history": [], "error": "", "owner": "root", **fields}
    store.txn([], [Put(Keys(cluster.prefix).job(job), json.dumps(record).encode())])
    return record


@pytest.fixture
def store(cluster):
    s = Store(cluster.etcd.endpoint)
    yield s
    s.close()


def test_a_record_without_an_index_key_is_listed(cluster, store):
    node = cluster.daemon("lidx-old", extra=KEEP)
    first = add(node, "sleep 600")  # (an ended job would be removed after 2 s)
    old = uuid.uuid4().hex
    forged_record(cluster, store, old, time.time() + 1)  # the newest job, with no key
    assert ids(rows(node))[-1] == old  # a full -list reads every record
    until(lambda: ids(rows(node, "-limit", "1")) == [old], "the prime to index the record")
    assert listed_keys(cluster)[old] == expected_key(cluster, etcd_records(cluster)[old])
    assert ids(rows(node, "-limit", "2")) == [first, old]


def test_after_an_upgrade_the_whole_history_is_listed_then_indexed(cluster, store):
    node = cluster.daemon("lidx-up")
    added = [add(node, "true") for _ in range(3)]
    assert node.stop() == 0
    base = time.time() - 3600
    old = [forged_record(cluster, store, uuid.uuid4().hex, base + i)["id"] for i in range(200)]
    etcdctl(cluster.etcd.endpoint, "del", "--prefix", f"{cluster.prefix}/listed")  # listed/ and listed-complete
    assert etcd_prefix(cluster, "listed") == {}
    node.start()
    assert ids(rows(node, "-limit", "5")) == (old + added)[-5:]  # before or after the prime's pass: the same
    until(lambda: Keys(cluster.prefix).listed_complete in prefix_keys(cluster), "the index to be complete")
    records = etcd_records(cluster)
    assert listed_keys(cluster) == {job: expected_key(cluster, record) for job, record in records.items()}
    assert ids(rows(node, "-limit", "250")) == old + added and ids(rows(node)) == old + added


def prefix_keys(cluster) -> set[str]:
    result = etcdctl(cluster.etcd.endpoint, "get", "--prefix", "--keys-only", f"{cluster.prefix}/")
    return set(result.stdout.split())


@pytest.fixture
def user_place():
    """A user in the group lclusterd and a directory other users can traverse (for the socket)."""
    make_user(USER, True)
    directory = Path(tempfile.mkdtemp(prefix="lclusterd-lidx-", dir="/var/tmp"))
    os.chmod(directory, 0o711)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
    remove_user(USER)


def test_forged_index_keys_break_listing_for_no_one(etcd, user_place, store):
    cluster = Cluster(user_place, etcd)
    try:
        (user_place / "lidx-f").mkdir(mode=0o711)
        node = cluster.daemon("lidx-f", extra=KEEP, directory=user_place / "lidx-f")
        # jobs that do not end: with --keep 2s an ended one would be removed while the test reads
        mine = [as_user(USER, "-add", "sleep 600", server=node.socket).stdout.strip() for _ in range(2)]
        roots = [add(node, "sleep 600") for _ in range(2)]
        keys, future = Keys(cluster.prefix), time.time() + 3600
        missing, malformed = uuid.uuid4().hex, uuid.uuid4().hex
        store.txn([], [Put(keys.job(malformed), b"not json")])
        forged = {keys.listed(future, None, missing): b"root",  # the newest key names no record
                  keys.listed(future + 1, None, malformed): USER.encode(),  # one names a record that does not decode
                  keys.listed(future + 2, 3, roots[0]): USER.encode(),  # a second key for root's job, claiming the user
                  keys.listed(future + 3, None, mine[0]): USER.encode(),  # and one for the user's own, moved ahead
                  keys.listed_prefix + "garbage": b"root", keys.listed_prefix + "\udcff\udcfe": USER.encode()}
        store.txn([], [Put(key, value) for key, value in forged.items()])
        for limit in ("1", "2", "3", "10"):
            everyone = node.lclient("-list", "-json", "-limit", limit)
            assert everyone.returncode == 0 and ids(map(json.loads, everyone.stdout.splitlines())) == (mine + roots)[-int(limit):]
            theirs = as_user(USER, "-list", "-json", "-limit", limit, server=node.socket)
            assert theirs.returncode == 0 and ids(map(json.loads, theirs.stdout.splitlines())) == mine[-int(limit):], theirs.stderr
        assert node.process.poll() is None
        # the prime's pass removes the keys with no record, that do not parse, or that are not their record's
        wanted = {expected_key(cluster, json.loads(raw)) for key, raw in raw_prefix(cluster, "jobs").items()
                  if not key.endswith(malformed)} | {keys.listed(future + 1, None, malformed)}  # (its record exists)
        until(lambda: set(raw_prefix(cluster, "listed")) == wanted, "the forged keys to be removed")
        assert ids(rows(node, "-limit", "4")) == mine + roots
    finally:
        cluster.close()
