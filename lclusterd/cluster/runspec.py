"""From the user's JobSpec to the runtime's RuntimeSpec, with this node's defaults and the job's
image. Pure, but for the two lookups it asks of the node's image store (ImageLookup).

A job without an image runs `/bin/sh -c COMMAND` on the node's rootfs (the image busybox),
as it always has. A job with one runs on that image's tree, with its config's defaults under
the job's own options (runtime/images/config.py, apply_defaults): the image's Env under the
job's -env, its WorkingDir under the job's -workdir, its Entrypoint + Cmd when the job has
no command (a command is a whole shell line and replaces both), and its User under the job's
-run-as; the runtime resolves either in the image's own /etc/passwd and /etc/group when the
job starts (runtime/users.py: only the runtime reads files). A job with neither runs as its
root, as it always has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from lclusterd.errors import ImageNotFound
from lclusterd.model import DEFAULT_PIDS, JobSpec
from lclusterd.runtime.images.config import ImageConfig, apply_defaults
from lclusterd.runtime.spec import RuntimeSpec

DEFAULT_WORKDIR = "/"  # a job's working directory when its spec names none


class ImageLookup(Protocol):
    """What a job's start needs of the node's image store (runtime/images/store.py): each
    raises ImageNotFound when the image is not (or no longer) on this node."""

    def rootfs(self, name: str) -> str: ...

    def config(self, name: str) -> ImageConfig: ...


@dataclass(frozen=True)
class NodeDefaults:
    """What a job gets from the node that runs it where its spec says nothing."""

    rootfs: str
    pids: int = DEFAULT_PIDS
    memory_bytes: int | None = None  # None: no memory limit (only the node's own ceiling)
    kill_grace: float = 2.0
    max_log_bytes: int | None = None  # per stream; None: no cap
    images: ImageLookup | None = None  # None: jobs with an image are refused (ImageNotFound)


def to_runtime_spec(job_id: str, spec: JobSpec, defaults: NodeDefaults,
                    stdout_path: str | None = None, stderr_path: str | None = None) -> RuntimeSpec:
    """The job as the runtime runs it. ImageNotFound (an ImageError) when its image is not on
    this node, InvalidSpec when it has no command and its image none either."""
    rootfs, argv, env, cwd, user = _image_defaults(spec, defaults)
    return RuntimeSpec(
        job_id=job_id, argv=argv, rootfs=rootfs, env=env, cwd=cwd, user=user,
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
        volumes=list(spec.volumes),
    )


def _image_defaults(spec: JobSpec, defaults: NodeDefaults) -> tuple[str, list[str], dict[str, str], str, str]:
    """(rootfs, argv, env, cwd, user) of the job: its image's defaults under its own options."""
    argv = ["/bin/sh", "-c", spec.command] if spec.command else None
    if not spec.image:
        return defaults.rootfs, argv or [], dict(spec.env), spec.workdir or DEFAULT_WORKDIR, spec.run_as
    if defaults.images is None:
        raise ImageNotFound(spec.image)
    rootfs = defaults.images.rootfs(spec.image)
    job = apply_defaults(defaults.images.config(spec.image), argv, spec.env, cwd=spec.workdir or None)
    return rootfs, job.argv, job.env, job.cwd, spec.run_as or job.user

