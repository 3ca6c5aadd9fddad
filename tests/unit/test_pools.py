"""-all-nodes pools, the pure parts: the pool's state from its members', the pool record and a
member's record in etcd (old records without `pool` still load), the proto a pool is answered
with, and how a pool is cut into etcd transactions."""

import json

import grpc
import pytest

from lclusterd.api.convert import pool_to_proto
from lclusterd.api.errors import status_of
from lclusterd.cluster.pools import plan_chunks
from lclusterd.cluster.kv import MAX_TXN_OPS
from lclusterd.errors import IsAPool, JobFinished, NoReadyNode, WaitTimedOut
from lclusterd.model import (ASSIGNED, CANCELLED, EXITED, FAILED, KILLED, LOST, QUEUED, RUNNING, JobRecord, JobSpec,
                             PoolRecord, pool_outcome)

POOL = "f" * 32


def member(node: str, state: str, n: int = 0, **fields) -> JobRecord:
    return JobRecord(id=f"{n:032x}", spec=JobSpec("uname -n", node=node), state=state, node=node, pool=POOL, **fields)


@pytest.mark.parametrize("states, expected", [
    ([QUEUED, QUEUED], QUEUED),
    ([ASSIGNED, QUEUED], ASSIGNED),
    ([RUNNING, QUEUED], RUNNING),
    ([EXITED, QUEUED], RUNNING),  # under way: one has ended, one waits for its node
    ([EXITED, RUNNING, EXITED], RUNNING),
])
def test_a_pool_runs_while_any_member_has_not_ended(states, expected):
    members = [member(f"n{i}", s, i, exit_code=0 if s == EXITED else None) for i, s in enumerate(states)]
    assert pool_outcome(members) == (expected, None)


def test_a_pool_exited_when_every_member_exited_0():
    assert pool_outcome([member("a", EXITED, 1, exit_code=0), member("b", EXITED, 2, exit_code=0)]) == (EXITED, None)


def test_otherwise_the_first_member_that_did_not_decides():
    ok, bad, killed = member("a", EXITED, 1, exit_code=0), member("b", EXITED, 2, exit_code=3), member("c", KILLED, 3, signal=9)
    assert pool_outcome([ok, bad, killed]) == (EXITED, bad)
    assert pool_outcome([ok, killed, bad]) == (KILLED, killed)
    lost = member("d", LOST, 4)
    assert pool_outcome([lost, ok]) == (LOST, lost)
    assert pool_outcome([]) == (LOST, None)


def test_pool_record_round_trip_and_member_order():
    pool = PoolRecord(POOL, JobSpec("uname -n", retries=1), 12.5, {"c": "3" * 32, "a": "1" * 32, "b": "2" * 32})
    again = PoolRecord.from_bytes(pool.to_bytes(), POOL)
    assert again == pool
    assert again.member_ids() == ["1" * 32, "2" * 32, "3" * 32]  # by node name
    stored = json.loads(pool.to_bytes())
    assert list(stored["members"]) == ["a", "b", "c"] and stored["spec"]["node"] == "" and stored["created_at"] == 12.5


def test_member_records_carry_their_pool_and_others_are_unchanged():
    m = member("a", QUEUED, 1)
    assert JobRecord.from_bytes(m.to_bytes(), m.id).pool == POOL
    plain = JobRecord(id="1" * 32, spec=JobSpec("true"))
    assert "pool" not in json.loads(plain.to_bytes())  # older daemons can still read every other record
    old = json.loads(plain.to_bytes())  # a record written before pools existed
    assert JobRecord.from_json(old, plain.id).pool == ""


@pytest.mark.parametrize("members, sizes", [
    (1, [1]), (3, [3]), (42, [42]), (43, [42, 1]), (84, [42, 42]), (85, [42, 42, 1]), (500, [42] * 11 + [38]),
])
def test_plan_chunks_fit_etcds_limit(members, sizes):
    plan = plan_chunks(members)
    assert plan == sizes and sum(plan) == members
    for size in plan[:-1]:  # 3 puts (jobs/, queue/, listed/) and 2 compares per member
        assert 3 * size <= MAX_TXN_OPS and 2 * size <= MAX_TXN_OPS
    assert 3 * plan[-1] + 1 <= MAX_TXN_OPS  # and the pool record with the last


