"""Arrays, batches and -after, the parts that need no daemon: lclient's parsing of -array,
-after and -add -; the bounds; records of members, arrays and parents; the write path's
transactions (on the in-memory store); -list's folding; the scheduler's %K limit and its
decisions on parents."""

from __future__ import annotations

import io
import json

import pytest

from lclient import cli, many, units
from lclusterd import limits
from lclusterd.api.convert import list_rows
from lclusterd.cluster.arrays import Arrays
from lclusterd.cluster.dependencies import ParentState, verdict
from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Event, Put
from lclusterd.cluster.pools import Pools
from lclusterd.cluster.scheduler import Scheduler
from lclusterd.errors import InvalidSpec, RecordError, StoreUnavailable
from lclusterd.model import (ARRAY, ASSIGNED, CANCELLED, EXITED, FAILED, QUEUED, RUNNING, JobRecord, JobSpec, NodeInfo,
                             PoolRecord)
from memstore import MemStore
from test_lclient_cli import run

KEYS = Keys("/t")
P1, P2, ARR = "1" * 32, "2" * 32, "a" * 32


# -- lclient ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("5", (0, 4, 0)), ("1", (0, 0, 0)), ("3-7", (3, 7, 0)), ("0-0", (0, 0, 0)), ("10%2", (0, 9, 2)),
    ("4-5%1", (4, 5, 1)), (" 2 ", (0, 1, 0)), ("0-9999", (0, 9999, 0)),
])
def test_array_values(text, expected):
    assert units.parse_array(text) == expected


@pytest.mark.parametrize("text, why", [
    ("0", "must be at least 1"), ("-2", "must be at least 1"), ("7-3", "the range is reversed (7 is above 3)"),
    ("0-10000", "10001 members is more than the limit of 10000"), ("10001", "10001 members is more than the limit"),
    ("3%0", "%K (most members at once) must be at least 1"), ("3%", "%K (most members at once) expected a whole number"),
    ("a-b", "expected a whole number"), ("", "expected a whole number"), ("1-2-3", "expected a whole number"),
])
def test_bad_array_values(text, why):
    with pytest.raises(ValueError, match=why.replace("(", r"\(").replace(")", r"\)")):
        units.parse_array(text)


def test_the_client_and_the_daemon_share_the_array_bound():
    assert units.MAX_ARRAY_MEMBERS == limits.MAX_ARRAY_MEMBERS


def test_add_array_and_after_reach_the_request(capsys):
    code, out, err, client = run(["-add", "true", "-array", "2-5%3", "-after", f"{P1}, {P2}"], capsys)
    assert (code, out, err) == (0, "fedcba9876543210fedcba9876543210\n", "")
    (name, (spec, all_nodes, array)), = client.calls
    assert (name, all_nodes, (array.first, array.last, array.max_running), list(spec.after)) == ("add", False, (2, 5, 3), [P1, P2])


@pytest.mark.parametrize("argv, message", [
    (["-add", "true", "-array", "0"], "bad -array value '0': must be at least 1"),
    (["-check", P1, "-array", "3"], "-array goes with -add"),
    (["-list", "-after", P1], "-after goes with -add"),
    (["-check", P1, "-expand"], "-expand goes with -list"),
    (["-add", "true", "-array", "3", "-all-nodes"], "-array queues many jobs; leave out -all-nodes"),
    (["-add", "true", "-array", "3", "-follow"], "-array queues many jobs; leave out -follow"),
    (["-add", "-", "-wait"], "-add - queues one job per line of stdin; leave out -wait"),
    (["-add", "-", "-stdin", "-"], "-add - reads the commands from stdin; -stdin - cannot read it as well"),
    (["-add", "true", "-after", ","], "bad -after value ',': expected UUID[,UUID...]"),
])
def test_misplaced_or_bad_options_exit_2(capsys, argv, message):
    code, out, err, client = run(argv, capsys)
    assert (code, out, err) == (2, "", f"lclient: {message}\n")
    assert client is None or client.calls == []


