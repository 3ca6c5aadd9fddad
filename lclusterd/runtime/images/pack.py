"""Writing an OCI image layout: from a directory tree (`make rootfs ROOTFS=debian` builds
its tree with debootstrap and imports it this way, through the same checks as any image)
or from layer tars (the tests' hostile layers).

    python -m lclusterd.runtime.images.pack TREE OUT [--env K=V]... [--cmd ARG]... [--workdir DIR] [--tag TAG]
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any, BinaryIO

import click

from lclusterd.runtime.images.config import host_architecture
from lclusterd.runtime.images.oci import REF_NAME

CHUNK = 1 << 20
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
TAR, TAR_GZIP = "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip"


def tar_tree(tree: str | Path, out: BinaryIO) -> None:
    """The tree as one layer: links stored as links, numeric owners only (a name means
    nothing where the image is imported)."""
    def numeric(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.add(str(tree), arcname=".", filter=numeric)


def _put_blob(blobs: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _put_layer(blobs: Path, layer: bytes | Path, compress: bool) -> tuple[dict[str, Any], str]:
    """Store one layer; (its descriptor, its diff_id)."""
    staging = blobs / ".staging"
    blob_hash, diff_hash = hashlib.sha256(), hashlib.sha256()
    with open(staging, "wb") as raw:
        with (gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if compress else raw) as sink:
            source = open(layer, "rb") if isinstance(layer, Path) else None
            chunks = iter(lambda: source.read(CHUNK), b"") if source else iter([layer])
            for chunk in chunks:
                diff_hash.update(chunk)
                sink.write(chunk)
            if source:
                source.close()
    with open(staging, "rb") as f:
        while chunk := f.read(CHUNK):
            blob_hash.update(chunk)
    size = staging.stat().st_size
    os.rename(staging, blobs / blob_hash.hexdigest())
    descriptor = {"mediaType": TAR_GZIP if compress else TAR, "digest": f"sha256:{blob_hash.hexdigest()}", "size": size}
    return descriptor, f"sha256:{diff_hash.hexdigest()}"


def write_layout(out: str | Path, layers: list[bytes | Path], config: dict[str, Any] | None = None,
                 tag: str = "latest", compress: bool = False, config_extra: dict[str, Any] | None = None) -> None:
    """An OCI image layout at `out` holding one image, tagged `tag`: `layers` are tars
    (bytes, or files read whole), bottom first; `config` its run config (Env, Cmd, ...);
    `config_extra` fields over the top-level config (tests use it to break one)."""
    out = Path(out)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    stored = [_put_layer(blobs, layer, compress) for layer in layers]
    image_config = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "architecture": host_architecture(),
                    "os": "linux", "config": config or {},
                    "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in stored]},
                    **(config_extra or {})}
    config_blob = {"mediaType": CONFIG, **_put_blob(blobs, json.dumps(image_config).encode())}
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config_blob,
                "layers": [descriptor for descriptor, _ in stored]}
    manifest_blob = {"mediaType": MANIFEST, **_put_blob(blobs, json.dumps(manifest).encode())}
    index = {"schemaVersion": 2, "manifests": [{**manifest_blob, "annotations": {REF_NAME: tag}}]}
    (out / "index.json").write_text(json.dumps(index))
    (out / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))


@click.command()
@click.argument("tree", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path())
@click.option("--env", multiple=True, help="NAME=VALUE for the image's Env, repeatable.")
@click.option("--cmd", multiple=True, help="One argument of the image's Cmd, repeatable.")
@click.option("--workdir", default="", help="The image's WorkingDir.")
@click.option("--tag", default="latest", show_default=True)
def main(tree: str, out: str, env: tuple[str, ...], cmd: tuple[str, ...], workdir: str, tag: str) -> None:
    """Write the directory TREE as a one-layer OCI image layout at OUT."""
    Path(out).mkdir(parents=True, exist_ok=True)
    layer = Path(out) / "layer.tar"
    with open(layer, "wb") as f:
        tar_tree(tree, f)
    run_config = {"Env": list(env), "Cmd": list(cmd), **({"WorkingDir": workdir} if workdir else {})}
    write_layout(out, [layer], run_config, tag=tag)
    layer.unlink()
    click.echo(f"pack: wrote {tree} as an OCI image layout at {out} (tag {tag})")


if __name__ == "__main__":
    main()
