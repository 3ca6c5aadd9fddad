"""Rtnl: the per-job link, address and route requests of network.py, as pyroute2's rtnetlink
messages sent over a plain blocking socket and acknowledged one at a time.

pyroute2's IPRoute runs every request through an asyncio loop of its own: 0.3-0.5 ms a request
here, and a bridge job's start takes six of them. The same messages, encoded by pyroute2 and
sent directly, cost 0.05-0.2 ms each besides the kernel's own work, which is what a job's start
path can afford. network.py keeps IPRoute for what runs once (the bridge's set-up, the sweep,
the teardown), where its dumps and parsed replies are worth their cost.
"""

from __future__ import annotations

import os
import socket
import struct
from ipaddress import IPv4Address

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

NETLINK_ROUTE = 0
_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFINDEX = struct.Struct("=i")  # ifinfomsg's index, 4 bytes into it; also nlmsgerr's error
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1
_NEW = NLM_F_CREATE | NLM_F_EXCL


class Rtnl:
    """One netlink socket, in the network namespace it was made in (see network.py)."""

    def __init__(self, sock: socket.socket | None = None):
        self.sock = sock or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.sequence = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_veth(self, name: str, master: int, peer: str, peer_netns: int) -> None:
        """A veth pair: `name` up, a port of the bridge `master`; `peer` made right inside the
        network namespace open at `peer_netns` (no move, no rename afterwards), and down: the
        kernel cannot bring a veth's second end up before its first is registered (ENOTCONN)."""
        message = ifinfmsg()
        message["flags"] = message["change"] = IFF_UP
        peer_info = {"attrs": [["IFLA_IFNAME", peer], ["IFLA_NET_NS_FD", peer_netns]]}
        message["attrs"] = [["IFLA_IFNAME", name], ["IFLA_MASTER", master],
                            ["IFLA_LINKINFO", {"attrs": [["IFLA_INFO_KIND", "veth"],
                                                         ["IFLA_INFO_DATA", {"attrs": [["VETH_INFO_PEER", peer_info]]}]]}]]
        self._request(message, RTM_NEWLINK, _NEW, f"add veth {name}")

    def link_index(self, name: str) -> int:
        """The index of the link called `name`; OSError(ENODEV) if there is none."""
        message = ifinfmsg()
        message["attrs"] = [["IFLA_IFNAME", name]]
        reply = self._request(message, RTM_GETLINK, 0, f"look up {name}")
        assert reply is not None  # a get is answered before its ack
        return _IFINDEX.unpack_from(reply, _HEADER.size + 4)[0]

    def set_up(self, index: int) -> None:
        message = ifinfmsg()
        message["index"], message["flags"], message["change"] = index, IFF_UP, IFF_UP
        self._request(message, RTM_NEWLINK, 0, f"bring link {index} up")

    def delete_link(self, name: str) -> None:
        message = ifinfmsg()
        message["attrs"] = [["IFLA_IFNAME", name]]
        self._request(message, RTM_DELLINK, 0, f"delete {name}")

    def add_address(self, index: int, address: IPv4Address, prefixlen: int) -> None:
        message = ifaddrmsg()
        message["family"], message["prefixlen"], message["index"] = socket.AF_INET, prefixlen, index
        message["attrs"] = [["IFA_LOCAL", str(address)], ["IFA_ADDRESS", str(address)]]
        self._request(message, RTM_NEWADDR, _NEW, f"add address {address}/{prefixlen}")

    def add_default_route(self, gateway: IPv4Address) -> None:
        message = rtmsg()
        message["family"], message["table"], message["proto"] = socket.AF_INET, RT_TABLE_MAIN, RTPROT_BOOT
        message["scope"], message["type"] = RT_SCOPE_UNIVERSE, RTN_UNICAST
        message["attrs"] = [["RTA_GATEWAY", str(gateway)]]
        self._request(message, RTM_NEWROUTE, _NEW, f"add default route via {gateway}")

    def _request(self, message: ifinfmsg | ifaddrmsg | rtmsg, kind: int, flags: int, what: str) -> bytes | None:
        """Send one request and read until its ack: the reply before the ack (a get's), if any.
        Raises OSError(errno, "what: strerror") when the kernel refuses it."""
        self.sequence += 1
        message["header"]["type"] = kind
        message["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        message["header"]["sequence_number"] = self.sequence
        message.encode()
        self.sock.send(message.data)
        reply = None
        while True:
            data, offset = self.sock.recv(1 << 16), 0
            while offset + _HEADER.size <= len(data):
                length, kind_of, _, sequence, _ = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size:
                    raise OSError(f"{what}: malformed netlink reply")
                if sequence == self.sequence and kind_of == NLMSG_ERROR:
                    code = _IFINDEX.unpack_from(data, offset + _HEADER.size)[0]
                    if code:
                        raise OSError(-code, f"{what}: {os.strerror(-code)}")
                    return reply
                if sequence == self.sequence:
                    reply = data[offset:offset + length]
                offset += (length + 3) & ~3
