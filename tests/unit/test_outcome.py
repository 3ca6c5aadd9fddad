"""How runtime results become job records (pure)."""

import pytest

from lclusterd.cluster import outcome
from lclusterd.errors import InvalidTransition
from lclusterd.model import ASSIGNED, RUNNING, JobRecord, JobSpec
from lclusterd.runtime.spec import RunResult


def record(state=RUNNING, **kw):
    return JobRecord(id="c" * 32, spec=JobSpec("x", **kw), state=state, node="n1")


def test_exit_code():
    new = outcome.ended(record(), RunResult("c" * 32, "EXITED", exit_code=3, host_pid=5, finished_at=9.0))
    assert (new.state, new.exit_code, new.finished_at, new.error) == ("EXITED", 3, 9.0, "")


def test_kill_by_request_says_so():
    new = outcome.ended(record(), RunResult("c" * 32, "KILLED", signal=9), kill_requested=True)
    assert (new.state, new.signal, new.error) == ("KILLED", 9, "killed by request")


def test_kill_at_shutdown_says_so():
    new = outcome.ended(record(), RunResult("c" * 32, "KILLED", signal=15), shutdown_note="stopped by the shutdown")
    assert new.error == "stopped by the shutdown"


def test_oom_and_timeout():
    assert outcome.ended(record(), RunResult("c" * 32, "OOM_KILLED", signal=9)).oom_killed
    assert outcome.ended(record(timeout=2.0), RunResult("c" * 32, "TIMED_OUT", signal=9)).error == "timed out after 2s"


def test_failed_before_start_goes_straight_to_failed():
    new = outcome.ended(record(ASSIGNED), RunResult("c" * 32, "FAILED", error="exec: /bin/foo not found"))
    assert (new.state, new.error, new.started_at) == ("FAILED", "exec: /bin/foo not found", None)


def test_short_job_passes_through_running():
    new = outcome.ended(record(ASSIGNED), RunResult("c" * 32, "EXITED", exit_code=0, host_pid=4, started_at=1.0))
    assert (new.state, new.started_at, new.host_pid) == ("EXITED", 1.0, 4)


def test_lost_and_cancelled():
    assert outcome.lost(record(), "gone").state == "LOST"
    assert outcome.cancelled(record(ASSIGNED), "by request").state == "CANCELLED"
    with pytest.raises(InvalidTransition):
        outcome.cancelled(record(RUNNING), "too late")


def test_a_shell_that_could_not_run_a_command_is_explained():
    missing = outcome.ended(record(), RunResult("c" * 32, "EXITED", exit_code=127), stderr_tail="sh: nosuchcmd: not found")
    assert (missing.state, missing.exit_code) == ("EXITED", 127)
    assert missing.error == "the job's shell could not find a command in the rootfs (sh: nosuchcmd: not found)"
    denied = outcome.ended(record(), RunResult("c" * 32, "EXITED", exit_code=126))
    assert denied.error == "the job's shell found a command it cannot execute"
    assert outcome.ended(record(), RunResult("c" * 32, "EXITED", exit_code=1), stderr_tail="boom").error == ""
