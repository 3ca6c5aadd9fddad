"""The bounds a job spec must stay within, and the checks every layer shares. Pure.

The control plane checks a spec when it is added (so a bad value is refused with one line
and never queued), and the runtime checks it again when it starts it (its spec may come
from a record someone else wrote). Both use these functions, so they never disagree.
Each check raises InvalidSpec with a sentence a user can act on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import re
from typing import Mapping

from lclusterd.errors import InvalidSpec

MIN_MEMORY_BYTES = 1 << 20  # below 1 MiB not even /bin/sh can start
MAX_MEMORY_BYTES = 1 << 50  # 1 PiB: far above any machine, far below what overflows a cgroup file
MAX_PIDS = 4 * 1024 * 1024  # the kernel's own PID_MAX_LIMIT
MAX_CPUS = 4096.0
MAX_TIMEOUT_SECONDS = 365 * 86400  # a year; no timeout at all is allowed too
MAX_GRACE_SECONDS = 3600.0
MIN_LOG_BYTES = 4096
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# What a spec may carry. A job's record holds its whole spec (stdin in base64) and is written
# twice in one transaction (jobs/ and queue/ or assign/), and etcd refuses a request over
# --max-request-bytes (1.5 MiB by default) whatever its reason: these keep every record's
# transaction well under it, so an oversize spec is refused at add with its limit named
# instead of failing in etcd ("etcd unavailable") or in a later batch.
MAX_COMMAND_BYTES = 64 * 1024
MAX_ENV_BYTES = 64 * 1024  # names and values together, in UTF-8
MAX_STDIN_BYTES = 256 * 1024
MAX_SPEC_BYTES = 512 * 1024  # the spec as stored: JSON (escapes included), stdin in base64

# Arrays and dependencies. An array's record lists every member's id (about 45 bytes each) and
# is written in one etcd request, which MAX_ARRAY_MEMBERS keeps well under its 1 MiB.
MAX_ARRAY_MEMBERS = 10_000
MAX_ARRAY_INDEX = 2**31 - 1  # the API's int32
MAX_AFTER = 64  # parents one job may wait for
MAX_BATCH = 10_000  # jobs one -add - call may queue
# Set by lclusterd in each array member's environment; a spec may not set names under it.
ARRAY_ENV_PREFIX = "LCLUSTER_ARRAY_"
ARRAY_INDEX_ENV = ARRAY_ENV_PREFIX + "INDEX"
ARRAY_ID_ENV = ARRAY_ENV_PREFIX + "ID"


def _finite(number: float) -> bool:
    """A finite number; a huge int is not (float() of it would overflow)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def _show(number: float) -> str:
    """A number for a message, also one too large to format as a float."""
    text = f"{number:g}" if _finite(number) or isinstance(number, float) else str(number)
    return text if len(text) <= 24 else text[:20] + "..."


def _kib(limit: int) -> str:
    return f"{limit // 1024} KiB"


