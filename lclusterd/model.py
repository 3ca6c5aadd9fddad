"""Jobs and nodes as the control plane sees them: ids, specs, records, the state machine. Pure.

Records are read from etcd strictly: from_json takes the id the record's key names and checks
every field (records.py), raising RecordError for anything lclusterd did not write.

A JobRecord is what etcd holds under jobs/<uuid>; it is the truth about a job. Every state
change goes through `JobRecord.moved_to`, which refuses what ALLOWED does not list. A
PoolRecord (pools/<uuid>) names the member jobs of an -all-nodes pool; `pool_outcome` sums
their states up into the pool's.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

from lclusterd import limits, records
from lclusterd.errors import InvalidSpec, InvalidTransition, RecordError
from lclusterd.nodeinfo import NodeInfo  # a node is part of the model; its record lives apart
from lclusterd.states import (ASSIGNED, CANCELLED, EXITED, FAILED, KILLED, LOST, OOM_KILLED, QUEUED, RUN_ENDINGS,
                              RUNNING, STATES, TERMINAL, TIMED_OUT)

__all__ = ["ALLOWED", "ASSIGNED", "CANCELLED", "EXITED", "FAILED", "KILLED", "LOST", "OOM_KILLED", "QUEUED", "RUNNING",
           "STATES", "TERMINAL", "TIMED_OUT", "ARRAY", "POOL", "JobRecord", "JobSpec", "NodeInfo", "PoolRecord", "new_job_id",
           "parse_job_id", "pool_outcome"]

SCHEMA_VERSION = 1
DEFAULT_PIDS = 1024  # a fork bomb stays inside this unless the job asks for more
MAX_RETRIES = 10


ALLOWED: dict[str, frozenset[str]] = {
    QUEUED: frozenset({ASSIGNED, CANCELLED}),
    # ASSIGNED -> QUEUED: a node gives back an assignment it never started (shutdown).
    # ASSIGNED -> FAILED: the runtime refused the job before it started.
    ASSIGNED: frozenset({RUNNING, CANCELLED, FAILED, LOST, QUEUED}),
    RUNNING: frozenset(RUN_ENDINGS) | {LOST},
    **{state: frozenset() for state in TERMINAL},
}

_HEX_ID = records.JOB_ID
_DASHED_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NODE_NAME = records.NODE_NAME


def new_job_id() -> str:
    """A fresh job id: uuid4 as 32 lower-case hex digits."""
    return uuid.uuid4().hex


def parse_job_id(text: str) -> str:
    """The canonical (32 hex digits) form of a job id given with or without dashes.

    Raises InvalidSpec naming the bad input."""
    candidate = (text or "").strip().lower()
    if _HEX_ID.match(candidate):
        return candidate
    if _DASHED_ID.match(candidate):
        return candidate.replace("-", "")
    shown = text if len(text or "") <= 40 else text[:40] + "…"
    raise InvalidSpec(f"malformed uuid {shown!r}: expected 32 hex digits")


@dataclass
class JobSpec:
    """What the user asked to run. Limits left as None take the node's defaults."""

    command: str
    env: dict[str, str] = field(default_factory=dict)
    memory_bytes: int | None = None
    cpus: float | None = None
    pids: int | None = None
    timeout: float | None = None
    stdin_data: bytes = b""
    retries: int = 0
    node: str = ""  # pinned: only this node may run it
    image: str = ""  # the image it runs in, on a node that has it ("": the node's rootfs, busybox)
    net: str = "none"  # "none" (loopback only) or "bridge" (an address on its node's bridge)
    publish: list[str] = field(default_factory=list)  # HOSTPORT:PORT[/udp], with net="bridge"
    volumes: list[str] = field(default_factory=list)  # HOST:PATH[:ro], HOST under a --volume-root of its node
    workdir: str = ""  # the command's working directory; "": its image's WorkingDir, or /
    # -after: job, pool or array ids that must all end EXITED 0 before this one may start
    after: list[str] = field(default_factory=list)
    run_as: str = ""  # USER[:GROUP] inside the job (limits.parse_user); "": its image's User, or root
    # fields a newer lclusterd wrote that this one does not know: kept and written back as they
    # were, so nodes of two versions can share one etcd during an upgrade
    unknown: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def validate(self, stored: bool = False) -> None:
        """Raise InvalidSpec with a sentence for the first problem found (ranges the runtime
        checks too are checked again there, with the node's own facts). stored: a spec read
        from a record, whose sizes are not held to today's limits again (an older version may
        have allowed more, and etcd bounds what it holds)."""
        limits.check_image(self.image)
        if self.command or not self.image:  # no command: the image's Entrypoint and Cmd (checked by its node)
            limits.check_command(self.command)
        limits.check_env(self.env)
        limits.check_memory(self.memory_bytes)
        limits.check_cpus(self.cpus)
        limits.check_pids(self.pids)
        limits.check_timeout(self.timeout)
        if not 0 <= self.retries <= MAX_RETRIES:
            raise InvalidSpec(f"retries must be between 0 and {MAX_RETRIES}, not {self.retries}")
        if self.node and not NODE_NAME.match(self.node):
            raise InvalidSpec(f"invalid node name {self.node!r}: letters, digits, '.', '_' or '-' (at most 63)")
        limits.check_network(self.net, self.publish)
        limits.check_volumes(self.volumes)
        limits.check_workdir(self.workdir)
        limits.check_after(self.after)
        limits.parse_user(self.run_as)
        if not stored:
            limits.check_no_reserved_env(self.env)
            limits.check_sizes(self.command, self.env, self.stdin_data)
            if self._stored_size_bound() > limits.MAX_SPEC_BYTES:
                limits.check_spec_bytes(len(json.dumps(self.to_json(), separators=(",", ":"))))

    def without_array_env(self) -> JobSpec:
        """A copy without the variables lclusterd sets for array members (an array's own spec)."""
        new = object.__new__(JobSpec)
        new.__dict__.update(self.__dict__)
        new.env = {k: v for k, v in self.env.items() if not k.startswith(limits.ARRAY_ENV_PREFIX)}
        return new

    def _stored_size_bound(self) -> int:
        """At least the bytes of this spec as a record stores it (JSON escapes a character in
        at most 12 bytes; stdin goes in base64), without encoding it."""
        text = len(self.command) + sum(len(k) + len(v) for k, v in self.env.items()) + len(self.node)
        text += sum(len(entry) + 3 for entry in (*self.publish, *self.volumes)) + len(self.workdir) + len(self.net)
        text += len(self.run_as)
        return 12 * text + (len(self.stdin_data) + 2) // 3 * 4 + 1024

    def to_json(self) -> dict[str, Any]:
        # Shallow copies here and in JobRecord: dataclasses.asdict walks and copies every value,
        # and a record is encoded several times per job (docs/conventions.md, hot paths).
        data = dict(self.__dict__)
        data["stdin_data"] = base64.b64encode(self.stdin_data).decode()
        for name, default in _SPEC_DEFAULTS:  # written only when set: other records stay as older daemons wrote them
            if data[name] == default:
                del data[name]
        return _with_unknown(data)

    @classmethod
    def from_json(cls, data: Any) -> JobSpec:
        """A spec as a record holds it, checked (records.py, then validate); RecordError."""
        records.typed(data, records.JOB_SPEC, ("command",), "the spec")
        records.str_map(data, "env", "the spec")
        for name in ("publish", "volumes"):
            records.str_list(data, name, "the spec")
        records.id_list(data, "after", "the spec")
        known, unknown = _split_known(cls, data)
        try:
            known["stdin_data"] = base64.b64decode(known.get("stdin_data") or "", validate=True)
        except (binascii.Error, ValueError):
            raise RecordError("the spec field 'stdin_data' is not base64") from None
        known["after"] = list(known.get("after") or ())
        spec = cls(**known, unknown=unknown)
        try:
            spec.validate(stored=True)
        except InvalidSpec as exc:
            raise RecordError(f"the spec is out of range: {exc}") from None
        return spec


