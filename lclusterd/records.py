"""Records read from etcd are input. Pure.

Anyone who can write etcd can write anything there, so every JobRecord, PoolRecord and
NodeInfo is checked as it is decoded (their from_json in model.py call these): the value is
a JSON object; its id is the one in its key (jobs/<uuid>, pools/<uuid>: the uuid; nodes/<name>,
members/<name>: the name), and that is a well-formed job id or node name; every field this
version knows has its type (a bool is no number, an optional field is null or its type, a
string is valid UTF-8); the spec is within lclusterd.limits (JobSpec.validate). The first
problem found is a RecordError naming the field. Fields a newer version wrote are not
looked at (they are kept and written back). What readers do with a RecordError (skip the
record, log it once) is in cluster/decode.py.
"""

from __future__ import annotations

import json
import math
import re
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from lclusterd.errors import RecordError
from lclusterd.limits import IMAGE_NAME
from lclusterd.states import STATES

JOB_ID = re.compile(r"^[0-9a-f]{32}$")  # a job (or pool) id as stored: uuid4, 32 lower-case hex digits
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

# Each record's known fields and the kind of JSON value each may hold: "str" (valid UTF-8),
# "i32"/"i64" (an integer that fits the API's field; a bool is no number), "num" (a finite
# number), "time" (unix seconds from 1970 to MAX_TIME), "bool", "dict", "list"; a trailing "?"
# also allows null. tests/unit/test_records.py
# holds these tables to the dataclasses' fields, so a field added there must be added here.
JOB_SPEC = {"command": "str", "env": "dict", "memory_bytes": "i64?", "cpus": "num?", "pids": "i64?",
            "timeout": "num?", "stdin_data": "str?", "retries": "i32", "node": "str",
            "image": "str", "net": "str", "publish": "list", "volumes": "list", "workdir": "str", "after": "list",
            "run_as": "str"}
JOB_RECORD = {"id": "str", "spec": "dict", "state": "str", "node": "str", "attempt": "i32", "created_at": "time?",
              "assigned_at": "time?", "started_at": "time?", "finished_at": "time?", "exit_code": "i32?", "signal": "i32?",
              "oom_killed": "bool", "error": "str", "host_pid": "i32?", "peak_memory_bytes": "i64?", "cpu_seconds": "num?",
              "kill_requested": "bool", "history": "list", "waiting": "str", "pool": "str", "owner": "str",
              "output_dropped": "dict", "address": "str", "array_index": "i32?", "array_limit": "i32",
              "schema_version": "i32"}
ATTEMPT = {"attempt": "i32", "node": "str", "assigned_at": "time?", "started_at": "time?", "ended_at": "time?",
           "state": "str", "reason": "str"}  # an entry of JobRecord.history
POOL_RECORD = {"id": "str", "spec": "dict", "created_at": "time?", "members": "dict", "owner": "str", "kind": "str",
               "max_running": "i32", "schema_version": "i32"}
NODE_INFO = {"name": "str", "address": "str", "capacity": "i32", "version": "str", "started_at": "time",
             "memory_bytes": "i64", "max_pids": "i64", "cores": "i32", "images": "list",
             "images_without_command": "list", "subnet": "str", "volume_roots": "list"}

_BOUNDS = {"i32": 2**31 - 1, "i64": 2**63 - 1}
MAX_TIME = 1e11  # the year 5138: any time a record holds is before, and every client can print it
_NAMES = {"str": "a string", "i32": "a 32-bit integer", "i64": "a 64-bit integer", "num": "a finite number",
          "time": "a time in unix seconds", "bool": "a boolean", "dict": "an object", "list": "a list"}


def typed(data: Any, kinds: dict[str, str], required: tuple[str, ...], what: str) -> dict[str, Any]:
    """`data` when it is an object with every `required` field, each field of `kinds` it has
    of its kind; RecordError naming the first that is not."""
    if not isinstance(data, dict):
        raise RecordError(f"{what} is {_kind(data)}, not an object")
    for name in required:
        if name not in data:
            raise RecordError(f"{what} lacks the field {name!r}")
    for name, value in data.items():  # (the message is made only for a field that fails: records are decoded often)
        kind = kinds.get(name)
        if kind is not None and not _is(value, kind):
            value_of(value, kind, f"{what} field {name!r}")
    return data


def value_of(value: Any, kind: str, what: str) -> Any:
    """`value` if it is of `kind` (see the tables above); RecordError naming `what` otherwise."""
    if not _is(value, kind):
        base = kind.rstrip("?")
        shown = "a string that is not valid UTF-8" if isinstance(value, str) and base == "str" else _kind(value)
        raise RecordError(f"{what} is {shown}, not {_NAMES[base]}{' or null' if kind.endswith('?') else ''}")
    return value


def _is(value: Any, kind: str) -> bool:
    cls = type(value)
    if cls is str:
        return kind[:3] == "str" and (value.isascii() or _utf8(value))
    if value is None:
        return kind[-1] == "?"
    if cls is int:
        bound = _BOUNDS.get(kind.rstrip("?"))
        if bound is not None:
            return -bound - 1 <= value <= bound
    if cls is int or cls is float:
        if kind[:3] == "num":
            return _finite(value)
        return kind[:4] == "time" and _finite(value) and 0 <= value <= MAX_TIME
    return kind.rstrip("?") == {bool: "bool", dict: "dict", list: "list"}.get(cls)


def _utf8(value: str) -> bool:
    """JSON's \\ud800 escapes make strings that cannot be written as UTF-8."""
    try:
        value.encode()
        return True
    except UnicodeEncodeError:
        return False


