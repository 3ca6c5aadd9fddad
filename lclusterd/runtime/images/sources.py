"""What `lclusterd image import` reads from: a directory or a tar archive (plain or
compressed) holding an OCI image layout or a `docker save` archive. Files are looked up by
the names the manifests give, never extracted: a tar's own members are only ever read.

A source is the operator's, not an image's layer; still, a name taken from a manifest
must stay inside it (`inside`), and links inside a tar (docker save writes
`<id>/layer.tar -> ../<digest>.tar`) are resolved among its members only.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from typing import BinaryIO, Protocol

from lclusterd.errors import InvalidImage

MAX_LINKS = 8  # links followed to reach one member of a tar source
MARKERS = ("oci-layout", "manifest.json")  # what tells an image's top directory


class Source(Protocol):
    path: str

    def exists(self, name: str) -> bool: ...

    def open(self, name: str) -> BinaryIO: ...

    def close(self) -> None: ...


def inside(name: str, what: str = "path") -> str:
    """`name` from a manifest, normalised; InvalidImage unless it names a file inside the source."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise InvalidImage(f"malformed manifest: {what} {name!r} is not a path")
    clean = posixpath.normpath(name)
    if clean.startswith(("/", "../")) or clean in ("..", "."):
        raise InvalidImage(f"malformed manifest: {what} {name!r} is outside the image")
    return clean


def read(source: Source, name: str, limit: int) -> bytes:
    """A small file (a manifest, an index, a config) whole; InvalidImage if it is larger
    than `limit` bytes, which no manifest is."""
    with source.open(name) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InvalidImage(f"{name} in {source.path} is larger than {limit} bytes; not an image manifest")
    return data


def open_source(path: str) -> Source:
    """The source at `path`; InvalidImage if it is missing or neither a directory nor a tar."""
    try:
        if os.path.isdir(path):
            return DirSource(path)
        return TarSource(path)
    except FileNotFoundError:
        raise InvalidImage(f"{path}: no such file or directory") from None
    except IsADirectoryError:
        raise InvalidImage(f"{path}: not a regular file") from None
    except PermissionError as exc:
        raise InvalidImage(f"{path}: {exc.strerror}") from None
    except (tarfile.TarError, EOFError, OSError):
        raise InvalidImage(f"{path} is not an image: neither a directory nor a tar archive") from None


class DirSource:
    def __init__(self, path: str):
        self.path = path
        self._root = os.path.realpath(path)

    def _resolve(self, name: str) -> str:
        # The operator's own directory: a link inside it may point within it, not beyond.
        real = os.path.realpath(os.path.join(self._root, inside(name)))
        if os.path.commonpath([real, self._root]) != self._root:
            raise InvalidImage(f"{name} in {self.path} is a link to outside the image")
        return real

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._resolve(name))

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self._resolve(name), "rb")
        except OSError as exc:
            raise InvalidImage(f"{name} in {self.path}: {exc.strerror}") from None

    def close(self) -> None:
        pass


class TarSource:
    def __init__(self, path: str):
        self.path = path
        self._tar = tarfile.open(path, "r:*")  # plain, gzip, bzip2 or xz
        try:
            self._members = {posixpath.normpath(m.name.lstrip("/")): m for m in self._tar.getmembers()}
        except BaseException:
            self._tar.close()
            raise
        self._prefix = self._top_directory()

    def _top_directory(self) -> str:
        """'' when the image is at the archive's top; 'DIR/' when the archive holds one
        directory that is (`tar cf x.tar layout/` rather than `tar cf x.tar -C layout .`)."""
        if any(marker in self._members for marker in MARKERS):
            return ""
        tops = {name.split("/", 1)[0] for name in self._members if name != "."}
        if len(tops) == 1:
            top = tops.pop()
            if any(f"{top}/{marker}" in self._members for marker in MARKERS):
                return top + "/"
        return ""

    def _member(self, name: str) -> tarfile.TarInfo | None:
        key = self._prefix + inside(name)
        for _ in range(MAX_LINKS):
            member = self._members.get(key)
            if member is None or not (member.issym() or member.islnk()):
                return member
            base = posixpath.dirname(key) if member.issym() else ""
            key = posixpath.normpath(posixpath.join(base, member.linkname))
            if key.startswith(("/", "../")) or key == "..":
                raise InvalidImage(f"{name} in {self.path} is a link to outside the archive")
        raise InvalidImage(f"{name} in {self.path}: too many levels of links")

    def exists(self, name: str) -> bool:
        member = self._member(name)
        return member is not None and member.isreg()

    def open(self, name: str) -> BinaryIO:
        member = self._member(name)
        if member is None or not member.isreg():
            raise InvalidImage(f"{name} is not in {self.path}")
        f = self._tar.extractfile(member)
        assert f is not None
        return f

    def close(self) -> None:
        self._tar.close()
