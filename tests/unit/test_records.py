"""Records read from etcd are input (lclusterd/records.py, model's strict from_json, and
cluster/decode.py): a record is accepted only when its id is its key's and every field has its
type and range; anything else is one RecordError naming the problem, logged once per key and
revision."""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import fields

import pytest

from lclusterd import records
from lclusterd.cluster import decode
from lclusterd.errors import JobNotFound, MalformedRecord, RecordError
from lclusterd.model import EXITED, JobRecord, JobSpec, NodeInfo, PoolRecord

JOB = "0123456789abcdef0123456789abcdef"
POOL = "fedcba9876543210fedcba9876543210"


def full_record() -> JobRecord:
    spec = JobSpec("echo hi", env={"A": "1"}, memory_bytes=64 << 20, cpus=0.5, pids=32, timeout=3.5, stdin_data=b"\0\xff",
                   retries=2, node="n1")
    return JobRecord(id=JOB, spec=spec, state=EXITED, node="n1", attempt=2, created_at=1.0, assigned_at=2.0,
                     started_at=3.0, finished_at=4.0, exit_code=0, signal=None, error="", host_pid=7,
                     peak_memory_bytes=1 << 20, cpu_seconds=0.01, history=[{"attempt": 1, "node": "n2", "assigned_at": 1.5,
                                                                            "started_at": None, "ended_at": 1.9,
                                                                            "state": "LOST", "reason": "node gone"}],
                     pool=POOL, owner="alice", output_dropped={"stdout": 5})


def stored(**changes) -> dict:
    data = full_record().to_json()
    spec = changes.pop("spec", {})
    data.update(changes)
    if isinstance(spec, dict):
        data["spec"].update(spec)
    else:
        data["spec"] = spec
    return data


def test_the_tables_name_every_field_of_the_records():
    def names(cls):
        return {f.name for f in fields(cls)} - {"unknown"}
    assert set(records.JOB_SPEC) == names(JobSpec)
    assert set(records.JOB_RECORD) == names(JobRecord) | {"schema_version"}
    assert set(records.POOL_RECORD) == names(PoolRecord) | {"schema_version"}
    assert set(records.NODE_INFO) == names(NodeInfo)


def test_a_record_lclusterd_wrote_reads_back_whole():
    record = full_record()
    assert JobRecord.from_bytes(record.to_bytes(), JOB) == record
    old = {"id": JOB, "spec": {"command": "true"}, "state": "QUEUED"}  # fields an old version did not write default
    assert JobRecord.from_json(old, JOB) == JobRecord(id=JOB, spec=JobSpec("true"))


def test_a_stored_spec_is_not_held_to_todays_size_limits():
    big = JobRecord(id=JOB, spec=JobSpec("cat", env={"A": "y" * (100 << 10)}, stdin_data=b"x" * (400 << 10)))
    assert JobRecord.from_bytes(big.to_bytes(), JOB) == big  # more than -stdin and -env take today


