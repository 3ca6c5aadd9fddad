"""HPACK (RFC 7541), as much as a gRPC client needs: request headers encoded as literals
(no index, no Huffman: a short request's headers are a few dozen bytes), response headers
decoded in full (the static and dynamic tables, Huffman strings). Pure."""

from __future__ import annotations

from lclient.huffman import CODES, LENGTHS

STATIC = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""), ("cache-control", ""),
    ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""), ("date", ""),
    ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""), ("if-match", ""),
    ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""), ("if-unmodified-since", ""),
    ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""), ("proxy-authenticate", ""),
    ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""),
    ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
    ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
)
ENTRY_OVERHEAD = 32  # RFC 7541 4.1: an entry's size is its name's and value's lengths plus 32
DEFAULT_TABLE_SIZE = 4096


class HpackError(ValueError):
    """A header block that is not valid HPACK: the connection cannot go on."""


def encode_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """`value` with an N-bit prefix (RFC 7541 5.1), `first` holding the first byte's high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode(headers: list[tuple[str, str]]) -> bytes:
    """A header block of literals without indexing, new names (RFC 7541 6.2.2)."""
    out = bytearray()
    for name, value in headers:
        out += b"\x00"
        for text in (name.encode(), value.encode()):
            out += encode_int(len(text), 7) + text
    return bytes(out)


def _huffman_codes() -> dict[tuple[int, int], int]:
    return {(length, code): symbol for symbol, (code, length) in enumerate(zip(CODES, LENGTHS))}


_BY_CODE: dict[tuple[int, int], int] | None = None


def huffman_decode(data: bytes) -> bytes:
    global _BY_CODE
    if _BY_CODE is None:  # built on first use: most answers carry no Huffman string
        _BY_CODE = _huffman_codes()
    out = bytearray()
    code = length = 0
    for byte in data:
        for shift in range(7, -1, -1):
            code = code << 1 | (byte >> shift) & 1
            length += 1
            symbol = _BY_CODE.get((length, code))
            if symbol is not None:
                if symbol == 256:
                    raise HpackError("Huffman string holds the end-of-string symbol")
                out.append(symbol)
                code = length = 0
            elif length > 30:
                raise HpackError("Huffman string holds an unknown code")
    if length > 7 or code != (1 << length) - 1:  # padding: the EOS code's first bits, all ones
        raise HpackError("Huffman string badly padded")
    return bytes(out)


class Decoder:
    """One connection's decoding context: its dynamic table lives across header blocks."""

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE):
        self.max_table_size = max_table_size  # what this end announced (SETTINGS_HEADER_TABLE_SIZE)
        self.table_size = max_table_size
        self.dynamic: list[tuple[str, str]] = []  # newest first
        self.size = 0

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        pos = 0
        while pos < len(block):
            byte = block[pos]
            if byte & 0x80:  # indexed field
                index, pos = self._int(block, pos, 7)
                headers.append(self._entry(index))
            elif byte & 0x40:  # literal, added to the table
                name, value, pos = self._literal(block, pos, 6)
                headers.append((name, value))
                self._add(name, value)
            elif byte & 0x20:  # table size update
                size, pos = self._int(block, pos, 5)
                if size > self.max_table_size:
                    raise HpackError(f"table size {size} above the {self.max_table_size} allowed")
                self.table_size = size
                self._evict()
            else:  # literal not added (0000) or never added (0001)
                name, value, pos = self._literal(block, pos, 4)
                headers.append((name, value))
        return headers

    def _int(self, block: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
        limit = (1 << prefix_bits) - 1
        value = block[pos] & limit
        pos += 1
        if value < limit:
            return value, pos
        shift = 0
        while True:
            if pos >= len(block) or shift > 28:
                raise HpackError("integer runs past the header block")
            byte = block[pos]
            pos += 1
            value += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, pos

    def _string(self, block: bytes, pos: int) -> tuple[str, int]:
        if pos >= len(block):
            raise HpackError("string runs past the header block")
        huffman = block[pos] & 0x80
        length, pos = self._int(block, pos, 7)
        if pos + length > len(block):
            raise HpackError("string runs past the header block")
        raw = block[pos:pos + length]
        text = huffman_decode(raw) if huffman else raw
        return text.decode("utf-8", "replace"), pos + length

    def _literal(self, block: bytes, pos: int, prefix_bits: int) -> tuple[str, str, int]:
        index, pos = self._int(block, pos, prefix_bits)
        if index:
            name = self._entry(index)[0]
        else:
            name, pos = self._string(block, pos)
        value, pos = self._string(block, pos)
        return name, value, pos

    def _entry(self, index: int) -> tuple[str, str]:
        if 1 <= index <= len(STATIC):
            return STATIC[index - 1]
        if 0 <= index - len(STATIC) - 1 < len(self.dynamic):
            return self.dynamic[index - len(STATIC) - 1]
        raise HpackError(f"no header table entry {index}")

    def _add(self, name: str, value: str) -> None:
        self.dynamic.insert(0, (name, value))
        self.size += len(name.encode()) + len(value.encode()) + ENTRY_OVERHEAD
        self._evict()

    def _evict(self) -> None:
        while self.size > self.table_size and self.dynamic:
            name, value = self.dynamic.pop()
            self.size -= len(name.encode()) + len(value.encode()) + ENTRY_OVERHEAD