def test_add_from_stdin_one_call_uuids_in_order(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"echo a\n\n  \necho b\r\n")))
    code, out, err, client = run(["-add", "-", "-mem", "64M"], capsys)
    assert (code, out, err) == (0, f"{1:032x}\n{2:032x}\n", "")
    (name, (specs,)), = client.calls
    assert name == "add_batch" and [(s.command, s.memory_bytes) for s in specs] == [("echo a", 64 << 20), ("echo b", 64 << 20)]


def test_read_commands():
    assert many.read_commands(io.BytesIO(b"a\n\nb c\n\t\nd")) == ["a", "b c", "d"]
    for raw, why in ((b"", "found no command"), (b"ok\nbad\0\n", "line 2 of stdin contains a NUL byte"),
                     (b"\xc3\n", "line 1 of stdin is not valid UTF-8 \\(byte 0xc3 at offset 0\\)")):
        with pytest.raises(Exception, match=why):
            many.read_commands(io.BytesIO(raw))


def test_list_expand_asks_for_every_member(capsys):
    _, _, _, client = run(["-list", "-expand"], capsys)
    assert client.calls == [("list", ([], 0, True))]
    assert cli.ACTIONS  # (the actions are unchanged: -array, -after, -expand are options)


# -- bounds and records -------------------------------------------------------------------------
def test_array_bounds_and_reserved_names():
    limits.check_array(0, 9999, 0)
    for args, why in (((0, 10000, 0), "10001 members"), ((5, 4, 0), "reversed"), ((-1, 3, 0), "between 0 and"),
                      ((0, 3, -1), "at least 1")):
        with pytest.raises(InvalidSpec, match=why):
            limits.check_array(*args)
    with pytest.raises(InvalidSpec, match="LCLUSTER_ARRAY_ID is reserved"):
        JobSpec("true", env={"LCLUSTER_ARRAY_ID": "x"}).validate()
    JobSpec("true", env={"LCLUSTER_ARRAY_ID": "x"}).validate(stored=True)  # a member's own spec, read back
    for after, why in (([P1, P1], "the same job twice"), (["nope"], "malformed uuid 'nope'"), ([P1] * 65, "more than the limit of 64")):
        with pytest.raises(InvalidSpec, match=why):
            JobSpec("true", after=after).validate()


def test_member_and_array_records_round_trip_and_old_ones_still_load():
    member = JobRecord(id=P1, spec=JobSpec("true", after=[P2]), pool=ARR, array_index=7, array_limit=2)
    assert JobRecord.from_bytes(member.to_bytes(), P1) == member
    plain = json.loads(JobRecord(id=P2, spec=JobSpec("true")).to_bytes())
    assert not {"array_index", "array_limit"} & set(plain) and "after" not in plain["spec"]  # older daemons read it as before
    array = PoolRecord(id=ARR, spec=JobSpec("true"), members={"10": P1, "9": P2}, kind=ARRAY, max_running=3)
    again = PoolRecord.from_bytes(array.to_bytes(), ARR)
    assert (again, again.member_ids(), again.labels()) == (array, [P2, P1], ["9", "10"])
    assert "kind" not in json.loads(PoolRecord(id=ARR, spec=JobSpec("true"), members={"a": P1}).to_bytes())


@pytest.mark.parametrize("change, why", [
    ({"array_index": -1}, "'array_index' is negative"), ({"array_limit": -2}, "'array_limit' is negative"),
    ({"pool": "", "array_index": 1}, "names no array"), ({"array_index": "1"}, "'array_index' is a string"),
])
def test_bad_member_records_are_refused(change, why):
    data = {**json.loads(JobRecord(id=P1, spec=JobSpec("true"), pool=ARR, array_index=0).to_bytes()), **change}
    with pytest.raises(RecordError, match=why):
        JobRecord.from_json(data, P1)


