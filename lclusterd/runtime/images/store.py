"""A node's image store: `<state-dir>/images/<name>/` holds an image's tree (`rootfs/`,
later the read-only lower layer of its jobs' overlays, idmapped like the node's rootfs),
its config as the image gave it (`config.json`) and the store's record of it
(`image.json`).

    <state-dir>/images/          root's alone (0700): the images' setuid files and their
      .lock                      owners' files are nobody's business on the host
      debian/rootfs/ config.json image.json
      .tmp-<name>-XXXX/          an import under way (or a crashed one, swept by the next)

An import builds its tree in a temporary directory beside the images and renames it into
place with one renameat2 (RENAME_NOREPLACE, or RENAME_EXCHANGE for --replace), so a name
is always a whole image or none, and a failed import leaves nothing. Imports and removals
hold the store's lock (flock) for their whole length; reads take none. An image a job runs
on is neither removed nor replaced (inuse.py: the job holds its tree's lock).

The image `busybox` is the node's own rootfs (`--rootfs`, built by `make prep`), not a
copy in the store: it stays where the daemon and `make prep` expect it, jobs without an
image keep running on exactly the tree they ran on before, and there is no second copy
to fall out of step. The store lists it and refuses to import over or remove it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from lclusterd.errors import ImageError, ImageExists, ImageNotFound, InvalidImageName
from lclusterd.limits import IMAGE_NAME, IMAGE_NAME_RULE, is_image_name
from lclusterd.runtime import kernel
from lclusterd.runtime.host import DEFAULT_ROOTFS
from lclusterd.runtime.images import importer, inuse
from lclusterd.runtime.images.config import ImageConfig
from lclusterd.runtime.images.manifest import ImageManifest, read_manifest
from lclusterd.runtime.images.sources import Source, open_source

BUILTIN = "busybox"
NAME = IMAGE_NAME  # a directory name; never '.', '..' or a '.tmp-' of ours (limits.py: the job spec's rule too)
ROOTFS, CONFIG, RECORD = "rootfs", "config.json", "image.json"
LEFTOVERS = (".tmp-", ".old-")
SETTLE = 2.0  # seconds after a change of the store's directory during which `stamp` is None


@dataclass(frozen=True)
class ImageInfo:
    """One image of the store, as `lclusterd image ls` shows it and image.json holds it."""

    name: str
    rootfs: str
    imported_at: float
    size_bytes: int
    layers_digest: str | None  # None: the node's rootfs, which came from no layers
    format: str = ""
    source: str = ""
    ref: str | None = None
    config_digest: str = ""
    diff_ids: tuple[str, ...] = ()
    dropped: tuple[tuple[str, str], ...] = ()  # (path, what it was): device nodes, FIFOs
    replaced: tuple[tuple[str, str], ...] = ()  # (mount point, what was there)
    builtin: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # fields a newer version wrote

    def to_json(self) -> dict[str, Any]:
        data = {**self.extra, **{k: v for k, v in self.__dict__.items() if k != "extra"}}
        data["diff_ids"], data["dropped"], data["replaced"] = list(self.diff_ids), [list(d) for d in self.dropped], [
            list(r) for r in self.replaced]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageInfo:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "extra"}
        known["diff_ids"] = tuple(known.get("diff_ids", ()))
        known["dropped"] = tuple(tuple(d) for d in known.get("dropped", ()))
        known["replaced"] = tuple(tuple(r) for r in known.get("replaced", ()))
        return cls(**known, extra={k: v for k, v in data.items() if k not in cls.__dataclass_fields__})


def check_name(name: str) -> None:
    if not is_image_name(name):
        raise InvalidImageName(f"invalid image name {name!r}: {IMAGE_NAME_RULE}")


class ImageStore:
    def __init__(self, state_dir: str | Path, node_rootfs: str | None = DEFAULT_ROOTFS):
        """node_rootfs: the node's --rootfs, listed as the image `busybox` (None: none)."""
        self.dir = Path(state_dir) / "images"
        self.node_rootfs = node_rootfs

    # -- reading -------------------------------------------------------------------------

    def list(self) -> list[ImageInfo]:
        """Every image, the node's rootfs first, then by name."""
        found = [self._builtin()] if self._has_builtin() else []
        names = sorted(p.name for p in self.dir.iterdir() if NAME.match(p.name)) if self.dir.is_dir() else []
        for name in names:
            with contextlib.suppress(ImageNotFound):
                found.append(self.get(name))
        return found

    def names(self) -> list[str]:
        """The names of every image, sorted, without reading any tree: what the node publishes
        in its registration (cheap enough for the keep-alive loop to call after `stamp` moved)."""
        found = {BUILTIN} if self._has_builtin() else set()
        if self.dir.is_dir():
            found.update(p.name for p in self.dir.iterdir() if NAME.match(p.name) and (p / RECORD).is_file())
        return sorted(found)

    def without_command(self) -> list[str]:
        """The names of the images whose config has no Entrypoint or Cmd (busybox among them):
        a job with an empty command cannot run in them. An image whose config cannot be read
        is counted among them."""
        found = []
        for name in self.names():
            try:
                config = self.config(name)
            except (ImageError, OSError):
                found.append(name)
                continue
            if not (config.entrypoint or config.cmd):
                found.append(name)
        return found

    def stamp(self) -> tuple[int, int] | None:
        """Changes whenever an image is imported or removed, one stat: both rename an entry of
        the store's directory (renameat2), which moves its mtime. (0, 0) while there is none;
        None while the last change is under SETTLE seconds old: the kernel's timestamps are
        coarse, so a change in the same tick as the last look would not move it (so look again)."""
        try:
            st = os.stat(self.dir)
        except FileNotFoundError:
            return 0, 0
        if time.time() - st.st_mtime < SETTLE:
            return None
        return st.st_ino, st.st_mtime_ns

    def get(self, name: str) -> ImageInfo:
        check_name(name)
        if name == BUILTIN and self._has_builtin():
            return self._builtin()
        try:
            data = json.loads((self.dir / name / RECORD).read_bytes())
            # The tree is where the store keeps it, whatever the record says (a moved state dir).
            return dataclasses.replace(ImageInfo.from_json(data), rootfs=str(self.dir / name / ROOTFS))
        except FileNotFoundError:
            raise ImageNotFound(name) from None
        except (ValueError, TypeError) as exc:
            raise ImageError(f"the store's record of image {name!r} is damaged ({exc}); remove and import it again") from None

    def rootfs(self, name: str) -> str:
        """The tree a job in image `name` runs on: its overlay's lower layer."""
        return self.get(name).rootfs

    def config(self, name: str) -> ImageConfig:
        """The defaults a job in image `name` takes (config.apply_defaults)."""
        if self.get(name).builtin:
            return ImageConfig()
        return ImageConfig.from_bytes((self.dir / name / CONFIG).read_bytes())

    def _has_builtin(self) -> bool:
        return self.node_rootfs is not None and os.path.isdir(self.node_rootfs)

    def _builtin(self) -> ImageInfo:
        assert self.node_rootfs is not None
        stamp = Path(self.node_rootfs, ".lclusterd-rootfs")  # rootfs/build.sh writes it last
        when = (stamp if stamp.exists() else Path(self.node_rootfs)).stat().st_mtime
        return ImageInfo(BUILTIN, self.node_rootfs, when, importer.tree_size(self.node_rootfs), None,
                         format="rootfs", source=self.node_rootfs, builtin=True)

    # -- writing -------------------------------------------------------------------------

    def import_image(self, name: str, path: str, ref: str | None = None, replace: bool = False,
                     say: Callable[[str], None] = lambda line: None) -> ImageInfo:
        """Import the OCI layout or docker save archive at `path` as `name`. InvalidImageName,
        ImageExists, InvalidImage (with the reason: missing, not an image, malformed,
        corrupt, a hostile layer), ImageError (the store cannot be written)."""
        check_name(name)
        if name == BUILTIN:
            raise ImageExists(f"{BUILTIN} is this node's rootfs ({self.node_rootfs}), built by make prep; "
                              "import the image under another name")
        with self._locked():
            if (self.dir / name).exists() and not replace:
                raise ImageExists(f"an image named {name!r} is already on this node (--replace replaces it)")
            source = open_source(path)
            try:
                manifest = read_manifest(source, ref)
                work = self.dir / f".tmp-{name}-{secrets.token_hex(4)}"
                work.mkdir(mode=0o755)
                try:
                    info = self._build(name, path, source, manifest, work)
                    self._install(work, self.dir / name)
                except BaseException:
                    shutil.rmtree(work, ignore_errors=True)
                    raise
            finally:
                source.close()
        for line in _notes(info):
            say(line)
        return info

    def _build(self, name: str, path: str, source: Source, manifest: ImageManifest, work: Path) -> ImageInfo:
        """The image's tree, config and record in `work`."""
        built = importer.build(source, manifest, str(work / ROOTFS))
        info = ImageInfo(name=name, rootfs=str(self.dir / name / ROOTFS), imported_at=time.time(),
                         size_bytes=importer.tree_size(str(work / ROOTFS)),
                         layers_digest=importer.layers_digest(manifest.config.diff_ids), format=manifest.format,
                         source=os.path.abspath(path), ref=manifest.ref, config_digest=manifest.config_digest,
                         diff_ids=manifest.config.diff_ids, dropped=tuple(built.dropped), replaced=tuple(built.replaced))
        (work / CONFIG).write_bytes(manifest.config_raw)
        (work / RECORD).write_text(json.dumps(info.to_json(), indent=1) + "\n")
        return info

    def _install(self, work: Path, final: Path) -> None:
        """Put the finished image in place in one step; the one it replaces goes after."""
        if not final.exists():
            kernel.rename(str(work), str(final), kernel.RENAME_NOREPLACE)
            return
        with inuse.unused(final.name, str(final / ROOTFS)):  # the old tree goes: no job may run on it
            kernel.rename(str(work), str(final), kernel.RENAME_EXCHANGE)
            shutil.rmtree(work)  # now the old image

    def remove(self, name: str) -> None:
        """Remove image `name`: ImageNotFound if there is none; the node's rootfs is refused."""
        check_name(name)
        if name == BUILTIN:
            raise ImageError(f"{BUILTIN} is this node's rootfs ({self.node_rootfs}); it is not removed from here")
        with self._locked():
            final = self.dir / name
            if not (final / RECORD).exists():
                raise ImageNotFound(name)
            # Renamed first, so the name is gone at once and a crash mid-removal leaves only a leftover.
            doomed = self.dir / f".old-{name}-{secrets.token_hex(4)}"
            with inuse.unused(name, str(final / ROOTFS)):
                kernel.rename(str(final), str(doomed), kernel.RENAME_NOREPLACE)
                shutil.rmtree(doomed)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)  # also when an older directory had another mode
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._sweep()
            yield
        finally:
            os.close(fd)

    def _sweep(self) -> None:
        """Remove what imports and removals that crashed left (only ever under the lock)."""
        for path in self.dir.iterdir():
            if path.name.startswith(LEFTOVERS):
                shutil.rmtree(path, ignore_errors=True)


def _notes(info: ImageInfo) -> list[str]:
    """What the import's output says about entries it did not take as they were."""
    notes = []
    if info.dropped:
        shown = ", ".join(f"{path} ({kind})" for path, kind in info.dropped[:8])
        more = f" and {len(info.dropped) - 8} more (image.json lists them)" if len(info.dropped) > 8 else ""
        notes.append(f"dropped {len(info.dropped)} device node(s) and FIFO(s) (a job gets its devices from the "
                     f"runtime, and every mount it can write is nodev): {shown}{more}")
    for name, what in info.replaced:
        notes.append(f"/{name} was {what}; made an empty directory, since the runtime mounts on it")
    return notes


