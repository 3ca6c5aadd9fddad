"""An OCI image layout (image-spec, image-layout.md): `oci-layout`, `index.json`, and
content-addressed blobs under `blobs/sha256/`. Every blob read is checked against its
descriptor's digest and size; a layer's are checked as it is applied (importer.py).

index.json may list several images (by their `org.opencontainers.image.ref.name`
annotation, what umoci and skopeo call the tag) and an entry may be an image index (one
manifest per platform), of which this host's is taken.
"""

from __future__ import annotations

from typing import Any

from lclusterd.errors import InvalidImage
from lclusterd.runtime.images.config import ImageConfig
from lclusterd.runtime.images.manifest import (MAX_JSON, OCI, ImageManifest, LayerRef, check_digest, check_sha256,
                                               choose, field_of, parse_json, platform_matches)
from lclusterd.runtime.images import sources
from lclusterd.runtime.images.sources import Source

REF_NAME = "org.opencontainers.image.ref.name"
MANIFESTS = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
INDEXES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
LAYERS = (
    "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar", "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)
MAX_NESTING = 4  # index -> index -> manifest is as deep as real layouts go


def read(source: Source, ref: str | None) -> ImageManifest:
    layout = parse_json(_read(source, "oci-layout"), "oci-layout")
    version = field_of(layout, "imageLayoutVersion", str, "oci-layout")
    if not version.startswith("1."):
        raise InvalidImage(f"unsupported OCI image layout version {version!r} (1.x is)")
    index = parse_json(_read(source, "index.json"), "index.json")
    entries = [_descriptor(entry, "index.json") for entry in field_of(index, "manifests", list, "index.json")]
    names = [[entry.get("annotations", {}).get(REF_NAME)] if _ref_name(entry) else [] for entry in entries]
    if ref is None and len(entries) > 1:  # one image in several platforms: this host's
        fits = [i for i, entry in enumerate(entries) if platform_matches(entry.get("platform"))]
        entries, names = [entries[i] for i in fits], [names[i] for i in fits]
    chosen = choose(entries, names, ref, source.path)
    descriptor = entries[chosen]
    manifest = _resolve(source, descriptor, 0)
    return _image(source, manifest, names[chosen][0] if names[chosen] else None)


def _read(source: Source, name: str) -> bytes:
    if not source.exists(name):
        raise InvalidImage(f"malformed OCI image layout: {source.path} has no {name}")
    return sources.read(source, name, MAX_JSON)


def _ref_name(entry: dict[str, Any]) -> bool:
    annotations = entry.get("annotations")
    return isinstance(annotations, dict) and isinstance(annotations.get(REF_NAME), str)


def _descriptor(entry: Any, what: str) -> dict[str, Any]:
    """A content descriptor: mediaType, digest, size, each of its type."""
    field_of(entry, "mediaType", str, f"{what} descriptor")
    check_sha256(field_of(entry, "digest", str, f"{what} descriptor"), f"{what} descriptor")
    if field_of(entry, "size", int, f"{what} descriptor") < 0:
        raise InvalidImage(f"malformed {what} descriptor: negative size")
    return entry


def blob_path(digest: str) -> str:
    return "blobs/sha256/" + digest.split(":", 1)[1]


def _blob(source: Source, descriptor: dict[str, Any], what: str) -> bytes:
    """A small blob (manifest, index, config), verified against its descriptor."""
    path = blob_path(descriptor["digest"])
    if not source.exists(path):
        raise InvalidImage(f"malformed OCI image layout: the {what} blob {descriptor['digest']} is missing")
    data = sources.read(source, path, MAX_JSON)
    if len(data) != descriptor["size"]:
        raise InvalidImage(f"the {what} blob {descriptor['digest']} has {len(data)} bytes, "
                           f"its descriptor says {descriptor['size']}")
    check_digest(data, descriptor["digest"], f"the {what} blob")
    return data


def _resolve(source: Source, descriptor: dict[str, Any], depth: int) -> dict[str, Any]:
    """The image manifest a descriptor leads to, through image indexes (this host's platform)."""
    media_type = descriptor["mediaType"]
    if media_type in MANIFESTS:
        return parse_json(_blob(source, descriptor, "manifest"), "image manifest")
    if media_type not in INDEXES:
        raise InvalidImage(f"malformed OCI image layout: {descriptor['digest']} is a {media_type!r}, not an image")
    if depth >= MAX_NESTING:
        raise InvalidImage("malformed OCI image layout: image indexes nested too deep")
    index = parse_json(_blob(source, descriptor, "image index"), "image index")
    entries = [_descriptor(entry, "image index") for entry in field_of(index, "manifests", list, "image index")]
    fits = [entry for entry in entries if platform_matches(entry.get("platform"))]
    if not fits:
        raise InvalidImage("the image has no manifest for this node's platform")
    return _resolve(source, fits[0], depth + 1)


def _image(source: Source, manifest: dict[str, Any], ref: str | None) -> ImageManifest:
    config_descriptor = _descriptor(field_of(manifest, "config", dict, "image manifest"), "image manifest")
    config_raw = _blob(source, config_descriptor, "config")
    config = ImageConfig.from_bytes(config_raw)
    layers = []
    for index, entry in enumerate(field_of(manifest, "layers", list, "image manifest")):
        layer = _descriptor(entry, "image manifest layer")
        if "zstd" in layer["mediaType"]:
            raise InvalidImage("zstd-compressed layers are not supported (gzip or plain tar only)")
        if layer["mediaType"] not in LAYERS:
            raise InvalidImage(f"layer {index + 1} has media type {layer['mediaType']!r}, not a tar layer")
        if not source.exists(blob_path(layer["digest"])):
            raise InvalidImage(f"malformed OCI image layout: layer blob {layer['digest']} is missing")
        diff_id = config.diff_ids[index] if index < len(config.diff_ids) else ""
        layers.append(LayerRef(blob_path(layer["digest"]), diff_id, layer["digest"], layer["size"]))
    return ImageManifest(OCI, ref, config_raw, config_descriptor["digest"], config, tuple(layers))