@pytest.mark.parametrize("change, why", [
    ({"kind": "bag"}, "unknown kind 'bag'"), ({"members": {"01": P1}}, "not a valid array index"),
    ({"members": {"x": P1}}, "not a valid array index"), ({"max_running": -1}, "'max_running' is negative"),
    ({"spec": {"command": "true", "after": ["zz"]}}, "'after' holds 'zz'"),
])
def test_bad_array_records_are_refused(change, why):
    data = {**PoolRecord(id=ARR, spec=JobSpec("true"), members={"0": P1}, kind=ARRAY).to_json(), **change}
    with pytest.raises(RecordError, match=why):
        PoolRecord.from_json(data, ARR)


# -- the write path ---------------------------------------------------------------------------------
def test_an_array_is_written_in_chunks_of_42_with_its_record_last():
    store = MemStore()
    array, members = Arrays(Jobs(store, KEYS)).add_array(JobSpec("true", env={"A": "1"}), 5, 204, 4, "ann")
    assert len(members) == 200 and len(store.txns) == 5  # 4 x 42 + 32 with the record
    assert [len([op for op in ops if "/jobs/" in op.key]) for _, ops, _ in store.txns] == [42, 42, 42, 42, 32]
    assert all(len([op for op in ops if "/listed/" in op.key]) == len([op for op in ops if "/jobs/" in op.key])
               for _, ops, _ in store.txns)  # each member's -list index key in its record's transaction
    assert KEYS.pool(array.id) in {op.key for op in store.txns[-1][1]}
    stored = PoolRecord.from_bytes(store.get(KEYS.pool(array.id)).value, array.id)
    assert (stored.kind, stored.max_running, stored.owner, len(stored.members)) == (ARRAY, 4, "ann", 200)
    assert stored.member_ids() == members
    for index, job_id in zip(range(5, 205), members):  # each encoded from the template, read back as any record
        read = JobRecord.from_bytes(store.get(KEYS.queue(job_id)).value, job_id)
        expected = JobRecord(id=job_id, spec=JobSpec("true", env={"A": "1", "LCLUSTER_ARRAY_INDEX": str(index),
                                                                  "LCLUSTER_ARRAY_ID": array.id}),
                             created_at=read.created_at, pool=array.id, array_index=index, array_limit=4, owner="ann")
        assert read == expected and store.get(KEYS.job(job_id)).value == expected.to_bytes()
        assert store.get(KEYS.listed(read.created_at, index, job_id)).value == b"ann"
    assert stored.spec.env == {"A": "1"}


def test_etcd_failing_part_way_cancels_what_was_written():
    store = MemStore()
    real = store.txn
    calls = []

    def third_fails(compares, ops, else_ops=()):
        calls.append(1)
        if len(calls) == 3:
            raise StoreUnavailable("etcd at test is unavailable")
        return real(compares, ops, else_ops)

    store.txn = third_fails
    with pytest.raises(StoreUnavailable):
        Arrays(Jobs(store, KEYS)).add_array(JobSpec("true"), 0, 199, 0)
    records = [JobRecord.from_bytes(kv.value, KEYS.last(kv.key)) for kv in store.get_prefix(KEYS.jobs_prefix)[0]]
    assert len(records) == 126 and {r.state for r in records} == {CANCELLED}  # 3 of the first 4 chunks of 42 landed
    assert store.get_prefix(KEYS.queue_prefix)[0] == [] and store.get_prefix(KEYS.pools_prefix)[0] == []


def test_a_batch_keeps_its_order_and_has_no_group_record():
    store = MemStore()
    records = Arrays(Jobs(store, KEYS)).add_batch([JobSpec(f"echo {i}") for i in range(70)], "bob")
    assert [r.spec.command for r in records] == [f"echo {i}" for i in range(70)] and len(store.txns) == 2
    assert store.get_prefix(KEYS.pools_prefix)[0] == [] and all(r.owner == "bob" and not r.pool for r in records)


