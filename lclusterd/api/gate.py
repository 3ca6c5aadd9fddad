"""The node's Unix socket, with the caller's identity from the kernel.

gRPC's Python server does not tell a handler who is on the other end of a Unix socket, and
cannot adopt a connection accepted elsewhere. So the node's public socket (0660, group
`lclusterd`, so only root and the group's members can connect at all) is served by this
gate: it accepts a connection, reads the peer's credentials (SO_PEERCRED: the uid the
kernel recorded at connect time), decides who that is (root: an admin; a member of the
group: that user; anyone else: the connection is closed), and relays the connection's
bytes to the gRPC server's private socket (in a 0700 directory) from a socket bound to an
abstract address that names the connection. The gRPC server reports that address as the
call's peer, and the Authenticator looks the identity up by it. One thread relays every
connection (a selector loop), each direction with its own small buffer.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import selectors
import socket
import struct
import threading
from pathlib import Path

from lclusterd.api.identity import Identity

log = logging.getLogger(__name__)

GROUP = "lclusterd"
CHUNK = 256 * 1024
_UCRED = struct.Struct("3i")  # pid, uid, gid


def who_is(uid: int, group: str = GROUP) -> Identity | None:
    """The identity of a local uid, or None if it may not use the node (not root, not in `group`)."""
    if uid == 0:
        return Identity("root", admin=True)
    try:
        user = pwd.getpwuid(uid)
        group_id = grp.getgrnam(group).gr_gid
    except KeyError:
        return None
    if group_id in os.getgrouplist(user.pw_name, user.pw_gid):
        return Identity(user.pw_name)
    return None


class _Pipe:
    """One direction of one relayed connection: bytes read from `src` wait in `pending`
    until `dst` takes them."""

    __slots__ = ("src", "dst", "pending", "eof")

    def __init__(self, src: socket.socket, dst: socket.socket):
        self.src, self.dst, self.pending, self.eof = src, dst, b"", False


class _Connection:
    """A relayed connection: its two directions, and the address naming it to the API."""

    __slots__ = ("pipes", "address")

    def __init__(self, client: socket.socket, upstream: socket.socket, address: str):
        self.pipes = (_Pipe(client, upstream), _Pipe(upstream, client))
        self.address = address


class UnixGate:
    def __init__(self, public: str | Path, private: str | Path, tag: str):
        self.public, self.private, self.tag = str(public), str(private), tag
        self._identities: dict[str, Identity] = {}
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._count = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="unix gate", daemon=True)

    def identity(self, address: str) -> Identity | None:
        with self._lock:
            return self._identities.get(address)

    def bind(self) -> None:
        """Make the public socket: 0660, group lclusterd (0600 if the group does not exist)."""
        Path(self.public).unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)  # no moment in which others could connect
        try:
            listener.bind(self.public)
        finally:
            os.umask(old)
        try:
            os.chown(self.public, 0, grp.getgrnam(GROUP).gr_gid)
            os.chmod(self.public, 0o660)
        except KeyError:
            log.warning("no group %s (make prep adds it): the socket %s is root's only", GROUP, self.public)
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener

    def start(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        if self._thread.is_alive():
            self._wake_w.send(b"x")
            self._thread.join(timeout=5)
        for closable in (self._selector, self._wake_r, self._wake_w):
            closable.close()
        if self._listener is not None:
            self._listener.close()
        Path(self.public).unlink(missing_ok=True)

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopped:
            for key, events in self._selector.select():
                try:
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is not self._wake_r:
                        self._relay(key, events)
                except Exception:  # noqa: BLE001 - one connection's trouble must not stop the gate
                    log.exception("unix gate")
        for key in list(self._selector.get_map().values()):
            if isinstance(key.data, _Connection):
                self._close(key.data)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        pid, uid, gid = _UCRED.unpack(client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        identity = who_is(uid)
        if identity is None:
            log.warning("refused a connection from uid %d (pid %d): not root and not in the group %s", uid, pid, GROUP)
            client.close()
            return
        self._count += 1
        address = f"{self.tag}-{self._count}"
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            upstream.bind("\0" + address)
            upstream.connect(self.private)
        except OSError:
            upstream.close()
            client.close()
            raise
        with self._lock:
            self._identities[address] = identity
        connection = _Connection(client, upstream, address)
        for sock in (client, upstream):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, connection)

    def _relay(self, key: selectors.SelectorKey, events: int) -> None:
        connection = key.data
        for pipe in connection.pipes:
            if pipe.src is key.fileobj and events & selectors.EVENT_READ and not pipe.pending:
                self._read(pipe)
            if pipe.dst is key.fileobj or pipe.pending:
                self._write(pipe)
        if all(p.eof and not p.pending for p in connection.pipes):
            self._close(connection)
            return
        for pipe in connection.pipes:
            self._watch(pipe.src, connection)

    def _read(self, pipe: _Pipe) -> None:
        try:
            data = pipe.src.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            pipe.pending = data
        elif not pipe.eof:
            pipe.eof = True
            try:
                pipe.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _write(self, pipe: _Pipe) -> None:
        if not pipe.pending:
            return
        try:
            sent = pipe.dst.send(pipe.pending)
        except BlockingIOError:
            return
        except OSError:  # the other end is gone: drop what it will never read
            pipe.pending, pipe.eof = b"", True
            return
        pipe.pending = pipe.pending[sent:]

    def _watch(self, sock: socket.socket, connection: _Connection) -> None:
        """Read a socket while its outgoing pipe has room; write to it while its incoming
        pipe has bytes waiting."""
        outgoing, incoming = connection.pipes if connection.pipes[0].src is sock else connection.pipes[::-1]
        mask = 0 if outgoing.pending or outgoing.eof else selectors.EVENT_READ
        mask |= selectors.EVENT_WRITE if incoming.pending else 0
        try:
            if mask:
                self._selector.modify(sock, mask, connection)
            else:
                self._selector.unregister(sock)
        except KeyError:  # not registered now
            if mask:
                self._selector.register(sock, mask, connection)

    def _close(self, connection: _Connection) -> None:
        for pipe in connection.pipes:
            try:
                self._selector.unregister(pipe.src)
            except (KeyError, ValueError):
                pass
            pipe.src.close()
        with self._lock:
            self._identities.pop(connection.address, None)
