"""Building an image's tree from its layers, in a directory the store then renames into
place (store.py): each layer applied in order (layer.py) as its bytes stream through the
digests (streams.py), each digest checked once the layer is read, then the mount points
the runtime needs made safe.
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
import zlib
from dataclasses import dataclass, field

from lclusterd.errors import InvalidImage
from lclusterd.runtime.images import layer as layers
from lclusterd.runtime.images.manifest import ImageManifest, LayerRef, sha256
from lclusterd.runtime.images.paths import Refused, mount_points
from lclusterd.runtime.images.sources import Source
from lclusterd.runtime.images.streams import LayerStream
from lclusterd.runtime.images.tree import DIR_FLAGS, Tree

TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


@dataclass
class Built:
    """What building the tree found worth telling: entries dropped, mount points made safe."""

    dropped: list[tuple[str, str]] = field(default_factory=list)
    replaced: list[tuple[str, str]] = field(default_factory=list)


def build(source: Source, manifest: ImageManifest, rootfs: str) -> Built:
    """Make `rootfs` (which must not exist) from the image's layers; InvalidImage for a
    layer that is corrupt, does not match its digests or breaks a rule of layer.py."""
    os.mkdir(rootfs, 0o755)
    report = layers.Report()
    with Tree(rootfs) as tree:
        for index, ref in enumerate(manifest.layers, 1):
            where = f"layer {index} of {len(manifest.layers)} ({ref.digest or ref.diff_id})"
            _apply(tree, source, ref, where, report)
        replaced = _mount_points(tree)
    return Built(report.dropped, replaced)


def _apply(tree: Tree, source: Source, ref: LayerRef, where: str, report: layers.Report) -> None:
    with source.open(ref.path) as raw:
        stream = None
        try:
            stream = LayerStream(raw)
            layers.apply(tree, stream.tar, report)
            digest, size, diff_id = stream.finish()
        except Refused as exc:
            raise InvalidImage(f"{where}: {exc}") from None
        except InvalidImage as exc:
            raise InvalidImage(f"{where}: {exc}") from None
        except TAR_ERRORS as exc:
            # A layer that is not a tar may just be a damaged or altered one: say so if it is.
            if ref.digest and _digest_of_rest(stream) not in (None, ref.digest):
                raise InvalidImage(f"{where} does not match its digest (the image is corrupt or was altered)") from None
            raise InvalidImage(f"{where} is not a valid tar layer ({exc})") from None
    if ref.size is not None and size != ref.size:
        raise InvalidImage(f"{where} has {size} bytes; its manifest says {ref.size}")
    if ref.digest is not None and digest != ref.digest:
        raise InvalidImage(f"{where} does not match its digest (the image is corrupt or was altered)")
    if diff_id != ref.diff_id:
        raise InvalidImage(f"{where}: its content does not match the config's diff_id {ref.diff_id} "
                           "(the image is corrupt or was altered)")


def _digest_of_rest(stream: LayerStream | None) -> str | None:
    """The blob's digest, reading what the failed tar left unread; None if unknown."""
    if stream is None:
        return None
    try:
        return stream.blob_digest_to_end()
    except OSError:
        return None


def _mount_points(tree: Tree) -> list[tuple[str, str]]:
    """Make proc, dev, sys and tmp real directories. The runtime mounts on them before
    pivot_root, while an absolute link would still resolve against the host's root (the
    mounts would land on the host's directories, in the job's mount namespace): a link or
    file there is replaced by an empty directory, and reported."""
    replaced = []
    for name in mount_points():
        found = tree.lstat(tree.root_fd, name)
        if found is not None and stat.S_ISDIR(found.st_mode):
            continue
        if found is not None:
            what = f"a link to {os.readlink(name, dir_fd=tree.root_fd)}" if stat.S_ISLNK(found.st_mode) else "not a directory"
            replaced.append((name, what))
            tree.remove((name,))
        os.mkdir(name, 0o755, dir_fd=tree.root_fd)
    return replaced


def layers_digest(diff_ids: tuple[str, ...]) -> str:
    """The image's layers as one digest: the OCI ChainID of the last layer
    (ChainID(L0) = DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))).
    It names the stack of uncompressed layers, so the same image has the same one whether
    it came as an OCI layout or a docker save archive. No layers: the sha256 of nothing."""
    chain = ""
    for diff_id in diff_ids:
        chain = diff_id if not chain else sha256(f"{chain} {diff_id}".encode())
    return chain or sha256(b"")


def tree_size(root: str) -> int:
    """Bytes of content in the tree: regular files (each inode once, so hard links count
    once) and links, walked by descriptor without following a link."""
    fd = os.open(root, DIR_FLAGS)
    try:
        return _size(fd, set())
    finally:
        os.close(fd)


def _size(fd: int, seen: set[int]) -> int:
    total, subdirs = 0, []
    with os.scandir(fd) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(entry.name)
            elif (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)) and st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    for name in subdirs:  # one descriptor per level open at a time, not one per directory
        child = os.open(name, DIR_FLAGS, dir_fd=fd)
        try:
            total += _size(child, seen)
        finally:
            os.close(child)
    return total
