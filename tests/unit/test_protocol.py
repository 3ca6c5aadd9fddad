"""The launcher <-> fork server messages: every message round-trips, and a malformed or
hostile one is refused with ProtocolError (the fork server must never fail on one)."""

from __future__ import annotations

import json
import math

import pytest

from lclusterd.runtime import protocol
from lclusterd.runtime.spec import RunResult, RuntimeSpec

SPEC = RuntimeSpec(job_id="a" * 32, argv=["/bin/sh", "-c", "true"], rootfs="/r", env={"A": "1"}, memory_bytes=64 << 20,
                   timeout=5.0, stdin_data=b"\x00in", stdout_path="/l/a.out", stderr_path="/l/a.err", max_log_bytes=1 << 20,
                   user="app:staff")


def wire(message) -> dict:
    """As the channel carries it: through JSON."""
    return json.loads(json.dumps(protocol.encode(message)))


@pytest.mark.parametrize("message", [protocol.Start(SPEC), protocol.Kill("a" * 32, 0.5), protocol.Kill("b", None),
                                     protocol.Sweep(), protocol.Shutdown(False), protocol.Exec("e1", "a" * 32, ("sh", "-c", "id")),
                                     protocol.ExecKill("e1")])
def test_requests_round_trip(message):
    assert protocol.decode_request(wire(message)) == message


@pytest.mark.parametrize("message", [protocol.Ready(12, 2), protocol.NotReady("no cgroups"), protocol.Bye(),
                                     protocol.JobStarted("a" * 32, 99, 1.5), protocol.Swept(("x", "y")),
                                     protocol.JobFinished(RunResult("a" * 32, "EXITED", exit_code=0, stdout_dropped_bytes=7)),
                                     protocol.ExecFinished("e1", exit_code=3), protocol.ExecFinished("e2", signal=9),
                                     protocol.ExecFinished("e3", error="not running")])
def test_events_round_trip(message):
    assert protocol.decode_event(wire(message)) == message


def start_with(**changes) -> dict:
    data = wire(protocol.Start(SPEC))
    data["spec"].update(changes)
    return data


@pytest.mark.parametrize("data, message", [
    ({"type": "Frobnicate"}, "unknown message"),
    ([1, 2], "unknown message"),
    ({"op": "start"}, "unknown message"),
    ({"type": "Start"}, "spec is not an object"),
    ({"type": "Start", "spec": "x"}, "spec is not an object"),
    (start_with(timeout="600h"), "timeout has the wrong type"),
    (start_with(memory_bytes=True), "memory_bytes has the wrong type"),
    (start_with(memory_bytes=1.5), "memory_bytes has the wrong type"),
    (start_with(argv="sh"), "argv has the wrong type"),
    (start_with(argv=["sh", 1]), "argv must hold strings"),
    (start_with(env={"A": 1}), "env must map strings"),
    (start_with(stdin_data="!!not base64!!"), "not base64"),
    (start_with(evil=1), "unknown field 'evil'"),
    (start_with(user=1000), "user has the wrong type"),
    ({"type": "Kill", "job_id": 5, "grace": None}, "valid field 'job_id'"),
    ({"type": "Kill", "job_id": "a", "grace": -1}, "grace period"),
    ({"type": "Kill", "job_id": "a", "grace": math.inf}, "grace period"),
    ({"type": "Shutdown", "kill": "yes"}, "valid field 'kill'"),
    ({"type": "Exec", "exec_id": "e", "job_id": "j", "argv": []}, "no valid argv"),
    ({"type": "Exec", "exec_id": "e", "job_id": "j", "argv": ["sh", 1]}, "no valid argv"),
    ({"type": "Exec", "exec_id": "e", "job_id": "j", "argv": ["a\0b"]}, "no valid argv"),
    ({"type": "Exec", "exec_id": "e", "job_id": "j", "argv": ["x" * (1 << 20), "y"]}, "no valid argv"),
    ({"type": "Exec", "exec_id": 1, "job_id": "j", "argv": ["true"]}, "valid field 'exec_id'"),
    ({"type": "ExecKill"}, "valid field 'exec_id'"),
])
def test_malformed_requests_are_refused(data, message):
    with pytest.raises(protocol.ProtocolError, match=message):
        protocol.decode_request(data)


def test_a_spec_missing_a_required_field_is_refused():
    data = wire(protocol.Start(SPEC))
    del data["spec"]["rootfs"]
    with pytest.raises(protocol.ProtocolError, match="lacks the field 'rootfs'"):
        protocol.decode_request(data)
