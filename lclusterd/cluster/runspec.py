"""From the user's JobSpec to the runtime's RuntimeSpec, with this node's defaults. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from lclusterd.model import DEFAULT_PIDS, JobSpec
from lclusterd.runtime.spec import RuntimeSpec


@dataclass(frozen=True)
class NodeDefaults:
    rootfs: str
    pids: int = DEFAULT_PIDS
    kill_grace: float = 2.0


def to_runtime_spec(job_id: str, spec: JobSpec, defaults: NodeDefaults,
                    stdout_path: str | None = None, stderr_path: str | None = None) -> RuntimeSpec:
    return RuntimeSpec.shell(
        job_id, spec.command, defaults.rootfs,
        env=dict(spec.env),
        memory_bytes=spec.memory_bytes,
        cpus=spec.cpus,
        pids=spec.pids if spec.pids is not None else defaults.pids,
        timeout=spec.timeout,
        grace=defaults.kill_grace,
        stdin_data=spec.stdin_data or None,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
    )


def check_runnable(spec: JobSpec, defaults: NodeDefaults) -> None:
    """Raise InvalidSpec now for what the runtime would refuse later (limits out of range)."""
    spec.validate()
    to_runtime_spec("0" * 32, spec, defaults).validate()
