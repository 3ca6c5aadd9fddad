"""The messages between the launcher (daemon side) and the fork server, both directions.

Every message is a frozen dataclass; on the wire (channel.py) it is a JSON object whose
"type" names the class. decode_request and decode_event check every field's type and
raise ProtocolError for anything else, so a malformed message is refused, never half
understood. The job's stdin, stdout and stderr ride along with Start as descriptors.

    launcher -> fork server: Start, Kill, Sweep, Shutdown, Exec (with its stdout and stderr
                             as descriptors), ExecKill
    fork server -> launcher: Ready (or NotReady) once, then JobStarted, JobFinished,
                             Swept, ExecFinished, and Bye as the last message
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from lclusterd import limits
from lclusterd.errors import InvalidSpec
from lclusterd.runtime.spec import RunResult, RuntimeSpec


class ProtocolError(ValueError):
    """A message that is not one this protocol knows, or a field of the wrong type."""


@dataclass(frozen=True)
class Start:
    spec: RuntimeSpec


@dataclass(frozen=True)
class Kill:
    """SIGTERM to every process of the job, SIGKILL after `grace` (None: the job's own)."""

    job_id: str
    grace: float | None = None


@dataclass(frozen=True)
class Sweep:
    """End and remove the jobs a previous fork server left behind."""


@dataclass(frozen=True)
class Shutdown:
    kill: bool = True  # kill the running jobs; False: let them finish first


@dataclass(frozen=True)
class Exec:
    """Run `argv` inside the running job `job_id` (lclient -exec), as one of its processes."""

    exec_id: str
    job_id: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class ExecKill:
    exec_id: str


@dataclass(frozen=True)
class ExecFinished:
    """An Exec's end: its exit code, or the signal that ended it, or why it never ran."""

    exec_id: str
    exit_code: int | None = None
    signal: int | None = None
    error: str = ""


@dataclass(frozen=True)
class Ready:
    pid: int
    cgroup_version: int


@dataclass(frozen=True)
class NotReady:
    """The fork server could not start; `reason` says why in one line."""

    reason: str


@dataclass(frozen=True)
class JobStarted:
    job_id: str
    host_pid: int
    started_at: float
    address: str | None = None  # its address on the node's bridge (net="bridge")


@dataclass(frozen=True)
class JobFinished:
    result: RunResult


@dataclass(frozen=True)
class Swept:
    job_ids: tuple[str, ...]


@dataclass(frozen=True)
class Bye:
    """The fork server's last message: every job has ended and been reported."""


Request = Start | Kill | Sweep | Shutdown | Exec | ExecKill
Event = Ready | NotReady | JobStarted | JobFinished | Swept | ExecFinished | Bye
_REQUESTS = {cls.__name__: cls for cls in (Start, Kill, Sweep, Shutdown, Exec, ExecKill)}
_EVENTS = {cls.__name__: cls for cls in (Ready, NotReady, JobStarted, JobFinished, Swept, ExecFinished, Bye)}
MAX_EXEC_ARGS, MAX_EXEC_BYTES = 4096, 1 << 20


def encode(message: Request | Event) -> dict[str, Any]:
    data: dict[str, Any] = {"type": type(message).__name__}
    for f in fields(message):  # type: ignore[arg-type]
        value = getattr(message, f.name)
        data[f.name] = value.to_json() if isinstance(value, (RuntimeSpec, RunResult)) else value
    return data


def decode_request(data: Any) -> Request:
    kind, body = _split(data, _REQUESTS)
    if kind is Start:
        try:
            return Start(RuntimeSpec.from_json(body.get("spec")))
        except InvalidSpec as error:
            raise ProtocolError(str(error)) from None
    if kind is Kill:
        grace = _field(body, "grace", (int, float, type(None)))
        if grace is not None:
            try:
                limits.check_grace(grace)
            except InvalidSpec as error:
                raise ProtocolError(str(error)) from None
        return Kill(_field(body, "job_id", (str,)), grace)
    if kind is Shutdown:
        return Shutdown(_field(body, "kill", (bool,)))
    if kind is Exec:
        return _exec(body)
    if kind is ExecKill:
        return ExecKill(_field(body, "exec_id", (str,)))
    return Sweep()


def _exec(body: dict[str, Any]) -> Exec:
    argv = _field(body, "argv", (list, tuple))
    if (not argv or len(argv) > MAX_EXEC_ARGS or not all(isinstance(a, str) and "\0" not in a for a in argv)
            or sum(len(a) for a in argv) > MAX_EXEC_BYTES):
        raise ProtocolError("message Exec has no valid argv (1 to 4096 strings without NUL, at most 1 MiB)")
    return Exec(_field(body, "exec_id", (str,)), _field(body, "job_id", (str,)), tuple(argv))


def decode_event(data: Any) -> Event:
    kind, body = _split(data, _EVENTS)
    try:
        if kind is JobFinished:
            return JobFinished(RunResult.from_json(_field(body, "result", (dict,))))
        if kind is Swept:
            return Swept(tuple(_field(body, "job_ids", (list,))))
        return kind(**{f.name: body[f.name] for f in fields(kind)})
    except (KeyError, TypeError) as error:  # a field missing, or one the class does not have
        raise ProtocolError(f"malformed message {body['type']}: {error}") from None


def _split(data: Any, known: dict[str, type]) -> tuple[type, dict[str, Any]]:
    if not isinstance(data, dict) or data.get("type") not in known:
        kind = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise ProtocolError(f"unknown message {kind!r}")
    return known[data["type"]], data


def _field(body: dict[str, Any], name: str, types: tuple[type, ...]) -> Any:
    value = body.get(name)
    if name not in body or (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        raise ProtocolError(f"message {body['type']} has no valid field {name!r}")
    return value
