"""The wire under the launcher <-> fork server protocol (protocol.py).

A message is a JSON object sent as a 4-byte big-endian length and the body, over a Unix
stream socket; file descriptors ride along with SCM_RIGHTS on the length header (the
job's stdin, stdout and stderr, when the caller hands over open files).
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

_HEADER = struct.Struct(">I")
MAX_MESSAGE = 64 << 20


class ChannelClosed(Exception):
    """The other end closed the socket."""


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    body = json.dumps(message, separators=(",", ":")).encode()
    # MSG_NOSIGNAL: a closed peer is an EPIPE error here, never a SIGPIPE (the fork
    # server keeps SIGPIPE at its default, as the jobs it starts get it).
    if fds:
        header = _HEADER.pack(len(body))
        if socket.send_fds(sock, [header], fds, socket.MSG_NOSIGNAL) != len(header):
            raise OSError("short write of a message header")
        sock.sendall(body, socket.MSG_NOSIGNAL)
    else:
        sock.sendall(_HEADER.pack(len(body)) + body, socket.MSG_NOSIGNAL)


def send_bytes(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    """Bytes already framed by the caller (a job plan for the job init), with `fds`
    riding on the first part."""
    sent = socket.send_fds(sock, [data], fds, socket.MSG_NOSIGNAL)
    if sent < len(data):
        sock.sendall(data[sent:], socket.MSG_NOSIGNAL)


def receive(sock: socket.socket) -> dict[str, Any]:
    """Block until one whole message has arrived. Raises ChannelClosed at EOF."""
    return receive_with_fds(sock)[0]


def receive_with_fds(sock: socket.socket, max_fds: int = 3) -> tuple[dict[str, Any], list[int]]:
    """One message and the file descriptors sent with it (the caller owns them)."""
    header, fds, _, _ = socket.recv_fds(sock, _HEADER.size, max_fds)
    if not header:
        raise ChannelClosed()
    if len(header) < _HEADER.size:
        header += _read_exactly(sock, _HEADER.size - len(header))
    (length,) = _HEADER.unpack(header)
    if length > MAX_MESSAGE:
        raise ValueError(f"message of {length} bytes is over the {MAX_MESSAGE} byte limit")
    message = json.loads(_read_exactly(sock, length))
    if not isinstance(message, dict):
        raise ValueError("message is not a JSON object")
    return message, fds


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ChannelClosed()
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
