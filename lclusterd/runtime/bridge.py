"""Bridge: a node's bridge and its rules, set up, swept and removed by the fork servers that use
it (network.py holds the host-wide set-up lock around each of these; the jobs on the bridge are
network.py's too).

Set up: the bridge, marked as ours with an interface alias (we never take over, or remove,
an interface we did not make), with a fixed MAC, the subnet's first address, route_localnet
(127.0.0.1:HOSTPORT is routed out of it), no IPv6, and IPv4 forwarding on for the host; our
nftables table with the bridge's rules (nft.py). Swept: the veths and rules of addresses
whose lease nobody holds (a fork server died). Removed: by the bridge's last user.

Through pyroute2's IPRoute: these run once per fork server, where its dumps and parsed
replies are worth their cost (rtnl.py carries the per-job requests).
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from ipaddress import IPv4Interface
from typing import Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from lclusterd.errors import SetupFailed
from lclusterd.runtime import leases, netconf, nft
from lclusterd.runtime.leases import Leases
from lclusterd.runtime.netconf import NetworkConfig
from lclusterd.runtime.nft import Nft

ALIAS = "lclusterd job network"  # marks a bridge as ours (ip link shows it)


@contextmanager
def netlink(call: str) -> Iterator[None]:
    """pyroute2's NetlinkError as the OSError every other kernel call here raises."""
    try:
        yield
    except NetlinkError as error:
        raise OSError(error.code, f"{call}: {os.strerror(error.code)}") from None


class Bridge:
    def __init__(self, config: NetworkConfig, rules: Nft):
        self.config = config
        self.nft = rules
        self.ipr = IPRoute()

    def close(self) -> None:
        self.ipr.close()

    def set_up(self) -> int:
        """The bridge's index, made if missing, and its rules; SetupFailed if it is not ours to use."""
        index = self._link()
        comment = nft.bridge_comment(self.config.bridge)
        present = any(rule.comment == comment for rule in self.nft.list_rules() or [])
        self.nft.run(nft.table() + ([] if present else nft.bridge_rules(self.config.bridge, self.config.network)))
        return index

    def _link(self) -> int:
        bridge, gateway = self.config.bridge, IPv4Interface(f"{self.config.gateway}/{self.config.network.prefixlen}")
        with netlink(f"set up bridge {bridge}"):
            mine = self._check_subnet()
            if not self.ipr.link_lookup(ifname=bridge):
                # A fixed MAC: a bridge without one takes its lowest port's, and changes it as
                # jobs come and go, under the ARP caches of every other job.
                self.ipr.link("add", ifname=bridge, kind="bridge", address=_local_mac())
                self.ipr.link("set", ifname=bridge, ifalias=ALIAS)
            link = self.ipr.link("get", ifname=bridge)[0]
            if link.get_attr("IFLA_IFALIAS") != ALIAS:
                raise SetupFailed("network", f"a network interface {bridge} exists and is not lclusterd's: "
                                             "choose another bridge")
            if not mine:
                self.ipr.addr("add", index=link["index"], address=str(gateway.ip), prefixlen=gateway.network.prefixlen)
            elif mine != [gateway]:
                raise SetupFailed("network", f"bridge {bridge} has the address {mine[0]}, not {gateway} "
                                             "(another runtime uses it with another subnet)")
            _sysctl(f"net/ipv4/conf/{bridge}/route_localnet", "1")  # 127.0.0.1:HOSTPORT may go out the bridge
            _sysctl(f"net/ipv6/conf/{bridge}/disable_ipv6", "1")  # jobs' network is IPv4: no addresses come and go
            self.ipr.link("set", index=link["index"], state="up")
        _sysctl("net/ipv4/ip_forward", "1")  # jobs reach beyond the host (left on, as Docker and podman do)
        return link["index"]

    def _check_subnet(self) -> list[IPv4Interface]:
        """The bridge's IPv4 addresses; SetupFailed if another interface has one in the subnet
        (before the bridge is made: a subnet in use leaves nothing behind)."""
        subnet, mine = self.config.network, []
        for message in self.ipr.get_addr(family=socket.AF_INET):
            found = IPv4Interface(f"{message.get_attr('IFA_ADDRESS')}/{message['prefixlen']}")
            label = message.get_attr("IFA_LABEL")
            if label == self.config.bridge:
                mine.append(found)
            elif found.network.overlaps(subnet):
                raise SetupFailed("network", f"subnet {subnet} overlaps {found} on {label}: choose another subnet")
        return mine

    def sweep(self, pool: Leases) -> None:
        """Remove what fork servers that died left on this bridge: the veths and rules of
        addresses whose lease nobody holds, then those leases."""
        orphans = pool.orphans()
        live = pool.held() - {lease.address for lease in orphans}
        subnet = self.config.network
        with netlink("sweep the bridge's veths"):
            for link in self.ipr.get_links():
                address = netconf.address_of_veth(link.get_attr("IFLA_IFNAME"))
                if address is not None and address in subnet and address not in live:
                    self.ipr.link("del", index=link["index"])
        stale = [(rule.chain, rule.handle) for rule in self.nft.list_rules() or []
                 if (address := nft.job_address(rule.comment, self.config.bridge)) is not None and address not in live]
        if stale:
            self.nft.run(nft.delete_rules(stale))
        for lease in orphans:
            Leases.release(lease)

    def remove(self) -> None:
        """The bridge, its rules (and our table once no bridge has rules in it) and its lock
        directory: called by its last user, under the host-wide set-up lock."""
        bridge = self.config.bridge
        rules = self.nft.list_rules()
        ours = [rule for rule in rules or [] if rule.comment == nft.bridge_comment(bridge)
                or nft.job_address(rule.comment, bridge) is not None]
        if rules is not None and len(ours) == len(rules):
            self.nft.run(nft.delete_table())
        elif ours:
            self.nft.run(nft.delete_rules([(rule.chain, rule.handle) for rule in ours]))
        with netlink(f"delete bridge {bridge}"):
            found = self.ipr.link_lookup(ifname=bridge)
            if found and self.ipr.link("get", index=found[0])[0].get_attr("IFLA_IFALIAS") == ALIAS:
                self.ipr.link("del", index=found[0])
        leases.forget_bridge(bridge)


def _sysctl(name: str, value: str) -> None:
    with open(f"/proc/sys/{name}", "w") as f:
        f.write(value)


def _local_mac() -> str:
    """A random locally administered unicast MAC address."""
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{octet:02x}" for octet in octets)
