"""What the runtime is asked to run (RuntimeSpec) and what it reports (RunResult). Pure."""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from typing import Any

from lclusterd.errors import InvalidSpec

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MIN_MEMORY_BYTES = 1 << 20  # below 1 MiB not even /bin/sh can start
MAX_PIDS = 4 * 1024 * 1024
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Terminal statuses of one run. The control plane maps them onto job states.
EXITED = "EXITED"
KILLED = "KILLED"
OOM_KILLED = "OOM_KILLED"
TIMED_OUT = "TIMED_OUT"
FAILED = "FAILED"
STATUSES = (EXITED, KILLED, OOM_KILLED, TIMED_OUT, FAILED)


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
        for name, value in self.env.items():
            if not _ENV_NAME.match(name):
                raise InvalidSpec(f"invalid environment variable name {name!r}")
            if "\0" in value:
                raise InvalidSpec(f"environment variable {name} contains a NUL byte")
        if not os.path.isabs(self.cwd):
            raise InvalidSpec(f"working directory must be absolute, not {self.cwd!r}")
        if self.hostname is not None and not _HOSTNAME.match(self.hostname):
            raise InvalidSpec(f"invalid hostname {self.hostname!r}")
        if self.memory_bytes is not None and self.memory_bytes < MIN_MEMORY_BYTES:
            raise InvalidSpec(f"memory limit {self.memory_bytes} bytes is below the minimum of 1 MiB")
        if self.cpus is not None:
            cores = os.cpu_count() or 1
            if not 0.01 <= self.cpus <= cores:
                raise InvalidSpec(f"cpus must be between 0.01 and {cores} (this machine's cores), not {self.cpus:g}")
        if self.pids is not None and not 1 <= self.pids <= MAX_PIDS:
            raise InvalidSpec(f"pids limit must be between 1 and {MAX_PIDS}, not {self.pids}")
        if self.timeout is not None and not self.timeout > 0:
            raise InvalidSpec(f"timeout must be positive, not {self.timeout:g}")
        if not self.grace >= 0:
            raise InvalidSpec(f"grace period must not be negative, not {self.grace:g}")

    @property
    def effective_hostname(self) -> str:
        return self.hostname or self.job_id[:12]

    def job_environment(self) -> dict[str, str]:
        """The clean environment the job starts with: defaults, then the spec's own."""
        env = {"PATH": DEFAULT_PATH, "HOME": "/root", "HOSTNAME": self.effective_hostname}
        env.update(self.env)
        return env

    def to_json(self) -> dict[str, Any]:
        # A shallow copy: asdict's deep walk cost more than the rest of a submit.
        data = dict(self.__dict__)
        if self.stdin_data is not None:
            data["stdin_data"] = base64.b64encode(self.stdin_data).decode()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuntimeSpec:
        data = dict(data)
        if data.get("stdin_data") is not None:
            data["stdin_data"] = base64.b64decode(data["stdin_data"])
        return cls(**data)


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

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        return cls(**data)
