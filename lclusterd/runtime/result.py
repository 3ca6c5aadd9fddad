"""How a job's run ended, from what the fork server saw of it. Pure.

The facts: the job init's failure report (a step failed before exec), the wait status of
its PID 1, why the runtime ended it (a kill request or the timeout), its cgroup's
accounting, and what the log cap dropped. `result_of` turns them into one RunResult; the
order of its checks is the precedence of the reasons (a set-up failure over a timeout over
a kill over an OOM kill over a signal).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from lclusterd.runtime.cgroups import CgroupStats
from lclusterd.runtime.spec import EXITED, FAILED, KILLED, OOM_KILLED, TIMED_OUT, RunResult


@dataclass
class RunFacts:
    job_id: str
    host_pid: int
    started_at: float
    timeout: float | None = None
    wait_status: int | None = None
    failure: dict[str, Any] | None = None  # {"step", "errno", "detail"} from the job init
    end_reason: str | None = None  # KILLED or TIMED_OUT once the runtime started ending it
    stats: CgroupStats | None = None
    dropped: dict[str, int] = field(default_factory=dict)  # stream -> bytes the log cap dropped
    written: dict[str, int] = field(default_factory=dict)  # stream -> bytes kept in the log file
    notes: list[str] = field(default_factory=list)  # clean-up trouble worth telling
    address: str | None = None  # its address on the node's bridge (net="bridge")


def result_of(facts: RunFacts, finished_at: float) -> RunResult:
    result = RunResult(job_id=facts.job_id, status=EXITED, host_pid=facts.host_pid, started_at=facts.started_at,
                       finished_at=finished_at, stdout_dropped_bytes=facts.dropped.get("stdout", 0),
                       stderr_dropped_bytes=facts.dropped.get("stderr", 0), address=facts.address,
                       stdout_bytes=facts.written.get("stdout", 0), stderr_bytes=facts.written.get("stderr", 0))
    if facts.stats is not None:
        result.oom_kills = facts.stats.oom_kills
        result.peak_memory_bytes = facts.stats.peak_memory_bytes
        result.cpu_seconds = facts.stats.cpu_seconds
    if facts.wait_status is not None:
        if os.WIFSIGNALED(facts.wait_status):
            result.signal = os.WTERMSIG(facts.wait_status)
        else:
            result.exit_code = os.waitstatus_to_exitcode(facts.wait_status)
    if facts.failure is not None:  # it never ran: no exit code, signal or pid of its own
        result.status, result.exit_code, result.signal, result.host_pid, result.address = FAILED, None, None, None, None
        result.error = f"{facts.failure.get('step')}: {facts.failure.get('detail')}"
    elif facts.end_reason == TIMED_OUT:
        result.status = TIMED_OUT
        result.error = f"timed out after {facts.timeout:g} s" if facts.timeout else "timed out"
    elif facts.end_reason == KILLED:
        result.status = KILLED
    elif result.oom_kills:
        result.status = OOM_KILLED
        result.error = f"{result.oom_kills} process(es) killed by the kernel OOM killer"
    elif result.signal is not None:
        result.status = KILLED
    if facts.notes:
        result.error = "; ".join([result.error, *facts.notes] if result.error else facts.notes)
    return result
