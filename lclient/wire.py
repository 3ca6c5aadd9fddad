"""One gRPC unary call over HTTP/2, in plain Python: lclient's short commands without
importing gRPC.

Importing grpc (its C core, and asyncio, which it loads unconditionally) costs several
times the interpreter's own start, more than the whole call; a command such as `-check`
or `-add` makes one call on one connection, which needs little of HTTP/2: the client
preface, one stream, the server's SETTINGS and PINGs answered, HPACK to read the answer.
The Unix socket and plain TCP only: TLS stays with gRPC's client (JobsClient), and so does
every call this module cannot make with certainty that nothing reached the server
(NotDelivered: no connection, or a peer that never spoke HTTP/2 - the node's socket gate
closing a uid it does not accept, a TLS listener), so those errors read as they always did.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import NamedTuple  # (not dataclasses: it imports inspect, a tenth of a -check's start)

from lclient import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
STREAM = 1  # the one stream of the connection
_FRAME = struct.Struct(">BHBBI")  # length (24 bits as 8 + 16), type, flags, stream id
_SETTING = struct.Struct(">HI")
ENABLE_PUSH, INITIAL_WINDOW_SIZE = 0x2, 0x4
WINDOW_MAX = 2**31 - 1
DEFAULT_WINDOW = 65535
# Requests above this go through gRPC: one DATA frame within the default frame size, so
# neither flow control nor the server's limits can hold a request half sent.
MAX_REQUEST = 16384 - 5
MAX_FRAME = 1 << 24
CODE_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
              "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
              "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
REFUSED_STREAM = 0x7  # RST_STREAM's code for a stream the server did not process


class NotDelivered(Exception):
    """The request cannot have reached the server: the caller may make the call another way."""


class Reply(NamedTuple):
    """How the call ended: gRPC's status code (by name) and message, whether the daemon itself
    answered it (its error metadata key in the trailers), and the reply message's bytes when OK."""

    code: str
    details: str
    ours: bool
    body: bytes = b""


def fits(request: bytes) -> bool:
    return len(request) <= MAX_REQUEST


