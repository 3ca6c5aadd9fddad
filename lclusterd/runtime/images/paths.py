"""Names inside a layer, taken apart before anything touches the disk. Pure.

A layer is a tar whose member names are paths beneath the image's root. Every name is
split into components here, and a name that could leave the root (absolute, or with a
'..' component) is refused, never cleaned up into something else: a layer that tries it
is hostile or broken, and either way the import stops (layer.py). What the components
then name on disk is resolved one directory at a time without following a link
(tree.py), so a symbolic link inside the image can never take a write outside it.

Whiteouts (OCI image spec, "Representing Changes"): `.wh.NAME` removes NAME of the layers
below; `.wh..wh..opq` in a directory hides everything the layers below had in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from lclusterd.runtime import mounts

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
# Other `.wh..wh.` names are AUFS's own bookkeeping (e.g. `.wh..wh.plnk`), never content.
AUFS_META = ".wh..wh."

Parts = tuple[str, ...]


class Refused(ValueError):
    """A layer entry that breaks a rule; the import stops with this sentence."""


def parts_of(name: str) -> Parts:
    """The components of a member name or hard link target beneath the image root; () is
    the root itself ("", ".", "./"). Refused: absolute names, '..' anywhere, NUL."""
    if "\0" in name:
        raise Refused(f"entry {name!r} has a NUL byte in its name")
    if name.startswith("/"):
        raise Refused(f"entry {name!r} is an absolute path (names are relative to the image's root)")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise Refused(f"entry {name!r} has a '..' component, which would leave the image")
    return parts


def show(parts: Parts) -> str:
    """A path for messages and reports: relative, '/' for the root."""
    return "/".join(parts) or "/"


@dataclass(frozen=True)
class Entry:
    """What one member does: `kind` is root (the image root's own directory), plain (an
    entry to write at parent/name), whiteout (remove parent/name of the layers below),
    opaque (hide what the layers below had in parent) or meta (AUFS bookkeeping, skipped)."""

    kind: str
    parent: Parts
    name: str = ""

    @property
    def parts(self) -> Parts:
        return (*self.parent, self.name) if self.name else self.parent


def classify(name: str) -> Entry:
    """The Entry a member name stands for; Refused for a name that could leave the image,
    including a whiteout of '.' or '..'."""
    parts = parts_of(name)
    if not parts:
        return Entry("root", ())
    parent, base = parts[:-1], parts[-1]
    if base == OPAQUE:
        return Entry("opaque", parent)
    if base.startswith(AUFS_META):
        return Entry("meta", parent, base)
    if base.startswith(WHITEOUT):
        target = base[len(WHITEOUT):]
        if target in ("", ".", ".."):
            raise Refused(f"whiteout {name!r} names {target or 'nothing'!r}, not an entry of its directory")
        return Entry("whiteout", parent, target)
    return Entry("plain", parent, base)


def link_target(linkname: str) -> Parts:
    """The components of a hard link's target, which must be an entry inside the image."""
    try:
        parts = parts_of(linkname)
    except Refused as exc:
        raise Refused(f"hard link to {linkname!r}: {exc}") from None
    if not parts:
        raise Refused("hard link to the image's root directory")
    return parts


def mount_points() -> tuple[str, ...]:
    """The top-level directories of a job's root the runtime mounts on before pivot_root
    (mounts.py: proc, dev, sys, tmp). Then every path still resolves against the host's
    root, so an image must have real directories there, never links (see store.py)."""
    scratch = mounts.Scratch("/scratch")
    names = []
    for op in mounts.plan_before_pivot(scratch, "/lower"):
        if op.kind == "mkdir" and op.target.count("/") == scratch.root.count("/") + 1:
            names.append(op.target.rsplit("/", 1)[1])
    return tuple(names)
