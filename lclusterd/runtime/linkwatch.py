"""LinkWatch: which host network interfaces went away, as the fork server's select loop reads it.

A job's veth pair goes with its network namespace: when the job's last process exits, the
kernel tears the namespace down in a worker of its own and removes both ends, 1-3 ms later
(up to 20-30 ms here when the job ends within a few ms of its link coming up). Deleting the
host end ourselves instead costs 15-30 ms in the fork server (the kernel waits out RCU grace
periods under the RTNL lock in the caller), so the fork server lets the kernel do it and
listens for RTM_DELLINK on a netlink socket in its loop. A plain socket and struct, not
pyroute2: its synchronous API reads through an asyncio loop of its own and may hold messages
where select() cannot see them; all that is wanted here is the name in each RTM_DELLINK.
"""

from __future__ import annotations

import errno
import socket
import struct

NETLINK_ROUTE = 0
RTMGRP_LINK = 1
RTM_DELLINK = 17
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTATTR = struct.Struct("=HH")  # length, type
IFLA_IFNAME = 3


class LinkWatch:
    """A netlink socket subscribed to link changes in the fork server's network namespace."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                  NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, RTMGRP_LINK))

    def fileno(self) -> int:
        return self.sock.fileno()

    def gone(self) -> tuple[list[str], bool]:
        """The names of links deleted since the last call, and whether messages were lost
        (the socket's buffer overran: the caller must look for itself)."""
        names: list[str] = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return names, False
            except OSError as error:
                if error.errno == errno.ENOBUFS:
                    return names, True
                raise
            names += deleted_links(data)

    def close(self) -> None:
        self.sock.close()


def deleted_links(data: bytes) -> list[str]:
    """The interface names of the RTM_DELLINK messages in one netlink datagram."""
    found, offset = [], 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break  # malformed: stop rather than loop
        if kind == RTM_DELLINK:
            name = _name(data[offset + _NLMSGHDR.size + _IFINFOMSG.size:offset + length])
            if name is not None:
                found.append(name)
        offset += (length + 3) & ~3  # NLMSG_ALIGN
    return found


def _name(attributes: bytes) -> str | None:
    """IFLA_IFNAME among a link message's attributes."""
    offset = 0
    while offset + _RTATTR.size <= len(attributes):
        length, kind = _RTATTR.unpack_from(attributes, offset)
        if length < _RTATTR.size:
            return None
        if kind == IFLA_IFNAME:
            return attributes[offset + _RTATTR.size:offset + length].split(b"\0", 1)[0].decode(errors="replace")
        offset += (length + 3) & ~3  # RTA_ALIGN
    return None