# -- -list folding ----------------------------------------------------------------------------------
def member(index: int, state: str, exit_code: int | None = None) -> JobRecord:
    env = {"LCLUSTER_ARRAY_INDEX": str(index), "LCLUSTER_ARRAY_ID": ARR}
    return JobRecord(id=f"{index + 16:032x}", spec=JobSpec("work", env=env), state=state, pool=ARR, array_index=index,
                     exit_code=exit_code, owner="ann")


def test_list_folds_an_array_into_one_row_at_its_place():
    lone = JobRecord(id=P1, spec=JobSpec("true"), state=RUNNING)
    later = JobRecord(id=P2, spec=JobSpec("true"), state=EXITED, exit_code=0)
    records = [member(0, EXITED, 0), lone, member(1, RUNNING), later]
    rows = list_rows(records, set(), 0, False)
    assert [(r.id, r.state, r.is_array, r.member_count, len(r.members)) for r in rows] == \
        [(ARR, RUNNING, True, 2, 0), (P1, RUNNING, False, 0, 0), (P2, EXITED, False, 0, 0)]
    assert dict(rows[0].spec.env) == {} and rows[0].owner == "ann"
    assert [r.id for r in list_rows(records, {RUNNING}, 0, False)] == [ARR, P1]
    assert [r.id for r in list_rows(records, set(), 1, False)] == [P2]
    assert [r.array_index for r in list_rows(records, set(), 0, True)] == [0, 0, 1, 0]
    assert [r.array for r in list_rows(records, set(), 0, True)] == [ARR, "", ARR, ""]


# -- the scheduler: %K and parents --------------------------------------------------------------------
def scheduler(store=None, capacity: int = 8, max_running_per_user: int = 0) -> Scheduler:
    s = Scheduler(store, None, KEYS, Jobs(store, KEYS) if store is not None else None, "p",
                  max_running_per_user=max_running_per_user)
    if store is not None:
        s._prime_revision = store.put(KEYS.prime, b"p")
    s.view._node_events([Event("put", KEYS.node("p"), NodeInfo("p", "localhost:1", capacity).to_bytes(), 10)])
    s.view.ready = True
    return s


def queue(s: Scheduler, *records: JobRecord, revision: int = 20) -> None:
    s.view._queue_events([Event("put", KEYS.queue(r.id), r.to_bytes(), revision + i) for i, r in enumerate(records)])


def limited(index: int, limit: int = 2, array: str = ARR) -> JobRecord:
    return JobRecord(id=f"{index + 64:032x}", spec=JobSpec("work"), pool=array, array_index=index, array_limit=limit)


def test_no_more_than_K_members_of_an_array_are_placed():
    s = scheduler()
    queue(s, *(limited(i) for i in range(5)), limited(9, limit=0, array="b" * 32))
    batch, _ = s._next_batch()
    assert [a.record.array_index for a in batch] == [0, 1, 9]  # the unlimited array's member is not held back
    for a in batch:  # as _assign does once the batch is written
        s.view.assigned_from_queue(a.record.id, a.revision)
    assert s.view.at_limit(ARR, 2) and s._next_batch()[0] == []
    # the assignments land (the reservations become assignments), then one member ends
    for i in (0, 1):
        record = limited(i).moved_to(ASSIGNED, node="p")
        s.view._assign_events([Event("put", KEYS.assign("p", record.id), record.to_bytes(), 30 + i)])
        s.settle(record.id, 30 + i)
    assert s.view.at_limit(ARR, 2)
    s.view._assign_events([Event("delete", KEYS.assign("p", limited(0).id), b"", 40)])
    assert not s.view.at_limit(ARR, 2)
    assert [a.record.array_index for a in s._next_batch()[0]] == [2]


