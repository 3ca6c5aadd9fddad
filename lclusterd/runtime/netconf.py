"""A node's job network as data: the bridge, its subnet, the addresses jobs take, the names of
their links, and the /etc/hosts and /etc/resolv.conf they see. Pure, but for open_network.

A job with net="bridge" gets a veth pair: one end, named after the job's address
(`veth_name`), is a port of the node's bridge; the other is the job's eth0, with an address
of the subnet and a default route via the bridge's own address, the subnet's first one
(`gateway`). network.py does it; this module only decides names and numbers, so the fork
server, its start-up sweep and the tests agree on them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Any

from lclusterd.errors import SetupFailed

if TYPE_CHECKING:
    from lclusterd.runtime.network import BridgeNetwork

DEFAULT_BRIDGE = "lcl0"
DEFAULT_SUBNET = "10.88.0.0/16"  # podman's default too: a private range rarely routed elsewhere
VETH_PREFIX = "lv"  # + the job's address in hex: unique while its address lease is held
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")  # the kernel's IFNAMSIZ less the NUL
LOOPBACK = IPv4Network("127.0.0.0/8")


@dataclass(frozen=True)
class NetworkConfig:
    """The node's bridge and the subnet its jobs' addresses come from (the bridge takes the first)."""

    bridge: str = DEFAULT_BRIDGE
    subnet: str = DEFAULT_SUBNET

    def validate(self) -> None:
        """ValueError with a sentence for a bridge name or subnet the runtime cannot use."""
        if not _IFNAME.match(self.bridge) or self.bridge in ("lo", "all", "default"):
            raise ValueError(f"invalid bridge name {self.bridge!r} (up to 15 letters, digits, '_', '.', '-')")
        try:
            network = IPv4Network(self.subnet)
        except ValueError:
            raise ValueError(f"invalid subnet {self.subnet!r}: expected an IPv4 network like {DEFAULT_SUBNET}") from None
        if not 8 <= network.prefixlen <= 29:
            raise ValueError(f"subnet {self.subnet} must be a /8 to a /29 (room for the bridge and jobs)")
        if not network.is_private or network.overlaps(LOOPBACK):
            raise ValueError(f"subnet {self.subnet} must be a private range (10/8, 172.16/12, 192.168/16)")

    @property
    def network(self) -> IPv4Network:
        return IPv4Network(self.subnet)

    @property
    def gateway(self) -> IPv4Address:
        """The bridge's address: jobs' default route."""
        return self.network.network_address + 1

    def job_addresses(self) -> range:
        """The addresses jobs may take, as integers: all hosts of the subnet but the gateway."""
        network = self.network
        return range(int(network.network_address) + 2, int(network.broadcast_address))

    def to_args(self) -> list[str]:
        return ["--bridge", self.bridge, "--subnet", self.subnet]


class NoNetwork:
    """The job network of a fork server started without a bridge: jobs with net="bridge" are
    refused, and the others cost nothing (network.BridgeNetwork is the other kind)."""

    watch = deadline = None

    @staticmethod
    def reserve(spec: Any) -> None:
        if spec.net != "none":
            raise SetupFailed("network", "this runtime has no job network (start it with a bridge and subnet)")

    @staticmethod
    def release(net: None) -> None:
        pass

    @staticmethod
    def expire(now: float) -> None:
        pass

    def close(self) -> None:
        pass


def open_network(config: NetworkConfig | None) -> BridgeNetwork | NoNetwork:
    """The fork server's job network: the bridge of `config`, or none."""
    if config is None:
        return NoNetwork()
    # Here, not at the top: pyroute2 costs a fork server 0.1 s and some MiB to import, which a
    # node without a job network never pays.
    from lclusterd.runtime.network import BridgeNetwork  # noqa: PLC0415
    return BridgeNetwork.open(config)


def veth_name(address: IPv4Address) -> str:
    """The host end of the job's veth pair: `lv` and the address in hex (lv0a580005 is
    10.88.0.5). Derived from the address alone, so a sweep finds the link of a lease a crashed
    fork server left; unique on the host, since two bridges never share a subnet."""
    return f"{VETH_PREFIX}{int(address):08x}"


def address_of_veth(name: str) -> IPv4Address | None:
    """The job address a veth_name() stands for, or None for another name."""
    if len(name) != len(VETH_PREFIX) + 8 or not name.startswith(VETH_PREFIX):
        return None
    try:
        return IPv4Address(int(name[len(VETH_PREFIX):], 16))
    except ValueError:
        return None


def hosts_file(address: IPv4Address, hostname: str) -> str:
    """The job's /etc/hosts: loopback names and its own name on its address."""
    return (f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{address}\t{hostname}\n")


def resolv_conf(host_resolv: str) -> str:
    """The job's /etc/resolv.conf from the host's: its nameservers, search domains and options,
    without nameservers on loopback (a job's loopback is its own: a resolver there, such as
    systemd-resolved's 127.0.0.53, is not reachable). No usable nameserver: none at all."""
    kept = []
    for line in host_resolv.splitlines():
        words = line.split()
        if not words or words[0] not in ("nameserver", "search", "domain", "options"):
            continue
        if words[0] == "nameserver" and (len(words) < 2 or _on_loopback(words[1])):
            continue
        kept.append(" ".join(words))
    return "".join(line + "\n" for line in kept)


def _on_loopback(text: str) -> bool:
    try:
        return ipaddress.ip_address(text.split("%")[0]).is_loopback
    except ValueError:
        return True  # not an address a job could use either
