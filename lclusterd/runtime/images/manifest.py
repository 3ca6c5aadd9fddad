"""What an image to import is made of, read from either format: its config (bytes as they
came, verified against their digest) and its layers in order, each with the digests its
bytes must have. The formats themselves are read by oci.py and docker.py; read_manifest
tells them apart.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from lclusterd.errors import InvalidImage
from lclusterd.runtime.images.config import DIGEST, ImageConfig, host_architecture
from lclusterd.runtime.images.sources import Source

MAX_JSON = 4 << 20  # bytes of one manifest, index or config; real ones are a few KiB
OCI, DOCKER = "oci-layout", "docker-archive"


@dataclass(frozen=True)
class LayerRef:
    """One layer: where its blob is in the source, the blob's digest and size when the
    format names them (OCI; docker save names only the config's diff_id), and the diff_id
    (sha256 of the uncompressed tar) the image's config gives it."""

    path: str
    diff_id: str
    digest: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class ImageManifest:
    format: str  # OCI or DOCKER
    ref: str | None  # the tag or ref name chosen, when the source names one
    config_raw: bytes
    config_digest: str
    config: ImageConfig
    layers: tuple[LayerRef, ...]


def read_manifest(source: Source, ref: str | None = None) -> ImageManifest:
    """The image in `source` (the one named `ref` if it holds several); InvalidImage with
    the reason for anything that is not a well-formed image this host can run."""
    from lclusterd.runtime.images import docker, oci  # they build on this module

    if source.exists("oci-layout"):
        manifest = oci.read(source, ref)
    elif source.exists("manifest.json"):
        manifest = docker.read(source, ref)
    else:
        raise InvalidImage(f"{source.path} is not an image: it has neither an oci-layout file (an OCI image layout) "
                           "nor a manifest.json (docker save)")
    manifest.config.check_platform()
    if len(manifest.config.diff_ids) != len(manifest.layers):
        raise InvalidImage(f"malformed image: the manifest lists {len(manifest.layers)} layers and the config "
                           f"{len(manifest.config.diff_ids)} diff_ids")
    return manifest


def parse_json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidImage(f"malformed {what}: not JSON ({exc})") from None


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(data: bytes, digest: str, what: str) -> None:
    if sha256(data) != digest:
        raise InvalidImage(f"{what} does not match its digest {digest} (the image is corrupt or was altered)")


def field_of(data: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """data[key] of the given type; InvalidImage naming the field otherwise."""
    value = data.get(key) if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InvalidImage(f"malformed {what}: {key} is missing or not {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "a number"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def check_sha256(digest: Any, what: str) -> str:
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise InvalidImage(f"malformed {what}: digest {digest!r} is not sha256:<64 hex digits>")
    return digest


def platform_matches(platform: Any) -> bool:
    """Whether an index entry's platform (absent: any) is this host's."""
    if platform is None:
        return True
    return (isinstance(platform, dict) and platform.get("os") in (None, "linux")
            and platform.get("architecture") in (None, host_architecture()))


def choose(candidates: list[Any], names: list[list[str]], ref: str | None, path: str) -> int:
    """Which of `candidates` (each known by `names`) to import: the one `ref` names, else
    the only one; InvalidImage otherwise, listing the names to choose from."""
    every = sorted({name for known in names for name in known})
    if ref is not None:
        matches = [i for i, known in enumerate(names) if any(_names(name, ref) for name in known)]
        if not matches:
            raise InvalidImage(f"no image named {ref!r} in {path} (it holds: {', '.join(every) or 'untagged images'})")
        if len(matches) > 1:
            raise InvalidImage(f"{len(matches)} images in {path} are named {ref!r}")
        return matches[0]
    if len(candidates) == 1:
        return 0
    if not candidates:
        raise InvalidImage(f"malformed manifest: {path} lists no image")
    raise InvalidImage(f"{path} holds {len(candidates)} images ({', '.join(every) or 'untagged'}); "
                       "choose one with --ref")


def _names(name: str, ref: str) -> bool:
    """`REGISTRY/library/debian:12` is named by itself, `library/debian:12` and `debian:12`."""
    return name == ref or name.endswith("/" + ref)