def unary(server: str, path: str, request: bytes, timeout: float | None, error_key: str) -> Reply:
    """Call `path` (/package.Service/Method) on `server` (unix:PATH or HOST:PORT) with the
    serialized `request`; `timeout` seconds for all of it (None: no limit). Raises
    NotDelivered (see the module's docstring); a lost connection or the deadline come back
    as the Reply gRPC's client would give (UNAVAILABLE "Socket closed", DEADLINE_EXCEEDED)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    sock = _connect(server, timeout)
    try:
        call = _Call(sock, deadline)
        sock.sendall(_request_bytes(server, path, request, timeout))
        return call.finish(error_key)
    except NotDelivered:
        raise
    except socket.timeout:
        return Reply("DEADLINE_EXCEEDED", "Deadline Exceeded", False)
    except (OSError, _Closed, hpack.HpackError, struct.error) as exc:
        if isinstance(exc, (OSError, _Closed)) and not call.spoke:
            raise NotDelivered(str(exc)) from None
        return Reply("UNAVAILABLE", f"Socket closed ({exc})", False)
    finally:
        sock.close()


def _connect(server: str, timeout: float | None) -> socket.socket:
    try:
        if server.startswith("unix:"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(server[len("unix:"):])
            except OSError:
                sock.close()
                raise
            return sock
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise NotDelivered(f"not HOST:PORT: {server}")
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except OSError as exc:
        raise NotDelivered(str(exc)) from None


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return _FRAME.pack(len(payload) >> 16, len(payload) & 0xFFFF, kind, flags, stream) + payload


def _timeout_header(timeout: float) -> str:
    return f"{max(1, int(timeout * 1000))}m"  # at most 8 digits: 27 hours in ms


def _request_bytes(server: str, path: str, request: bytes, timeout: float | None) -> bytes:
    authority = "localhost" if server.startswith("unix:") else server
    headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
               ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "lclient")]
    if timeout is not None and timeout < 27 * 3600:
        headers.append(("grpc-timeout", _timeout_header(timeout)))
    settings = _SETTING.pack(ENABLE_PUSH, 0) + _SETTING.pack(INITIAL_WINDOW_SIZE, WINDOW_MAX)
    message = b"\x00" + struct.pack(">I", len(request)) + request
    return b"".join([
        PREFACE, _frame(SETTINGS, 0, 0, settings),
        _frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", WINDOW_MAX - DEFAULT_WINDOW)),  # the connection's window
        _frame(HEADERS, END_HEADERS, STREAM, hpack.encode(headers)),
        _frame(DATA, END_STREAM, STREAM, message),
    ])


class _Closed(Exception):
    """The connection ended before the stream did."""


class _Call:
    """The reading side of the one stream: frames until the stream ends."""

    def __init__(self, sock: socket.socket, deadline: float | None):
        self.sock, self.deadline = sock, deadline
        self.buffer = bytearray()
        self.spoke = False  # the server's preface (a SETTINGS frame) has arrived
        self.decoder = hpack.Decoder()
        self.headers: list[tuple[str, str]] = []
        self.data = bytearray()

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("deadline")
                self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise _Closed("the connection was closed")
            self.buffer += chunk
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    def _next_frame(self) -> tuple[int, int, int, bytes]:
        high, low, kind, flags, stream = _FRAME.unpack(self._read(9))
        length = high << 16 | low
        if length > MAX_FRAME:
            raise _Closed(f"a frame of {length} bytes")
        payload = self._read(length)
        if not self.spoke:
            if kind != SETTINGS or stream != 0:
                raise NotDelivered("the server does not speak HTTP/2")
            self.spoke = True
        return kind, flags, stream & 0x7FFFFFFF, payload

    def finish(self, error_key: str) -> Reply:
        block, ending = b"", False
        while True:
            kind, flags, stream, payload = self._next_frame()
            if kind == SETTINGS and not flags & ACK:
                self.sock.sendall(_frame(SETTINGS, ACK, 0, b""))
            elif kind == PING and not flags & ACK:
                self.sock.sendall(_frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                if struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF < STREAM:
                    raise NotDelivered("the server went away before the call")
            elif stream != STREAM:
                continue  # WINDOW_UPDATE, acks: nothing a one-call client does with them
            elif kind == RST_STREAM:
                code = struct.unpack(">I", payload[:4])[0]
                if code == REFUSED_STREAM:
                    raise NotDelivered("the server refused the stream")
                return Reply("INTERNAL", f"Received RST_STREAM with error code {code}", False)
            elif kind == DATA:
                self.data += _unpad(flags, payload)
                if flags & END_STREAM:
                    return self._reply(error_key)
            elif kind in (HEADERS, CONTINUATION):
                ending = ending or (kind == HEADERS and bool(flags & END_STREAM))
                block += _header_fragment(kind, flags, payload)
                if flags & END_HEADERS:
                    self.headers += self.decoder.decode(block)
                    block = b""
                    if ending:  # the trailers (or a trailers-only answer) end the stream
                        return self._reply(error_key)

    def _reply(self, error_key: str) -> Reply:
        fields = dict(self.headers)
        ours = any(name == error_key for name, _ in self.headers)
        if fields.get(":status", "200") != "200" or "grpc-status" not in fields:
            return Reply("UNKNOWN", f"HTTP status {fields.get(':status', '?')} without a gRPC status", ours)
        number = int(fields["grpc-status"]) if fields["grpc-status"].isdigit() else 2
        code = CODE_NAMES[number] if number < len(CODE_NAMES) else "UNKNOWN"
        details = _percent_decoded(fields.get("grpc-message", ""))
        if code != "OK":
            return Reply(code, details, ours)
        data = bytes(self.data)
        if len(data) < 5 or data[0] != 0 or struct.unpack(">I", data[1:5])[0] != len(data) - 5:
            return Reply("INTERNAL", "the reply is not one uncompressed gRPC message", ours)
        return Reply("OK", details, ours, data[5:])


def _unpad(flags: int, payload: bytes) -> bytes:
    if flags & PADDED:
        return payload[1:len(payload) - payload[0]]
    return payload


def _header_fragment(kind: int, flags: int, payload: bytes) -> bytes:
    if kind == CONTINUATION:
        return payload
    payload = _unpad(flags, payload)
    return payload[5:] if flags & PRIORITY_FLAG else payload


def _percent_decoded(text: str) -> str:
    """grpc-message: UTF-8 with every byte outside printable ASCII, and '%', as %XX."""
    if "%" not in text:
        return text
    raw, i = bytearray(), 0
    encoded = text.encode()
    while i < len(encoded):
        if encoded[i] == 0x25 and _is_hex(encoded[i + 1:i + 3]):
            raw.append(int(encoded[i + 1:i + 3], 16))
            i += 3
        else:
            raw.append(encoded[i])
            i += 1
    return raw.decode("utf-8", "replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)
