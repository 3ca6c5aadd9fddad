"""From the user's JobSpec to the runtime's RuntimeSpec, with this node's defaults. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from lclusterd.errors import InvalidSpec
from lclusterd.model import DEFAULT_PIDS, JobSpec
from lclusterd.runtime.spec import RuntimeSpec

DEFAULT_WORKDIR = "/"  # a job's working directory when its spec names none


@dataclass(frozen=True)
class NodeDefaults:
    """What a job gets from the node that runs it where its spec says nothing."""

    rootfs: str
    pids: int = DEFAULT_PIDS
    memory_bytes: int | None = None  # None: no memory limit (only the node's own ceiling)
    kill_grace: float = 2.0
    max_log_bytes: int | None = None  # per stream; None: no cap


def to_runtime_spec(job_id: str, spec: JobSpec, defaults: NodeDefaults,
                    stdout_path: str | None = None, stderr_path: str | None = None) -> RuntimeSpec:
    return RuntimeSpec.shell(
        job_id, spec.command, defaults.rootfs,
        env=dict(spec.env),
        memory_bytes=spec.memory_bytes if spec.memory_bytes is not None else defaults.memory_bytes,
        cpus=spec.cpus,
        pids=spec.pids if spec.pids is not None else defaults.pids,
        timeout=spec.timeout,
        grace=defaults.kill_grace,
        stdin_data=spec.stdin_data or None,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        max_log_bytes=defaults.max_log_bytes,
        net=spec.net,
        publish=list(spec.publish),
        cwd=spec.workdir or DEFAULT_WORKDIR,
        **_volumes(spec),
    )


def _volumes(spec: JobSpec) -> dict[str, list[str]]:
    """The spec's volumes for the runtime (RuntimeSpec.volumes); InvalidSpec from a runtime without them."""
    if not spec.volumes:
        return {}
    if "volumes" not in RuntimeSpec.__dataclass_fields__:
        raise InvalidSpec("this node's runtime cannot mount volumes")
    return {"volumes": list(spec.volumes)}
