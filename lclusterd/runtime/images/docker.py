"""A `docker save` archive (also what `skopeo copy ... docker-archive:` and `podman save`
write): `manifest.json`, a list of images, each naming its config file, its tags
(RepoTags) and its layer tars in order.

The format names no digest for a layer, so the chain of trust runs through the config: its
file is named by its own sha256 (`<hex>.json`, or `blobs/sha256/<hex>` from Docker 25 on),
which is checked, and the config's diff_ids are the sha256 of each uncompressed layer,
checked as the layer is applied. A config not named by its digest cannot be verified and
is refused.
"""

from __future__ import annotations

import re
from typing import Any

from lclusterd.errors import InvalidImage
from lclusterd.runtime.images import sources
from lclusterd.runtime.images.config import ImageConfig
from lclusterd.runtime.images.manifest import (DOCKER, MAX_JSON, ImageManifest, LayerRef, check_digest, choose, field_of,
                                               parse_json)
from lclusterd.runtime.images.sources import Source, inside

NAMED_BY_DIGEST = re.compile(r"^(?:blobs/sha256/([0-9a-f]{64})|([0-9a-f]{64})\.json)$")
BLOB = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")


def read(source: Source, ref: str | None) -> ImageManifest:
    entries = parse_json(sources.read(source, "manifest.json", MAX_JSON), "manifest.json")
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise InvalidImage("malformed manifest.json: not a list of images")
    names = [_tags(entry) for entry in entries]
    chosen = choose(entries, names, ref, source.path)
    entry = entries[chosen]
    config_path = inside(field_of(entry, "Config", str, "manifest.json"), "Config")
    named = NAMED_BY_DIGEST.match(config_path)
    if not named:
        raise InvalidImage(f"malformed manifest.json: the config {config_path!r} is not named by its sha256 digest, "
                           "so the image cannot be verified")
    config_digest = "sha256:" + (named.group(1) or named.group(2))
    if not source.exists(config_path):
        raise InvalidImage(f"malformed docker archive: the config {config_path} is missing")
    config_raw = sources.read(source, config_path, MAX_JSON)
    check_digest(config_raw, config_digest, f"the config {config_path}")
    config = ImageConfig.from_bytes(config_raw)
    layers = [_layer(source, path, index, config) for index, path in
              enumerate(field_of(entry, "Layers", list, "manifest.json"))]
    tags = [tag for tag in names[chosen] if ref is None or tag == ref or tag.endswith("/" + ref)]
    return ImageManifest(DOCKER, tags[0] if tags else None, config_raw, config_digest, config, tuple(layers))


def _tags(entry: dict[str, Any]) -> list[str]:
    tags = entry.get("RepoTags") or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise InvalidImage("malformed manifest.json: RepoTags is not a list of strings")
    return tags


def _layer(source: Source, path: Any, index: int, config: ImageConfig) -> LayerRef:
    path = inside(path, "layer")
    if not source.exists(path):
        raise InvalidImage(f"malformed docker archive: layer {index + 1} ({path}) is missing")
    diff_id = config.diff_ids[index] if index < len(config.diff_ids) else ""
    blob = BLOB.match(path)  # Docker 25's layout names the blob by its digest: check that too
    return LayerRef(path, diff_id, "sha256:" + blob.group(1) if blob else None)