_SPEC_DEFAULTS = (("image", ""), ("net", "none"), ("publish", []), ("volumes", []), ("workdir", ""), ("after", []),
                  ("run_as", ""))


@dataclass
class JobRecord:
    """The job's truth, stored under jobs/<uuid>. Times are unix seconds."""

    id: str
    spec: JobSpec
    state: str = QUEUED
    node: str = ""
    attempt: int = 1
    created_at: float = 0.0
    assigned_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    error: str = ""
    host_pid: int | None = None
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    kill_requested: bool = False
    # earlier attempts, oldest first: {attempt, node, assigned_at, started_at, ended_at, state, reason}
    history: list[dict[str, Any]] = field(default_factory=list)
    # why a QUEUED job waits (set by the prime when no node can take it); "" otherwise
    waiting: str = ""
    # the id of the -all-nodes pool this job is a member of; "" otherwise
    pool: str = ""
    # an -array member: its index (the array's id is `pool`) and the array's %K (0: no limit)
    array_index: int | None = None
    array_limit: int = 0
    # who added it (a user's name; "root" for root and for plain TCP's callers); "" for a
    # record from before identities, which only admins may see
    owner: str = ""
    # bytes of output the node's log cap dropped, by stream ("stdout", "stderr"); only the cut ones
    output_dropped: dict[str, int] = field(default_factory=dict)
    # net="bridge": its IPv4 address on its node's bridge, set when it starts; "" otherwise
    address: str = ""
    # fields this lclusterd does not know (see JobSpec.unknown)
    unknown: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def moved_to(self, target: str, **changes: Any) -> JobRecord:
        """A copy in state `target` with `changes` applied; InvalidTransition if not allowed."""
        if target not in ALLOWED.get(self.state, ()):
            raise InvalidTransition(self.state, target)
        if target in TERMINAL and "finished_at" not in changes:
            changes["finished_at"] = time.time()
        return self.with_changes(state=target, **changes)

    def with_changes(self, **changes: Any) -> JobRecord:
        """A copy with `changes` (field names checked); dataclasses.replace, without its
        per-field __init__ round trip."""
        unknown = changes.keys() - self.__dict__.keys()
        if unknown:
            raise TypeError(f"JobRecord has no field {sorted(unknown)[0]!r}")
        new = object.__new__(JobRecord)
        new.__dict__.update(self.__dict__, **changes)
        return new

    def lost_on(self, reason: str, now: float | None = None) -> JobRecord:
        """The record after this attempt's node was lost: LOST with `reason`, or, while the
        spec's retries allow (attempt n of at most retries+1), a fresh QUEUED attempt n+1 that
        keeps the lost attempt in `history` (a new attempt, not a transition of the old one)."""
        now = now or time.time()
        lost = self.moved_to(LOST, error=reason, finished_at=now)  # refuses a finished job
        if self.attempt > self.spec.retries:
            return lost
        ended = {"attempt": self.attempt, "node": self.node, "assigned_at": self.assigned_at,
                 "started_at": self.started_at, "ended_at": now, "state": LOST, "reason": reason}
        return self.with_changes(state=QUEUED, attempt=self.attempt + 1, node="", assigned_at=None, started_at=None,
                                 host_pid=None, address="", kill_requested=False, history=[*self.history, ended])

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["spec"] = self.spec.to_json()
        data["schema_version"] = SCHEMA_VERSION
        if not self.pool:  # written only for pool members: other records stay readable by older daemons
            del data["pool"]
        if not self.output_dropped:  # likewise only when output was cut
            del data["output_dropped"]
        if not self.address:  # and only for a job with an address
            del data["address"]
        if self.array_index is None:  # likewise only for array members
            del data["array_index"], data["array_limit"]
        return _with_unknown(data)

    @classmethod
    def from_json(cls, data: Any, key_id: str) -> JobRecord:
        """The record stored under a key of `key_id` (jobs/, queue/, assign/<node>/), every
        field checked (records.py); RecordError when it is not one lclusterd wrote."""
        records.typed(data, records.JOB_RECORD, ("id", "spec", "state"), "the record")
        records.check_key(data["id"], key_id, records.JOB_ID, "the record")
        records.check_job_record(data, "the record")
        known, unknown = _split_known(cls, data)
        unknown.pop("schema_version", None)
        known["spec"] = JobSpec.from_json(known["spec"])
        if known.get("created_at", 0.0) is None:
            known["created_at"] = 0.0
        return cls(**known, unknown=unknown)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, key_id: str) -> JobRecord:
        """As from_json, from a value read from etcd; RecordError."""
        return cls.from_json(records.load_json(raw, "the record"), key_id)

    @staticmethod
    def requested_memory(raw: bytes) -> int:
        """The -mem of the record in `raw`, 0 when it sets none or cannot be read: the prime
        reads it from every assignment it sees, so only the field it needs is looked at."""
        try:
            memory = json.loads(raw)["spec"].get("memory_bytes") or 0
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return 0
        return memory if type(memory) is int and 0 < memory <= limits.MAX_MEMORY_BYTES else 0

    @staticmethod
    def assignment_facts(raw: bytes) -> tuple[int, str, str]:
        """(-mem, its array's id if that has a %K limit else "", its owner), leniently."""
        try:
            data = json.loads(raw)
            memory = data["spec"].get("memory_bytes") or 0
            limited, owner = data.get("pool") or "" if data.get("array_limit") else "", data.get("owner") or ""
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return 0, "", ""
        memory = memory if type(memory) is int and 0 < memory <= limits.MAX_MEMORY_BYTES else 0
        return memory, limited if type(limited) is str else "", owner if type(owner) is str else ""


