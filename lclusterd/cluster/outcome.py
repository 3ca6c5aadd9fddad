"""How runtime events change a job record (the worker's side of the state machine). Pure."""

from __future__ import annotations

import time

from lclusterd.model import (ASSIGNED, CANCELLED, EXITED, FAILED, KILLED, LOST, OOM_KILLED, RUNNING, TIMED_OUT,
                             JobRecord)
from lclusterd.runtime.spec import RunResult

_STATE_OF_STATUS = {"EXITED": EXITED, "KILLED": KILLED, "OOM_KILLED": OOM_KILLED, "TIMED_OUT": TIMED_OUT, "FAILED": FAILED}


def started(record: JobRecord, host_pid: int | None, started_at: float | None) -> JobRecord:
    """ASSIGNED -> RUNNING."""
    return record.moved_to(RUNNING, host_pid=host_pid, started_at=started_at or time.time())


# What the job's /bin/sh -c exits with when it cannot run a command (POSIX).
_SHELL_COULD_NOT_RUN = {126: "found a command it cannot execute", 127: "could not find a command in the rootfs"}


def ended(record: JobRecord, result: RunResult, kill_requested: bool = False, shutdown_note: str = "",
          stderr_tail: str = "") -> JobRecord:
    """The terminal record for a run's result. A job that ends without having been recorded
    RUNNING passes through RUNNING first (a short job whose start and end are written together)
    unless it never started at all (FAILED before exec). `stderr_tail`: the last line the job
    wrote to stderr, quoted in the reason when its shell could not run a command (exit 126/127)."""
    state = _STATE_OF_STATUS.get(result.status, FAILED)
    if record.state == ASSIGNED:
        if state == FAILED and result.host_pid is None:
            return record.moved_to(FAILED, error=result.error or "the runtime could not start the job",
                                   finished_at=result.finished_at or time.time())
        record = started(record, result.host_pid, result.started_at)
    error = result.error
    if state == KILLED and not error:
        error = "killed by request" if kill_requested else (shutdown_note or "killed")
    elif state == KILLED and kill_requested:
        error = f"killed by request ({error})"
    elif state == KILLED and shutdown_note:
        error = f"{shutdown_note} ({error})"
    elif state == TIMED_OUT and not error and record.spec.timeout:
        error = f"timed out after {record.spec.timeout:g}s"
    elif state == OOM_KILLED and not error:
        error = "killed by the kernel OOM killer"
    elif state == EXITED and not error and result.exit_code in _SHELL_COULD_NOT_RUN:
        error = f"the job's shell {_SHELL_COULD_NOT_RUN[result.exit_code]}"
        if stderr_tail:
            error += f" ({stderr_tail})"
    return record.moved_to(
        state,
        exit_code=result.exit_code,
        signal=result.signal,
        oom_killed=state == OOM_KILLED or result.oom_kills > 0,
        error=error,
        host_pid=result.host_pid or record.host_pid,
        peak_memory_bytes=result.peak_memory_bytes,
        cpu_seconds=result.cpu_seconds,
        finished_at=result.finished_at or time.time(),
        output_dropped=_dropped(result),
    )


def _dropped(result: RunResult) -> dict[str, int]:
    counts = {"stdout": result.stdout_dropped_bytes, "stderr": result.stderr_dropped_bytes}
    return {stream: count for stream, count in counts.items() if count}


def cancelled(record: JobRecord, reason: str) -> JobRecord:
    """ASSIGNED -> CANCELLED: killed before it was started."""
    return record.moved_to(CANCELLED, error=reason)


def refused(record: JobRecord, reason: str) -> JobRecord:
    """ASSIGNED -> FAILED: the runtime refused the job (bad spec for this node, helper gone)."""
    return record.moved_to(FAILED, error=reason)


def lost(record: JobRecord, reason: str) -> JobRecord:
    """ASSIGNED/RUNNING -> LOST: the node can no longer say how the job ended."""
    return record.moved_to(LOST, error=reason)