def test_a_reservation_given_back_frees_its_place_under_the_limit():
    s = scheduler()
    queue(s, limited(0, limit=1), limited(1, limit=1))
    (first,), _ = s._next_batch()
    s.view.settle(first.record.id, None)  # its transaction did not write it
    assert not s.view.at_limit(ARR, 1)


@pytest.mark.parametrize("parents, expected", [
    ([ParentState(P1, EXITED, 0)], (True, "", "")),
    ([ParentState(P1, RUNNING)], (False, "", f"after {P1} (RUNNING)")),
    ([ParentState(P1, EXITED, 0), ParentState(P2, QUEUED)], (False, "", f"after {P2} (QUEUED)")),
    ([ParentState(P1, RUNNING), ParentState(P2, FAILED, error="boom")],
     (False, f"not started: its -after parent job {P2} ended FAILED: boom", "")),
    ([ParentState(P1, EXITED, 2, kind="array")],
     (False, f"not started: its -after parent array {P1} ended EXITED with exit code 2", "")),
    ([ParentState(P1, "", error="no longer exists (removed, or never written)")],
     (False, f"not started: its -after parent {P1} no longer exists (removed, or never written)", "")),
    ([ParentState(f"{i:032x}", RUNNING) for i in range(5)],
     (False, "", f"after {0:032x} (RUNNING), {1:032x} (RUNNING), {2:032x} (RUNNING) and 2 more")),
])
def test_the_verdict_on_parents(parents, expected):
    v = verdict(parents)
    assert (v.ready, v.cancel, v.waiting) == expected


def test_the_scheduler_holds_notes_and_cancels_children_by_their_parents():
    store = MemStore()
    s = scheduler(store)
    running = JobRecord(id=P1, spec=JobSpec("sleep 9"), state=RUNNING, node="p")
    failed = JobRecord(id=P2, spec=JobSpec("false"), state=EXITED, exit_code=1)
    store.put(KEYS.job(P1), running.to_bytes())
    store.put(KEYS.job(P2), failed.to_bytes())
    waits, doomed = JobRecord(id="3" * 32, spec=JobSpec("true", after=[P1])), JobRecord(id="4" * 32, spec=JobSpec("true", after=[P2]))
    for child in (waits, doomed):  # written as Jobs.add does: the record and its queue entry in one transaction
        queue(s, child, revision=store.txn([], _puts(child)).revision)
    s._check_parents()
    held = JobRecord.from_bytes(store.get(KEYS.job(waits.id)).value, waits.id)
    gone = JobRecord.from_bytes(store.get(KEYS.job(doomed.id)).value, doomed.id)
    assert (held.state, held.waiting) == (QUEUED, f"after {P1} (RUNNING)")
    assert (gone.state, gone.error) == (CANCELLED, f"not started: its -after parent job {P2} ended EXITED with exit code 1")
    assert store.get(KEYS.queue(doomed.id)) is None and s._next_batch()[0] == []  # the held one is not placed
    # the parent ends well: the child is placed at the next pass (once its state is read again)
    store.put(KEYS.job(P1), running.moved_to(EXITED, exit_code=0).to_bytes())
    s.parents._seen.clear()
    queue(s, held, revision=store.get(KEYS.queue(waits.id)).mod_revision)
    s._check_parents()
    assert [a.record.id for a in s._next_batch()[0]] == [waits.id]


def _puts(record: JobRecord) -> list[Put]:
    raw = record.to_bytes()
    return [Put(KEYS.job(record.id), raw), Put(KEYS.queue(record.id), raw)]