@pytest.mark.parametrize("data, message", [
    ([JOB], "the record is a list, not an object"),
    (stored(id="../../../../tmp/x"), f"the record under the key {JOB} names job id '../../../../tmp/x'"),
    (stored(id="f" * 32), f"names job id '{'f' * 32}'"),
    (stored(id=7), "the record field 'id' is the number 7, not a string"),
    ({"spec": {"command": "true"}, "state": "QUEUED"}, "the record lacks the field 'id'"),
    ({"id": JOB, "state": "QUEUED"}, "the record lacks the field 'spec'"),
    ({"id": JOB, "spec": {"command": "true"}}, "the record lacks the field 'state'"),
    (stored(state="DONE"), "the record has the unknown state 'DONE'"),
    (stored(attempt="1"), "the record field 'attempt' is a string, not a 32-bit integer"),
    (stored(attempt=True), "the record field 'attempt' is a boolean, not a 32-bit integer"),
    (stored(attempt=0), "the record field 'attempt' is 0, not 1 or more"),
    (stored(exit_code=2**40), "the record field 'exit_code' is the number 1099511627776, not a 32-bit integer or null"),
    (stored(host_pid=1.5), "the record field 'host_pid' is the number 1.5, not a 32-bit integer or null"),
    (stored(oom_killed=1), "the record field 'oom_killed' is the number 1, not a boolean"),
    (stored(created_at="yesterday"), "the record field 'created_at' is a string, not a time in unix seconds or null"),
    (stored(finished_at=float("nan")), "the record field 'finished_at' is a number out of range, not a time"),
    (stored(started_at=1e300), "the record field 'started_at' is the number 1e+300, not a time"),
    (stored(cpu_seconds=10**400), "the record field 'cpu_seconds' is a number out of range, not a finite number"),
    (stored(error=["x"]), "the record field 'error' is a list, not a string"),
    (stored(error="\ud800"), "the record field 'error' is a string that is not valid UTF-8"),
    (stored(node="../etc"), "the record field 'node' holds '../etc', not a valid node name"),
    (stored(pool="nope"), "the record field 'pool' holds 'nope', not a valid job id"),
    (stored(owner=None), "the record field 'owner' is null, not a string"),
    (stored(history={"attempt": 1}), "the record field 'history' is an object, not a list"),
    (stored(history=["LOST"]), "the record history entry is a string, not an object"),
    (stored(history=[{"attempt": "1"}]), "the record history entry field 'attempt' is a string"),
    (stored(output_dropped={"stdout": -1}), "the record field 'output_dropped' holds a negative count"),
    (stored(output_dropped={"stdout": "lots"}), "the record field 'output_dropped' at 'stdout' is a string"),
    (stored(spec=[]), "the record field 'spec' is a list, not an object"),
    ({"id": JOB, "spec": {"env": {}}, "state": "QUEUED"}, "the spec lacks the field 'command'"),
    (stored(spec={"command": 5}), "the spec field 'command' is the number 5, not a string"),
    (stored(spec={"command": ""}), "the spec is out of range: empty command"),
    (stored(spec={"env": {"A": 1}}), "the spec field 'env' at 'A' is the number 1, not a string"),
    (stored(spec={"env": {"1A": "x"}}), "the spec is out of range: invalid environment variable name '1A'"),
    (stored(spec={"env": ["A=1"]}), "the spec field 'env' is a list, not an object"),
    (stored(spec={"stdin_data": "!!"}), "the spec field 'stdin_data' is not base64"),
    (stored(spec={"pids": 10**12}), "the spec is out of range: pids limit must be between 1 and 4194304"),
    (stored(spec={"pids": 2**64}), "the spec field 'pids' is the number 18446744073709551616, not a 64-bit"),
    (stored(spec={"cpus": True}), "the spec field 'cpus' is a boolean, not a finite number or null"),
    (stored(spec={"memory_bytes": 1.5e9}), "the spec field 'memory_bytes' is the number 1500000000.0, not a 64-bit"),
    (stored(spec={"retries": 99}), "the spec is out of range: retries must be between 0 and 10, not 99"),
    (stored(spec={"node": "a/b"}), "the spec is out of range: invalid node name 'a/b'"),
])
def test_a_record_that_is_not_lclusterds_is_one_record_error(data, message):
    with pytest.raises(RecordError) as caught:
        JobRecord.from_bytes(json.dumps(data).encode(), JOB)
    assert message in str(caught.value)


@pytest.mark.parametrize("raw, message", [
    (b"not json", "the record is not JSON (Expecting value"),
    (b"\xff\xfe", "the record is not JSON ("),
    (b"[" * 100_000 + b"]" * 100_000, "the record is not JSON ("),
    (b'{"id": "' + JOB.encode() + b'", "spec": {"command": "\\ud800"}, "state": "QUEUED"}',
     "the spec field 'command' is a string that is not valid UTF-8"),
])
def test_raw_values_that_are_not_records(raw, message):
    with pytest.raises(RecordError, match=message.replace("(", r"\(")):
        JobRecord.from_bytes(raw, JOB)


