"""How what happens to a job on its node changes its record (the node's side of the state
machine). Pure.

The node's reports about a job it owns are typed updates (Started, Ended, Cancelled,
Refused, Lost, GiveBack, Recovered); `fold` turns the record as last written plus the
updates not yet written into the record to write, which the worker's reporter (reporter.py)
then writes in one guarded transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from lclusterd.errors import InvalidTransition
from lclusterd.model import ASSIGNED, CANCELLED, EXITED, FAILED, KILLED, LOST, OOM_KILLED, RUNNING, TIMED_OUT, JobRecord
from lclusterd.runtime.spec import RunResult
from lclusterd.states import RUN_ENDINGS


@dataclass(frozen=True)
class Started:
    """The runtime started the job (its command was executed)."""

    host_pid: int
    started_at: float
    address: str = ""  # net="bridge": its address on the node's bridge


@dataclass(frozen=True)
class Ended:
    """The run ended; `stderr_tail` is its last stderr line when its shell could not run a
    command (exit 126 or 127), to quote in the reason."""

    result: RunResult
    stderr_tail: str = ""


@dataclass(frozen=True)
class Cancelled:
    """Killed before it was handed to the runtime."""

    reason: str


@dataclass(frozen=True)
class Refused:
    """The runtime would not take it (a spec this node cannot run, the runtime gone)."""

    reason: str


@dataclass(frozen=True)
class Lost:
    """The node can no longer say how it ended (it restarted under it)."""

    reason: str


@dataclass(frozen=True)
class GiveBack:
    """Back to the queue: assigned here, never handed to the runtime, and the node is stopping."""


@dataclass(frozen=True)
class Recovered:
    """The terminal record an earlier run of this node journaled (journal.py) and could not write."""

    record: JobRecord


Update = Started | Ended | Cancelled | Refused | Lost | GiveBack | Recovered


def fold(record: JobRecord, updates: list[Update], kill_requested: bool = False, shutdown_note: str = "",
         submitted: bool = False) -> JobRecord | GiveBack:
    """The record after `updates`, in order (one the state machine does not allow from where
    the record is by then is skipped), or GiveBack when the job goes back to the queue: only
    a job still as it was assigned, never submitted to the runtime. `record` itself when
    nothing changes."""
    new = record
    for update in updates:
        if isinstance(update, GiveBack):
            if new is record and record.state == ASSIGNED and not submitted:
                return update
            continue
        try:
            new = _apply(new, update, kill_requested, shutdown_note)
        except InvalidTransition:
            continue  # e.g. a start reported after the job was already recorded lost
    return new


def _apply(record: JobRecord, update: Update, kill_requested: bool, shutdown_note: str) -> JobRecord:
    if isinstance(update, Started):
        return started(record, update.host_pid, update.started_at, update.address)
    if isinstance(update, Ended):
        return ended(record, update.result, kill_requested, shutdown_note, update.stderr_tail)
    if isinstance(update, Cancelled):
        return cancelled(record, update.reason)
    if isinstance(update, Refused):
        return refused(record, update.reason)
    if isinstance(update, Recovered):
        return recovered(record, update.record)
    return lost(record, update.reason)


def started(record: JobRecord, host_pid: int | None, started_at: float | None, address: str | None = "") -> JobRecord:
    """ASSIGNED -> RUNNING."""
    return record.moved_to(RUNNING, host_pid=host_pid, started_at=started_at or time.time(), address=address or "")


# What the job's /bin/sh -c exits with when it cannot run a command (POSIX).
_SHELL_COULD_NOT_RUN = {126: "found a command it cannot execute", 127: "could not find a command in the rootfs"}


def ended(record: JobRecord, result: RunResult, kill_requested: bool = False, shutdown_note: str = "",
          stderr_tail: str = "") -> JobRecord:
    """The terminal record for a run's result. A job that ends without having been recorded
    RUNNING passes through RUNNING first (a short job whose start and end are written together)
    unless it never started at all (FAILED before exec). `stderr_tail`: the last line the job
    wrote to stderr, quoted in the reason when its shell could not run a command (exit 126/127)."""
    state = result.status if result.status in RUN_ENDINGS else FAILED
    if record.state == ASSIGNED:
        if state == FAILED and result.host_pid is None:
            return record.moved_to(FAILED, error=result.error or "the runtime could not start the job",
                                   finished_at=result.finished_at or time.time())
        record = started(record, result.host_pid, result.started_at, result.address)
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


def recovered(record: JobRecord, journaled: JobRecord) -> JobRecord:
    """The journaled terminal record in place of `record`, which must be the same attempt on the
    same node, still ASSIGNED or RUNNING: the record the earlier run would have written (it
    folded its own updates from there). InvalidTransition otherwise: that result was rejected."""
    same = journaled.id == record.id and journaled.attempt == record.attempt and journaled.node == record.node
    if record.terminal or not journaled.terminal or not same:
        raise InvalidTransition(record.state, journaled.state)
    return journaled