def test_42_members_go_in_one_transaction_with_the_record_and_43_in_two():
    """(etcd refuses a 129th operation: 43 members are 129 puts, jobs/, queue/ and listed/ each)"""
    for last, sizes in ((41, [127]), (42, [126, 4])):
        store = MemStore()
        array, members = Arrays(Jobs(store, KEYS)).add_array(JobSpec("true"), 0, last, 0)
        assert [len(ops) for _, ops, _ in store.txns] == sizes and len(PoolRecord.from_bytes(
            store.get(KEYS.pool(array.id)).value, array.id).members) == last + 1
    nodes = MemStore()  # the same for a pool of 43 ready nodes
    for i in range(43):
        nodes.put(KEYS.node(f"n{i:02d}"), NodeInfo(f"n{i:02d}", "localhost:1", 1).to_bytes())
    pool, _ = Pools(Jobs(nodes, KEYS)).add(JobSpec("true"))
    assert [len(ops) for _, ops, _ in nodes.txns[43:]] == [126, 4] and len(pool.members) == 43


def test_killing_an_array_cancels_its_queued_members_in_batches_and_asks_for_the_others():
    store = MemStore()
    jobs = Jobs(store, KEYS)
    array, ids = Arrays(jobs).add_array(JobSpec("true"), 0, 99, 0)
    running = JobRecord.from_bytes(store.get(KEYS.job(ids[3])).value, ids[3]).moved_to(ASSIGNED, node="n1")
    store.txn([], _puts(running)[:1])  # member 3 is now assigned (its queue entry left as is: not looked at)
    before = len(store.txns)
    killed = Pools(jobs).kill(array)
    assert len(store.txns) - before == 3  # 99 cancels (3 operations each) and one kill request, 128 at most a transaction
    assert [m.state for m in killed] == [CANCELLED] * 3 + [ASSIGNED] + [CANCELLED] * 96
    assert killed[3].kill_requested and store.get(KEYS.kill(ids[3])).value == b"n1"
    assert all(store.get(KEYS.queue(i)) is None for i in ids if i != ids[3])


# -- the scheduler: --max-running-per-user ------------------------------------------------------------
def owned(index: int, owner: str) -> JobRecord:
    return JobRecord(id=f"{index + 128:032x}", spec=JobSpec("work"), owner=owner)


def test_a_users_jobs_past_the_cap_wait_and_later_users_jobs_go_past_them():
    store = MemStore()
    s = scheduler(store, max_running_per_user=2)
    s._prime_revision = store.put(KEYS.prime, b"p")
    anns = [owned(i, "ann") for i in range(4)]
    bobs = owned(9, "bob")
    for record in (*anns, bobs):  # ann's four queued first, then bob's one
        queue(s, record, revision=store.txn([], _puts(record)).revision)
    batch, notes = s._next_batch()
    assert [a.record.id for a in batch] == [anns[0].id, anns[1].id, bobs.id]  # bob's is not held behind ann's
    assert [n.record.id for n in notes] == [anns[2].id, anns[3].id]  # each of ann's others says why it waits
    assert {n.why for n in notes} == {"its owner ann has 2 jobs running (--max-running-per-user)"}
    assert s.view.running_of("ann") == 2 and s.reserve("f" * 32, JobSpec("x"), "ann") is None  # not at add time either
    # one of ann's ends: the next of hers may go
    for a in batch:
        s.view.assigned_from_queue(a.record.id, a.revision)
        record = a.record.moved_to(ASSIGNED, node="p")
        s.view._assign_events([Event("put", KEYS.assign("p", record.id), record.to_bytes(), 90)])
        s.settle(record.id, 90)
    s.view._assign_events([Event("delete", KEYS.assign("p", anns[0].id), b"", 91)])
    s.view.queue[anns[2].id].skip = False  # (as the note's own event would)
    assert [a.record.id for a in s._next_batch()[0]] == [anns[2].id]


def test_without_a_cap_the_queue_goes_in_order_and_nobody_is_counted():
    s = scheduler()
    queue(s, *(owned(i, "ann") for i in range(3)), owned(9, "bob"))
    assert [a.record.owner for a in s._next_batch()[0]] == ["ann", "ann", "ann", "bob"]
    assert s.view.owners.members == {}  # no work for a limit nobody set
