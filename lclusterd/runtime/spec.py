"""What the runtime is asked to run (RuntimeSpec) and what it reports (RunResult). Pure.

A spec reaches the fork server as JSON from the daemon, which built it from a job record
that anyone with access to etcd could have written: from_json takes nothing on trust
(every field has its type, no field is unknown) and validate() bounds every number, so
no spec can make the fork server fail.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field
from typing import Any

from lclusterd import limits
from lclusterd.errors import InvalidSpec
from lclusterd.states import EXITED, FAILED, KILLED, OOM_KILLED, RUN_ENDINGS, TIMED_OUT

__all__ = ["EXITED", "FAILED", "KILLED", "OOM_KILLED", "STATUSES", "TIMED_OUT", "RunResult", "RuntimeSpec"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# The job's pseudo filesystems (mounts.plan_before_pivot): a volume may not go there.
RESERVED_PLACES = ("/proc", "/sys", "/dev")

# How one run ends (a RunResult's status): the job states of the same names.
STATUSES = RUN_ENDINGS


@dataclass
class RuntimeSpec:
    """One job for the runtime. `argv` is executed as is; use `shell()` for a command line."""

    job_id: str
    argv: list[str]
    rootfs: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    hostname: str | None = None  # default: the first 12 characters of the job id
    memory_bytes: int | None = None
    cpus: float | None = None  # a fraction of cores: 0.5 = half of one core
    pids: int | None = None
    timeout: float | None = None  # seconds from start to TIMED_OUT
    grace: float = 2.0  # seconds between SIGTERM and SIGKILL when killing
    stdin_data: bytes | None = None  # None: /dev/null
    stdout_path: str | None = None  # host paths; None: /dev/null
    stderr_path: str | None = None
    # Most bytes kept of stdout and of stderr each; the rest is dropped after a marker line.
    # None: no cap (the job writes straight into the files).
    max_log_bytes: int | None = None
    # "none": loopback only; "bridge": an address on the node's bridge, outbound NAT, and the
    # `publish` entries (HOSTPORT:PORT[/udp]) forwarded from the node's addresses.
    net: str = "none"
    publish: list[str] = field(default_factory=list)
    # HOST:PATH[:ro] (limits.parse_volume): host directories beneath one of the node's
    # volume roots, bound at PATH (runtime/volumes.py).
    volumes: list[str] = field(default_factory=list)
    # Who the job runs as (OCI's User: "uid", "uid:gid", "name", "name:group", ...), names
    # looked up in the rootfs's /etc/passwd and /etc/group (runtime/users.py); "": its root.
    user: str = ""

    @staticmethod
    def shell(job_id: str, command: str, rootfs: str, **kw: Any) -> RuntimeSpec:
        """A spec that runs `command` with the rootfs's /bin/sh -c."""
        return RuntimeSpec(job_id=job_id, argv=["/bin/sh", "-c", command], rootfs=rootfs, **kw)

    def validate(self) -> None:
        """Raise InvalidSpec with a user-facing sentence for the first problem found."""
        if not _JOB_ID.match(self.job_id or ""):
            raise InvalidSpec(f"invalid job id {self.job_id!r}")
        if not self.argv or not self.argv[0]:
            raise InvalidSpec("empty command")
        if any("\0" in a for a in self.argv):
            raise InvalidSpec("command contains a NUL byte")
        if not self.rootfs or not os.path.isabs(self.rootfs):
            raise InvalidSpec(f"rootfs must be an absolute path, not {self.rootfs!r}")
        if any(c in self.rootfs for c in ",:\0"):
            raise InvalidSpec(f"rootfs path {self.rootfs!r} must not contain ',' or ':' (overlay options)")
        limits.check_env(self.env)
        limits.parse_user(self.user)
        if not os.path.isabs(self.cwd) or "\0" in self.cwd:
            raise InvalidSpec(f"working directory must be an absolute path, not {self.cwd!r}")
        if self.hostname is not None and not _HOSTNAME.match(self.hostname):
            raise InvalidSpec(f"invalid hostname {self.hostname!r}")
        limits.check_memory(self.memory_bytes)
        if self.cpus is not None:
            cores = os.cpu_count() or 1
            limits.check_cpus(self.cpus)
            if self.cpus > cores:
                raise InvalidSpec(f"cpus must be between 0.01 and {cores} (this machine's cores), not {self.cpus:g}")
        limits.check_pids(self.pids)
        limits.check_timeout(self.timeout)
        limits.check_grace(self.grace)
        for path in (self.stdout_path, self.stderr_path):
            if path is not None and (not os.path.isabs(path) or "\0" in path):
                raise InvalidSpec(f"log paths must be absolute, not {path!r}")
        if self.max_log_bytes is not None and self.max_log_bytes < limits.MIN_LOG_BYTES:
            raise InvalidSpec(f"the log cap must be at least {limits.MIN_LOG_BYTES} bytes, not {self.max_log_bytes}")
        limits.check_network(self.net, self.publish)
        for volume in limits.check_volumes(self.volumes):
            if any(volume.path == place or volume.path.startswith(place + "/") for place in RESERVED_PLACES):
                raise InvalidSpec(f"volume {volume}: no volume can go at or under {', '.join(RESERVED_PLACES)} "
                                  "(the job's own /proc, /sys and /dev are mounted there)")

    @property
    def effective_hostname(self) -> str:
        return self.hostname or self.job_id[:12]

    def job_environment(self, home: str = "/root") -> dict[str, str]:
        """The clean environment the job starts with: defaults, then the spec's own. `home`:
        its user's home directory (runtime/users.py), root's without a user."""
        env = {"PATH": DEFAULT_PATH, "HOME": home, "HOSTNAME": self.effective_hostname}
        env.update(self.env)
        return env

    def to_json(self) -> dict[str, Any]:
        # A shallow copy: asdict's deep walk cost more than the rest of a submit.
        data = dict(self.__dict__)
        if self.stdin_data is not None:
            data["stdin_data"] = base64.b64encode(self.stdin_data).decode()
        return data

    @classmethod
    def from_json(cls, data: Any) -> RuntimeSpec:
        """The spec in `data`, every field checked for its type; InvalidSpec otherwise."""
        known = _typed(data, _SPEC_TYPES, "spec")
        stdin = known.get("stdin_data")
        if stdin is not None:
            try:
                known["stdin_data"] = base64.b64decode(stdin, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidSpec("spec field stdin_data is not base64") from None
        return cls(**known)


_STR, _INT, _NUM, _NONE = (str,), (int,), (int, float), (type(None),)
_SPEC_TYPES: dict[str, tuple[type, ...]] = {
    "job_id": _STR, "argv": (list,), "rootfs": _STR, "env": (dict,), "cwd": _STR, "hostname": _STR + _NONE,
    "memory_bytes": _INT + _NONE, "cpus": _NUM + _NONE, "pids": _INT + _NONE, "timeout": _NUM + _NONE,
    "grace": _NUM, "stdin_data": _STR + _NONE, "stdout_path": _STR + _NONE, "stderr_path": _STR + _NONE,
    "max_log_bytes": _INT + _NONE, "net": _STR, "publish": (list,),
    "volumes": (list,), "user": _STR,
}
_REQUIRED = ("job_id", "argv", "rootfs")


def _typed(data: Any, types: dict[str, tuple[type, ...]], what: str) -> dict[str, Any]:
    """`data`'s fields, each of one of its allowed types (bool is no number here)."""
    if not isinstance(data, dict):
        raise InvalidSpec(f"{what} is not an object")
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise InvalidSpec(f"{what} has an unknown field {unknown[0]!r}")
    missing = [name for name in _REQUIRED if name not in data]
    if missing:
        raise InvalidSpec(f"{what} lacks the field {missing[0]!r}")
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, types[name]):
            raise InvalidSpec(f"{what} field {name} has the wrong type ({type(value).__name__})")
    if not all(isinstance(a, str) for a in data["argv"]):
        raise InvalidSpec(f"{what} field argv must hold strings only")
    for name in ("publish", "volumes"):
        if not all(isinstance(item, str) for item in data.get(name, [])):
            raise InvalidSpec(f"{what} field {name} must hold strings only")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.get("env", {}).items()):
        raise InvalidSpec(f"{what} field env must map strings to strings")
    return dict(data)


@dataclass
class RunResult:
    """How one run ended. `status` is one of STATUSES.

    exit_code is set when the job's first process exited, signal when a signal ended it;
    error holds the reason for FAILED (and a note for the others, e.g. the timeout)."""

    job_id: str
    status: str
    exit_code: int | None = None
    signal: int | None = None
    error: str = ""
    host_pid: int | None = None
    started_at: float | None = None  # unix time of the start request
    finished_at: float | None = None
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    oom_kills: int = 0
    stdout_dropped_bytes: int = 0  # what the log cap (RuntimeSpec.max_log_bytes) dropped
    stderr_dropped_bytes: int = 0
    address: str | None = None  # the job's IPv4 address on the node's bridge (net="bridge")
    stdout_bytes: int = 0  # what the log relays kept in the log files (0 without a cap: not counted)
    stderr_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        return cls(**data)
