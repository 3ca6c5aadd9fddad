"""A layer's bytes as they are read: hashed on the way (the blob's sha256 as stored, and
the diff_id, the sha256 of the uncompressed tar), decompressed when gzip, in one pass.

The digests are compared only once the whole layer has been read and applied; until then
it lives in the import's temporary directory, which a mismatch throws away with the rest
(store.py), so one read of each layer is enough.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from typing import BinaryIO

from lclusterd.errors import InvalidImage

CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class HashingReader(io.RawIOBase):
    """Reads through to `raw`, hashing and counting every byte."""

    def __init__(self, raw: BinaryIO):
        super().__init__()
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        count = len(data)
        buffer[:count] = data
        self._hash.update(data)
        self.size += count
        return count

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class LayerStream:
    """One layer blob opened for reading: `tar` is the uncompressed tar stream; after the
    tar's end, finish() reads what is left and gives the digests."""

    def __init__(self, raw: BinaryIO):
        self._blob = HashingReader(raw)
        self._buffered = io.BufferedReader(self._blob, CHUNK)
        magic = self._buffered.peek(4)[:4]
        if magic == ZSTD_MAGIC:
            raise InvalidImage("zstd-compressed layers are not supported (gzip or plain tar only)")
        self.compression = "gzip" if magic[:2] == GZIP_MAGIC else "none"
        inner: BinaryIO = gzip.GzipFile(fileobj=self._buffered, mode="rb") if self.compression == "gzip" else self._buffered
        self._diff = HashingReader(inner)
        self.tar = io.BufferedReader(self._diff, CHUNK)

    def finish(self) -> tuple[str, int, str]:
        """(the blob's digest, its size, the diff_id), having read both streams to their end:
        a tar's end-of-archive blocks may be followed by padding, which the digests cover."""
        try:
            while self.tar.read(CHUNK):
                pass
            while self._buffered.read(CHUNK):
                pass
        except (OSError, EOFError, zlib.error) as exc:
            raise InvalidImage(f"corrupt layer data: {exc}") from None
        return self._blob.digest, self._blob.size, self._diff.digest

    def blob_digest_to_end(self) -> str:
        """The blob's digest after a failed read: the rest of its bytes, undecompressed."""
        while self._buffered.read(CHUNK):
            pass
        return self._blob.digest
