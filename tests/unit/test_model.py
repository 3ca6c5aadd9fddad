"""Job ids, specs, records and the state machine (pure)."""

import json

import pytest

from lclusterd.errors import InvalidSpec, InvalidTransition
from lclusterd.model import (ALLOWED, ASSIGNED, CANCELLED, EXITED, LOST, QUEUED, RUNNING, STATES, TERMINAL, JobRecord,
                             JobSpec, NodeInfo, new_job_id, parse_job_id)


def test_new_job_id_is_32_hex():
    job = new_job_id()
    assert len(job) == 32 and int(job, 16) >= 0 and parse_job_id(job) == job


@pytest.mark.parametrize("text", ["0123456789abcdef0123456789abcdef", "0123456789ABCDEF0123456789ABCDEF",
                                  "01234567-89ab-cdef-0123-456789abcdef", " 0123456789abcdef0123456789abcdef\n"])
def test_parse_job_id_accepts_plain_and_dashed(text):
    assert parse_job_id(text) == "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("text", ["", "nope", "0123", "g123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef0",
                                  "0123-4567-89ab-cdef-0123456789abcdef", "../../etc/passwd"])
def test_parse_job_id_rejects_malformed(text):
    with pytest.raises(InvalidSpec, match="malformed uuid"):
        parse_job_id(text)


def test_terminal_states_allow_nothing():
    for state in TERMINAL:
        assert ALLOWED[state] == frozenset()
    assert set(ALLOWED) == set(STATES)


@pytest.mark.parametrize("path", [
    [QUEUED, ASSIGNED, RUNNING, EXITED],
    [QUEUED, CANCELLED],
    [QUEUED, ASSIGNED, CANCELLED],
    [QUEUED, ASSIGNED, RUNNING, LOST],
    [QUEUED, ASSIGNED, QUEUED, ASSIGNED, RUNNING, "KILLED"],
])
def test_allowed_paths(path):
    record = JobRecord(id="a" * 32, spec=JobSpec("true"))
    for state in path[1:]:
        record = record.moved_to(state)
    assert record.state == path[-1]


@pytest.mark.parametrize("current, target", [(QUEUED, RUNNING), (QUEUED, EXITED), (EXITED, RUNNING), (CANCELLED, QUEUED),
                                             (RUNNING, QUEUED), (RUNNING, CANCELLED), (LOST, RUNNING)])
def test_forbidden_transitions(current, target):
    record = JobRecord(id="a" * 32, spec=JobSpec("true"), state=current)
    with pytest.raises(InvalidTransition, match=f"cannot go from {current} to {target}"):
        record.moved_to(target)


def test_terminal_move_stamps_finished_at():
    record = JobRecord(id="a" * 32, spec=JobSpec("true"), state=RUNNING).moved_to(EXITED, exit_code=0)
    assert record.finished_at and record.terminal


def test_record_round_trip_through_bytes():
    spec = JobSpec("cat", env={"A": "1"}, memory_bytes=1 << 26, cpus=0.5, pids=32, timeout=3.5, stdin_data=b"\x00\xff", retries=2)
    record = JobRecord(id="b" * 32, spec=spec, state=RUNNING, node="n1", created_at=1.5, host_pid=7, exit_code=None)
    again = JobRecord.from_bytes(record.to_bytes(), record.id)
    assert again == record


def test_node_info_round_trip():
    info = NodeInfo("n1", "localhost:1", 4, "0.1", 2.0)
    assert NodeInfo.from_bytes(info.to_bytes(), "n1") == info


@pytest.mark.parametrize("spec, message", [
    (JobSpec(""), "empty command"),
    (JobSpec("  \n"), "empty command"),
    (JobSpec("a\0b"), "NUL"),
    (JobSpec("x", env={"1A": "b"}), "invalid environment variable name '1A'"),
    (JobSpec("x", memory_bytes=0), "memory limit must be between 1 MiB and 1 PiB"),
    (JobSpec("x", memory_bytes=1 << 62), "memory limit must be between 1 MiB and 1 PiB"),
    (JobSpec("x", cpus=0), "cpus must be between 0.01 and 4096"),
    (JobSpec("x", cpus=float("inf")), "cpus must be between 0.01 and 4096"),
    (JobSpec("x", pids=-1), "pids limit must be between 1 and 4194304"),
    (JobSpec("x", pids=1_000_000_000_000), "pids limit must be between 1 and 4194304"),
    (JobSpec("x", timeout=0), "timeout must be more than 0 and at most 365 days"),
    (JobSpec("x", timeout=400 * 86400), "timeout must be more than 0 and at most 365 days"),
    (JobSpec("x", timeout=float("inf")), "at most 365 days"),
    (JobSpec("x", timeout=float("nan")), "at most 365 days"),
    (JobSpec("x", stdin_data=b"x" * (1 << 20)), "stdin is 1048576 bytes, more than the limit of 256 KiB"),
    (JobSpec("x" * (65 << 10)), "the command is 66560 bytes, more than the limit of 64 KiB"),
    (JobSpec("x", env={f"V{i}": "y" * 1000 for i in range(70)}), "the environment is 70340 bytes, more than the limit of 64 KiB"),
    (JobSpec("\x01" * (60 << 10), env={"A": "\x01" * (60 << 10)}),
     "the job's spec takes 737406 bytes as stored, more than the limit of 512 KiB"),
    (JobSpec("x", retries=11), "retries must be between 0 and 10"),
])
def test_spec_validation_messages(spec, message):
    with pytest.raises(InvalidSpec, match=message):
        spec.validate()


def test_with_changes_copies_and_checks_field_names():
    record = JobRecord(id="a" * 32, spec=JobSpec(command="true"), history=[{"attempt": 1}])
    copy = record.with_changes(state="ASSIGNED", node="n1")
    assert (copy.state, copy.node, record.state, record.node) == ("ASSIGNED", "n1", "QUEUED", "")
    assert copy.spec is record.spec and copy == JobRecord(**{**record.__dict__, "state": "ASSIGNED", "node": "n1"})
    with pytest.raises(TypeError, match="no field 'nope'"):
        record.with_changes(nope=1)
    assert JobRecord.from_bytes(copy.to_bytes(), copy.id) == copy


def test_fields_a_newer_version_wrote_are_kept_and_written_back():
    record = JobRecord(id="b" * 32, spec=JobSpec(command="true"))
    newer = record.to_json()
    newer["priority"] = 7  # say, a field a later lclusterd adds
    newer["spec"]["gpus"] = 1
    read = JobRecord.from_json(newer, record.id)
    assert read == record  # what this version knows is the same ...
    moved = read.moved_to(ASSIGNED, node="n1")  # ... and a transition keeps the rest
    again = json.loads(moved.to_bytes())
    assert (again["priority"], again["spec"]["gpus"], again["state"]) == (7, 1, ASSIGNED)
    assert "unknown" not in again and "unknown" not in again["spec"]
