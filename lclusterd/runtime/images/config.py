"""An image's config (the OCI image config, which `docker save` writes too) as the defaults
a job takes from its image, and the merge of those defaults with the job's own. Pure.

Only what lclusterd uses is read: Env, Entrypoint, Cmd, WorkingDir, User, the platform
and the layers' diff_ids. The store keeps the config's bytes as they came (store.py), so
whatever else an image carries (Labels, ExposedPorts, ...) is still there for later.
"""

from __future__ import annotations

import json
import platform
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from lclusterd import limits
from lclusterd.errors import InvalidImage, InvalidSpec

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# platform.machine() -> the architecture names images use (Go's GOARCH)
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
                 "s390x": "s390x", "riscv64": "riscv64"}


def host_architecture() -> str:
    machine = platform.machine()
    return ARCHITECTURES.get(machine, machine)


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config a job's defaults come from."""

    env: dict[str, str] = field(default_factory=dict)
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    os: str = ""
    architecture: str = ""
    created: str = ""
    diff_ids: tuple[str, ...] = ()

    @classmethod
    def from_bytes(cls, raw: bytes) -> ImageConfig:
        """The config in `raw`; InvalidImage with the reason for anything malformed, so an
        image whose defaults a job could not start with is refused at import."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidImage(f"malformed image config: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InvalidImage("malformed image config: not a JSON object")
        run = data.get("config")
        run = {} if run is None else run  # docker writes null for an image without one
        if not isinstance(run, dict):
            raise InvalidImage("malformed image config: config is not an object")
        return cls(env=_env(run.get("Env")), entrypoint=_strings(run, "Entrypoint"), cmd=_strings(run, "Cmd"),
                   working_dir=_working_dir(run.get("WorkingDir")), user=_user(run.get("User")),
                   os=_string(data, "os"), architecture=_string(data, "architecture"),
                   created=_string(data, "created"), diff_ids=_diff_ids(data.get("rootfs")))

    def check_platform(self) -> None:
        """InvalidImage if the image's programs cannot run on this host."""
        if self.os and self.os != "linux":
            raise InvalidImage(f"the image is for {self.os}, not linux")
        host = host_architecture()
        if self.architecture and self.architecture != host:
            raise InvalidImage(f"the image is for linux/{self.architecture}; this node runs linux/{host}")


def _string(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or "\0" in value:
        raise InvalidImage(f"malformed image config: {key} is not a string")
    return value


def _strings(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) and "\0" not in item for item in value):
        raise InvalidImage(f"malformed image config: {key} is not a list of strings")
    return tuple(value)


def _env(value: Any) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in _strings({"Env": value}, "Env"):
        name, equals, text = item.partition("=")
        if not equals:
            raise InvalidImage(f"malformed image config: Env entry {item!r} is not NAME=VALUE")
        env[name] = text
    try:
        limits.check_env(env)  # the runtime's own check, so a job never fails on its image's Env
    except InvalidSpec as exc:
        raise InvalidImage(f"malformed image config: Env: {exc}") from None
    return env


def _working_dir(value: Any) -> str:
    text = _string({"WorkingDir": value}, "WorkingDir")
    if text and not text.startswith("/"):
        raise InvalidImage(f"malformed image config: WorkingDir {text!r} is not an absolute path")
    return text


def _user(value: Any) -> str:
    text = _string({"User": value}, "User")
    try:
        limits.parse_user(text)  # the runtime's own check: its form and ids; names are looked up at start
    except InvalidSpec as exc:
        raise InvalidImage(f"malformed image config: {exc}") from None
    return text


def _diff_ids(rootfs: Any) -> tuple[str, ...]:
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise InvalidImage("malformed image config: rootfs is not {\"type\": \"layers\", ...}")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and DIGEST.match(d) for d in diff_ids):
        raise InvalidImage("malformed image config: rootfs.diff_ids is not a list of sha256 digests")
    return tuple(diff_ids)


@dataclass(frozen=True)
class JobDefaults:
    """A job's command, environment, working directory and user once its image's defaults
    are applied: RuntimeSpec's fields of the same names
    (`RuntimeSpec(job_id=..., rootfs=..., **defaults.spec_fields())`); `user` is "" for the
    job's root, else a User the runtime resolves in the image's own files (runtime/users.py)."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    user: str

    def spec_fields(self) -> dict[str, Any]:
        return {"argv": list(self.argv), "env": dict(self.env), "cwd": self.cwd, "user": self.user}


def apply_defaults(image: ImageConfig, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
                   cwd: str | None = None, user: str | None = None) -> JobDefaults:
    """Merge the job's own options over its image's defaults; the job's always win.

    argv: the job's command, or None/empty for none (then Entrypoint + Cmd). A job's
    command replaces Entrypoint and Cmd together, unlike `docker run IMAGE ARGS`, which
    appends ARGS to the Entrypoint: an lclusterd command is a whole shell line
    (`/bin/sh -c CMD`), not arguments for a program the image chose. env: the image's Env,
    then the job's variables over it, one by one. cwd and user: the job's when given,
    else WorkingDir ("/" without one) and User. InvalidSpec when there is no command at all."""
    command = list(argv) if argv else [*image.entrypoint, *image.cmd]
    if not command:
        raise InvalidSpec("the job has no command and its image has no Entrypoint or Cmd")
    merged = {**image.env, **(env or {})}
    return JobDefaults(argv=command, env=merged, cwd=cwd or image.working_dir or "/",
                       user=image.user if user is None else user)