_KNOWN: dict[type, frozenset[str]] = {}


def _split_known(cls: type, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields `cls` has, and the rest (a newer version's, kept to be written back)."""
    known = _KNOWN.get(cls)
    if known is None:
        known = _KNOWN[cls] = frozenset(f.name for f in fields(cls)) - {"unknown"}
    mine = {k: v for k, v in data.items() if k in known}
    return mine, {k: v for k, v in data.items() if k not in known}


def _with_unknown(data: dict[str, Any]) -> dict[str, Any]:
    """A to_json dict with the unknown fields back at the top level (ours win a clash)."""
    unknown = data.pop("unknown")
    return {**unknown, **data} if unknown else data


POOL, ARRAY = "pool", "array"


@dataclass
class PoolRecord:
    """A group of member jobs read, waited on and killed as one, stored under pools/<uuid>:
    an -all-nodes pool (kind "pool": members node -> job id, each member pinned to its node) or
    an -array (kind "array": members index -> job id, the index in decimal). `spec` is what
    every member runs (unpinned; without the array's environment variables)."""

    id: str
    spec: JobSpec
    created_at: float = 0.0
    members: dict[str, str] = field(default_factory=dict)
    owner: str = ""  # as JobRecord.owner
    kind: str = POOL
    max_running: int = 0  # an array's %K (0: no limit)

    @property
    def is_array(self) -> bool:
        return self.kind == ARRAY

    def labels(self) -> list[str]:
        """The member labels in order: node names sorted, or array indexes in numeric order."""
        return sorted(self.members, key=int) if self.is_array else sorted(self.members)

    def member_ids(self) -> list[str]:
        """Member job ids in label order (the order -check shows and pool_outcome reads)."""
        return [self.members[label] for label in self.labels()]

    def to_json(self) -> dict[str, Any]:
        data = {"id": self.id, "spec": self.spec.to_json(), "created_at": self.created_at,
                "members": {label: self.members[label] for label in self.labels()}, "owner": self.owner,
                "schema_version": SCHEMA_VERSION}
        if self.is_array:  # written only for arrays: pools stay readable by older daemons
            data["kind"], data["max_running"] = self.kind, self.max_running
        return data

    @classmethod
    def from_json(cls, data: Any, key_id: str) -> PoolRecord:
        """The pool stored under pools/<key_id>, every field checked (records.py); RecordError."""
        records.typed(data, records.POOL_RECORD, ("id", "spec"), "the pool record")
        records.check_key(data["id"], key_id, records.JOB_ID, "the pool record")
        records.check_pool_members(data, "the pool record")
        return cls(id=data["id"], spec=JobSpec.from_json(data["spec"]), created_at=data.get("created_at") or 0.0,
                   members=dict(data.get("members") or {}), owner=data.get("owner") or "", kind=data.get("kind") or POOL,
                   max_running=data.get("max_running") or 0)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, key_id: str) -> PoolRecord:
        return cls.from_json(records.load_json(raw, "the pool record"), key_id)


def pool_outcome(members: list[JobRecord]) -> tuple[str, JobRecord | None]:
    """A pool's state from its members' (in node order), and the member that decided it.

    While any member has not ended: QUEUED if all are QUEUED, ASSIGNED if none has gone further,
    else RUNNING (None). Once all have ended: EXITED (None) if every member EXITED with code 0,
    otherwise the state of the first member that did not, and that member (whose exit code,
    signal and error are the pool's). A pool with no member record at all is LOST."""
    if not members:
        return LOST, None
    if not all(m.terminal for m in members):
        if all(m.state == QUEUED for m in members):
            return QUEUED, None
        if all(m.state in (QUEUED, ASSIGNED) for m in members):
            return ASSIGNED, None
        return RUNNING, None
    for m in members:
        if not (m.state == EXITED and m.exit_code == 0):
            return m.state, m
    return EXITED, None