def check_env(env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not ENV_NAME.match(name):
            raise InvalidSpec(f"invalid environment variable name {_shown(name)}")
        if "\0" in value:
            raise InvalidSpec(f"environment variable {name} contains a NUL byte")


def check_no_reserved_env(env: Mapping[str, str]) -> None:
    """A new spec may not set the names lclusterd sets for array members."""
    for name in env:
        if name.startswith(ARRAY_ENV_PREFIX):
            raise InvalidSpec(f"environment variable {name} is reserved: lclusterd sets {ARRAY_ENV_PREFIX}* for array members")


_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def check_after(after: list[str]) -> None:
    """-after's parents: job ids, at most MAX_AFTER, none twice."""
    if len(after) > MAX_AFTER:
        raise InvalidSpec(f"-after names {len(after)} jobs, more than the limit of {MAX_AFTER}")
    for parent in after:
        if not _JOB_ID.match(parent):
            raise InvalidSpec(f"-after: malformed uuid {_shown(parent)}: expected 32 hex digits")
    if len(set(after)) != len(after):
        raise InvalidSpec("-after names the same job twice")


def check_array(first: int, last: int, max_running: int) -> None:
    """An -array range first..last (inclusive) with its %K limit (0: none)."""
    if first < 0 or last > MAX_ARRAY_INDEX:
        raise InvalidSpec(f"array indexes must be between 0 and {MAX_ARRAY_INDEX}, not {first}-{last}")
    if last < first:
        raise InvalidSpec(f"array range {first}-{last} is reversed: the first index must not be above the last")
    if last - first + 1 > MAX_ARRAY_MEMBERS:
        raise InvalidSpec(f"array {first}-{last} has {last - first + 1} members, more than the limit of {MAX_ARRAY_MEMBERS}")
    if max_running < 0:
        raise InvalidSpec(f"array %K must be at least 1, not {max_running}")


def _shown(text: str) -> str:
    """A user's string for a message: quoted, at most 40 characters."""
    return repr(text if len(text) <= 40 else text[:40] + "…")


def check_command(command: str) -> None:
    if not command or not command.strip():
        raise InvalidSpec("empty command")
    if "\0" in command:
        raise InvalidSpec("command contains a NUL byte")


def check_sizes(command: str, env: Mapping[str, str], stdin: bytes) -> None:
    """The sizes a new spec may have (checked at add; the runtime and a record's reader do not
    hold a spec to them again: they are about what etcd takes, not about running it)."""
    size = len(command.encode())
    if size > MAX_COMMAND_BYTES:
        raise InvalidSpec(f"the command is {size} bytes, more than the limit of {_kib(MAX_COMMAND_BYTES)}")
    total = sum(len(name.encode()) + len(value.encode()) + 2 for name, value in env.items())  # NAME=VALUE\0
    if total > MAX_ENV_BYTES:
        raise InvalidSpec(f"the environment is {total} bytes, more than the limit of {_kib(MAX_ENV_BYTES)} "
                          "(names and values together)")
    if len(stdin) > MAX_STDIN_BYTES:
        raise InvalidSpec(f"stdin is {len(stdin)} bytes, more than the limit of {_kib(MAX_STDIN_BYTES)}")


def check_spec_bytes(size: int) -> None:
    """`size`: the bytes of the spec as a record stores it (JSON, stdin in base64)."""
    if size > MAX_SPEC_BYTES:
        raise InvalidSpec(f"the job's spec takes {size} bytes as stored, more than the limit of {_kib(MAX_SPEC_BYTES)} "
                          "(command, environment and stdin together, as JSON with stdin in base64)")


def check_memory(memory_bytes: int | None) -> None:
    if memory_bytes is not None and not MIN_MEMORY_BYTES <= memory_bytes <= MAX_MEMORY_BYTES:
        raise InvalidSpec(f"memory limit must be between 1 MiB and 1 PiB, not {memory_bytes} bytes")


def check_pids(pids: int | None) -> None:
    if pids is not None and not 1 <= pids <= MAX_PIDS:
        raise InvalidSpec(f"pids limit must be between 1 and {MAX_PIDS}, not {pids}")


def check_cpus(cpus: float | None) -> None:
    if cpus is not None and not (_finite(cpus) and 0.01 <= cpus <= MAX_CPUS):
        raise InvalidSpec(f"cpus must be between 0.01 and {MAX_CPUS:g}, not {_show(cpus)}")


def check_timeout(timeout: float | None) -> None:
    """A timeout is a positive, finite number of seconds up to a year (None: no timeout)."""
    if timeout is not None and not (_finite(timeout) and 0 < timeout <= MAX_TIMEOUT_SECONDS):
        raise InvalidSpec(f"timeout must be more than 0 and at most 365 days ({MAX_TIMEOUT_SECONDS} s), not {_show(timeout)} s")


def check_grace(grace: float) -> None:
    if not (_finite(grace) and 0 <= grace <= MAX_GRACE_SECONDS):
        raise InvalidSpec(f"grace period must be between 0 and {MAX_GRACE_SECONDS:g} s, not {_show(grace)}")


# A job's network: "none" (loopback only) or "bridge" (an address on the node's bridge, outbound
# NAT, and ports published on the node's addresses). The runtime's module netconf.py says how.
NET_MODES = ("none", "bridge")
MAX_PUBLISH = 64  # published ports per job: each is two nftables rules and a held host port
_PUBLISH = re.compile(r"^([0-9]{1,5}):([0-9]{1,5})(?:/(tcp|udp))?$")


def parse_publish(entry: str) -> tuple[int, int, str]:
    """`HOSTPORT:PORT[/tcp|/udp]` as (host port, the job's port, protocol); InvalidSpec otherwise."""
    match = _PUBLISH.match(entry) if isinstance(entry, str) else None
    if match is None:
        raise InvalidSpec(f"publish takes HOSTPORT:PORT or HOSTPORT:PORT/udp, not {entry!r}")
    host_port, port = int(match[1]), int(match[2])
    for value in (host_port, port):
        if not 1 <= value <= 65535:
            raise InvalidSpec(f"ports are between 1 and 65535, not {value} (in {entry!r})")
    return host_port, port, match[3] or "tcp"


def check_network(net: str, publish: list[str]) -> None:
    """A network mode the runtime knows, and published ports only with a network to publish into,
    each host port and protocol once."""
    if net not in NET_MODES:
        raise InvalidSpec(f"net must be {' or '.join(NET_MODES)}, not {net!r}")
    if publish and net != "bridge":
        raise InvalidSpec("publishing a port needs net=bridge (a job without a network has only loopback)")
    if len(publish) > MAX_PUBLISH:
        raise InvalidSpec(f"at most {MAX_PUBLISH} published ports per job, not {len(publish)}")
    seen: set[tuple[int, str]] = set()
    for entry in publish:
        host_port, _, protocol = parse_publish(entry)
        if (host_port, protocol) in seen:
            raise InvalidSpec(f"host port {host_port}/{protocol} is published twice")
        seen.add((host_port, protocol))


# A job's volumes: `HOST:PATH[:ro]` binds the host directory HOST (absolute, under one of the
# node's --volume-root directories, which only the runtime can check safely) at PATH inside the
# job. The runtime resolves HOST beneath its root and mounts it nosuid,nodev (and read-only
# with :ro).
MAX_VOLUMES = 32
MAX_PATH_BYTES = 1024


@dataclass(frozen=True)
class Volume:
    host: str  # absolute and normalised (no '.', '..' or '//' parts)
    path: str  # inside the job: absolute and normalised, never "/"
    read_only: bool = False

    def __str__(self) -> str:
        return f"{self.host}:{self.path}" + (":ro" if self.read_only else "")


def parse_volume(entry: str) -> Volume:
    """`HOST:PATH`, `HOST:PATH:ro` or `HOST:PATH:rw` as a Volume; InvalidSpec otherwise."""
    parts = entry.split(":") if isinstance(entry, str) else []
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        mode = parts.pop()
    elif len(parts) == 2:
        mode = "rw"
    else:
        raise InvalidSpec(f"volume takes HOST:PATH or HOST:PATH:ro (absolute paths, no ':'), not {entry!r}")
    host, path = (_clean_path(p, entry) for p in parts)
    if path == "/":
        raise InvalidSpec(f"a volume cannot be mounted over the job's / (in {entry!r})")
    return Volume(host, path, mode == "ro")


def check_volumes(volumes: list[str]) -> list[Volume]:
    """Each entry well formed, at most MAX_VOLUMES, no two at one place in the job."""
    if len(volumes) > MAX_VOLUMES:
        raise InvalidSpec(f"at most {MAX_VOLUMES} volumes per job, not {len(volumes)}")
    parsed = [parse_volume(entry) for entry in volumes]
    places = [v.path for v in parsed]
    for place in places:
        if places.count(place) > 1:
            raise InvalidSpec(f"two volumes are mounted at {place}")
    return parsed


def check_workdir(workdir: str) -> None:
    """"" (the image's or /) or an absolute path inside the job."""
    if workdir:
        _clean_path(workdir, workdir, what="working directory")


def _clean_path(path: str, entry: str, what: str = "volume paths") -> str:
    if not path.startswith("/") or "\0" in path or len(path.encode("utf-8", "replace")) > MAX_PATH_BYTES:
        raise InvalidSpec(f"{what} must be absolute (and at most {MAX_PATH_BYTES} bytes), not {path!r} (in {entry!r})")
    if len(path) > 1:
        path = path.rstrip("/") or "/"  # "/data/" is "/data"
    parts = path.split("/")[1:]
    if path != "/" and any(part in ("", ".", "..") for part in parts):
        raise InvalidSpec(f"{what} must be written without '.', '..' or '//' parts, not {path!r} (in {entry!r})")
    return path


# An image's name: a directory of the node's image store (runtime/images/store.py), so never
# '.', '..' or one of the store's own '.tmp-' names; the job spec's `image` field is held to it
# at add time, before any node looks at it.
IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
IMAGE_NAME_RULE = "1 to 63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"


def is_image_name(name: str) -> bool:
    return isinstance(name, str) and IMAGE_NAME.match(name) is not None


def check_image(name: str) -> None:
    """"" (the node's default image) or a name the image store can hold."""
    if name and not is_image_name(name):
        raise InvalidSpec(f"invalid image name {_shown(name)}: {IMAGE_NAME_RULE}")


# A job's user, as an image's config names it (OCI's User): "uid", "uid:gid", "name",
# "name:group", "uid:group" or "name:gid"; "" is the job's root. Names are the image's
# (/etc/passwd, /etc/group of the job's root), which only the runtime can read
# (runtime/users.py); what is checked here is the form and the numbers.
MAX_ID = 2**32 - 2  # uid_t's largest: (uid_t)-1 means "leave unchanged" to setresuid
MAX_USER_BYTES = 256
_ID = re.compile(r"^[0-9]+$")


def is_id(part: str) -> bool:
    """Whether a part of a User is numeric (an id), not a name: ASCII digits only."""
    return _ID.match(part) is not None


def parse_user(text: str) -> tuple[str, str]:
    """A User as (user, group); group "" when not given, both "" for the job's root.
    InvalidSpec for an empty part, a third part, a control character or an id over MAX_ID."""
    if not text:
        return "", ""
    parts = text.split(":")
    if (len(parts) > 2 or not all(parts) or len(text.encode("utf-8", "replace")) > MAX_USER_BYTES
            or any(ord(c) < 0x20 or c == "\x7f" for c in text)):
        raise InvalidSpec(f"user {_shown(text)} is not USER or USER:GROUP (a name or a number each, "
                          f"at most {MAX_USER_BYTES} bytes)")
    for part in parts:
        if is_id(part) and int(part) > MAX_ID:
            raise InvalidSpec(f"user {_shown(text)}: ids go from 0 to {MAX_ID}, not {part}")
    return parts[0], parts[1] if len(parts) == 2 else ""