def test_plan_chunks_at_another_limit():
    assert plan_chunks(10, max_ops=8) == [2, 2, 2, 2, 2]
    assert plan_chunks(2, max_ops=8) == [2]
    assert plan_chunks(3, max_ops=9) == [3, 0]  # the pool record alone last


def test_pool_proto_sums_up_its_members():
    pool = PoolRecord(POOL, JobSpec("uname -n", stdin_data=b"big"), 10.0, {"a": "1" * 32, "b": "2" * 32})
    ok = member("a", EXITED, 1, exit_code=0, assigned_at=11.0, started_at=11.5, finished_at=12.0)
    bad = member("b", KILLED, 2, signal=9, error="killed by request", assigned_at=10.5, started_at=11.0, finished_at=13.0)
    msg = pool_to_proto(pool, [ok, bad])
    assert (msg.id, msg.state, msg.is_pool, msg.signal, msg.HasField("exit_code")) == (POOL, KILLED, True, 9, False)
    assert msg.error == f"member {bad.id} on node b ended KILLED: killed by request"
    assert (msg.created_at, msg.assigned_at, msg.started_at, msg.finished_at) == (10.0, 10.5, 11.0, 13.0)
    assert [(m.id, m.node, m.pool) for m in msg.members] == [(ok.id, "a", POOL), (bad.id, "b", POOL)]
    assert msg.spec.stdin == b"" and msg.spec.node == ""

    running = pool_to_proto(pool, [ok, member("b", RUNNING, 2, kill_requested=True)])
    assert (running.state, running.finished_at, running.kill_requested, running.HasField("exit_code")) == (RUNNING, 0, True, False)
    done = pool_to_proto(pool, [ok, member("b", EXITED, 2, exit_code=0)])
    assert (done.state, done.exit_code, done.error) == (EXITED, 0, "")
    cancelled = member("a", CANCELLED, 1, error="cancelled by request before it started")
    cancelled.node = ""  # cancelled while queued: never on a node; its pin names it
    never = pool_to_proto(pool, [cancelled])
    assert never.error == f"member {1:032x} on node a ended CANCELLED: cancelled by request before it started"
    failed = pool_to_proto(pool, [member("a", FAILED, 1, exit_code=None, error="exec: no such file")])
    assert (failed.state, failed.HasField("exit_code")) == (FAILED, False)


def test_pool_errors_map_and_read():
    assert status_of(NoReadyNode("no node can run the pool: no node is registered")) == grpc.StatusCode.FAILED_PRECONDITION
    assert status_of(IsAPool(POOL, 3, "read a member's logs")) == grpc.StatusCode.FAILED_PRECONDITION
    assert str(IsAPool(POOL, 3, "read a member's logs")) == f"{POOL} is a pool of 3 job(s), one per node; read a member's logs"
    assert str(JobFinished(POOL, "EXITED", kind="pool")) == f"pool {POOL} has already finished (EXITED)"
    assert str(WaitTimedOut(POOL, "RUNNING", 2, kind="pool")) == f"pool {POOL} is still RUNNING after 2s"


def test_plan_chunks_keep_a_large_spec_within_etcds_request_size():
    # members of ~600 KB each (two records): one a transaction, the pool record alone last
    assert plan_chunks(3, MAX_TXN_OPS, member_bytes=600_000, pool_bytes=500_000, max_bytes=1 << 20) == [1, 1, 1, 0]
    assert plan_chunks(3, MAX_TXN_OPS, member_bytes=600_000, pool_bytes=300_000, max_bytes=1 << 20) == [1, 1, 1]
    assert plan_chunks(3, MAX_TXN_OPS, member_bytes=300_000, pool_bytes=300_000, max_bytes=1 << 20) == [3, 0]
    assert plan_chunks(5, MAX_TXN_OPS, member_bytes=1000, pool_bytes=1000, max_bytes=1 << 20) == [5]