def _finite(number: int | float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an integer too large for a float
        return False


def str_map(data: dict[str, Any], name: str, what: str, kind: str = "str") -> dict[str, Any]:
    """data[name] (absent: {}) when its keys are strings and its values of `kind`."""
    mapping = data.get(name) or {}
    for key, value in mapping.items():
        value_of(key, "str", f"{what} field {name!r}")
        value_of(value, kind, f"{what} field {name!r} at {key[:40]!r}")
    return mapping


def str_list(data: dict[str, Any], name: str, what: str) -> list[str]:
    """data[name] (absent: []) when it holds strings only."""
    values = data.get(name) or []
    for value in values:
        value_of(value, "str", f"{what} field {name!r} entry")
    return values


def check_key(found: Any, key_id: str, pattern: re.Pattern, what: str) -> None:
    """The record's own id (`found`) must be the one its key names, and that a well-formed one:
    never a path, never another job's."""
    if not pattern.match(key_id):
        raise RecordError(f"{what} is under the key {key_id[:40]!r}, which is not a valid {_id_kind(pattern)}")
    if found != key_id:
        shown = found[:40] if isinstance(found, str) else found
        raise RecordError(f"{what} under the key {key_id} names {_id_kind(pattern)} {shown!r}")


def check_job_record(data: dict[str, Any], what: str) -> None:
    """The JobRecord fields beyond their types: state, attempt, node, pool, history, output_dropped."""
    state = data["state"]
    if state not in STATES:
        raise RecordError(f"{what} has the unknown state {state[:40]!r}")
    if data.get("attempt", 1) < 1:
        raise RecordError(f"{what} field 'attempt' is {data['attempt']}, not 1 or more")
    _optional_name(data.get("node") or "", NODE_NAME, what, "node")
    _optional_name(data.get("pool") or "", JOB_ID, what, "pool")
    for entry in data.get("history") or []:
        typed(entry, ATTEMPT, (), f"{what} history entry")
    address = data.get("address") or ""
    if address and not _ipv4(address):
        raise RecordError(f"{what} field 'address' holds {address[:40]!r}, not an IPv4 address")
    if data.get("array_index") is not None and (data["array_index"] < 0 or not data.get("pool")):
        raise RecordError(f"{what} field 'array_index' is negative or names no array")
    if data.get("array_limit", 0) < 0:
        raise RecordError(f"{what} field 'array_limit' is negative")
    dropped = str_map(data, "output_dropped", what, "i64")
    if any(count < 0 for count in dropped.values()):
        raise RecordError(f"{what} field 'output_dropped' holds a negative count")


ARRAY_LABEL = re.compile(r"^(0|[1-9][0-9]{0,9})$")  # an array member's index in decimal


def check_pool_members(data: dict[str, Any], what: str) -> None:
    """Members of a pool (node -> job id) or of an array (kind "array": index -> job id)."""
    kind = data.get("kind") or "pool"
    if kind not in ("pool", "array"):
        raise RecordError(f"{what} has the unknown kind {kind[:40]!r}")
    if data.get("max_running", 0) < 0:
        raise RecordError(f"{what} field 'max_running' is negative")
    label = ARRAY_LABEL if kind == "array" else NODE_NAME
    for name, job_id in str_map(data, "members", what).items():
        if not label.match(name) or (kind == "array" and int(name) > 2**31 - 1):
            raise RecordError(f"{what} field 'members' holds {name[:40]!r}, not a valid "
                              f"{'array index' if kind == 'array' else 'node name'}")
        _optional_name(job_id, JOB_ID, what, "members", empty=False)


def id_list(data: dict[str, Any], name: str, what: str) -> list[str]:
    """data[name] (absent: []) when it is a list of job ids."""
    ids = data.get(name) or []
    for job_id in ids:
        value_of(job_id, "str", f"{what} field {name!r}")
        _optional_name(job_id, JOB_ID, what, name, empty=False)
    return ids


def check_node_info(data: dict[str, Any], key_name: str, what: str) -> None:
    check_key(data["name"], key_name, NODE_NAME, what)
    negative = [name for name in ("capacity", "memory_bytes", "max_pids", "cores") if data.get(name, 0) < 0]
    if negative:
        raise RecordError(f"{what} field {negative[0]!r} is negative")
    for field in ("images", "images_without_command"):
        for image in data.get(field) or []:
            if not (isinstance(image, str) and IMAGE_NAME.match(image)):
                shown = image[:40] if isinstance(image, str) else _kind(image)
                raise RecordError(f"{what} field {field!r} holds {shown!r}, not a valid image name")
    subnet = data.get("subnet") or ""
    if subnet and not _ipv4_network(subnet):
        raise RecordError(f"{what} field 'subnet' holds {subnet[:40]!r}, not an IPv4 network")
    for root in str_list(data, "volume_roots", what):
        if not root.startswith("/") or "\0" in root:
            raise RecordError(f"{what} field 'volume_roots' holds {root[:40]!r}, not an absolute path")


def _ipv4(text: str) -> bool:
    try:
        IPv4Address(text)
        return True
    except ValueError:
        return False


def _ipv4_network(text: str) -> bool:
    try:
        IPv4Network(text)
        return True
    except ValueError:
        return False


def _optional_name(value: str, pattern: re.Pattern, what: str, field: str, empty: bool = True) -> None:
    if (value or not empty) and not pattern.match(value):
        raise RecordError(f"{what} field {field!r} holds {value[:40]!r}, not a valid {_id_kind(pattern)}")


def _id_kind(pattern: re.Pattern) -> str:
    return "job id" if pattern is JOB_ID else "node name"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value}" if _finite(value) and len(str(value)) <= 24 else "a number out of range"
    return {str: "a string", list: "a list", dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def load_json(raw: bytes, what: str) -> Any:
    """The JSON document in `raw`; RecordError when it is none."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError too
        raise RecordError(f"{what} is not JSON ({str(exc)[:80]})") from None