def test_the_key_must_name_a_job_id_itself():
    record = JobRecord(id="../x", spec=JobSpec("true"))
    with pytest.raises(RecordError, match="is under the key '../x', which is not a valid job id"):
        JobRecord.from_bytes(record.to_bytes(), "../x")


def test_pool_records_are_checked_the_same_way():
    pool = PoolRecord(POOL, JobSpec("uname -n"), 1.0, {"n1": JOB}, "alice")
    assert PoolRecord.from_bytes(pool.to_bytes(), POOL) == pool
    for changes, message in [({"id": JOB}, f"names job id '{JOB}'"), ({"members": {"../n": JOB}}, "'../n', not a valid node name"),
                             ({"members": {"n1": "../x"}}, "'../x', not a valid job id"), ({"owner": 1}, "'owner' is the number 1"),
                             ({"spec": {"command": ""}}, "the spec is out of range: empty command")]:
        data = {**pool.to_json(), **changes}
        with pytest.raises(RecordError, match=message):
            PoolRecord.from_bytes(json.dumps(data).encode(), POOL)


def test_node_records_are_checked_the_same_way():
    info = NodeInfo("n1", "localhost:1", 4, "0.1", 2.0, 1 << 30, 100, 2)
    assert NodeInfo.from_bytes(info.to_bytes(), "n1") == info
    assert NodeInfo.from_bytes(json.dumps({"name": "n1", "address": "", "capacity": 1, "later": 1}).encode(), "n1").capacity == 1
    for changes, key, message in [({}, "n2", "the node record under the key n2 names node name 'n1'"),
                                  ({"name": "../n"}, "../n", "which is not a valid node name"),
                                  ({"capacity": -1}, "n1", "the node record field 'capacity' is negative"),
                                  ({"capacity": "4"}, "n1", "the node record field 'capacity' is a string"),
                                  ({"address": None}, "n1", "the node record field 'address' is null")]:
        data = {**json.loads(info.to_bytes()), **changes}
        with pytest.raises(RecordError, match=message):
            NodeInfo.from_bytes(json.dumps(data).encode(), key)


def test_decode_logs_each_bad_key_and_revision_once(caplog):
    caplog.set_level(logging.WARNING, "lclusterd.cluster.decode")
    key = f"/t/jobs/{JOB}"
    for _ in range(3):
        with pytest.raises(RecordError):
            decode.job(key, b"{}", 5)
    with pytest.raises(RecordError):
        decode.job(key, b"[]", 6)  # changed since: said again
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"ignoring the value of {key} (revision 5), which is not a record lclusterd wrote: the record lacks "
                     "the field 'id'",
                     f"ignoring the value of {key} (revision 6), which is not a record lclusterd wrote: the record is a "
                     "list, not an object"]


def test_a_request_for_a_malformed_record_is_not_found_and_says_why():
    from lclusterd.cluster.kv import KeyValue
    kv = KeyValue(f"/t/jobs/{JOB}", b'{"id": "x"}', 9, 9)
    with pytest.raises(MalformedRecord) as caught:
        decode.job_or_missing(kv, JOB)
    assert isinstance(caught.value, JobNotFound)
    assert str(caught.value) == (f"job {JOB} has a malformed record in etcd, which lclusterd ignores (the record lacks "
                                 "the field 'spec')")
    good = KeyValue(f"/t/jobs/{JOB}", full_record().to_bytes(), 10, 9)
    bad = KeyValue(f"/t/jobs/{'1' * 32}", full_record().to_bytes(), 11, 11)  # another job's record under this key
    assert [r.id for r, _ in decode.jobs_of([kv, good, bad])] == [JOB]


def test_stdin_travels_in_base64():
    data = stored()
    assert base64.b64decode(data["spec"]["stdin_data"]) == b"\0\xff"
