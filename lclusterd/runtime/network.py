"""BridgeNetwork: the fork server's side of jobs with net="bridge" (docs/container.md, "Networks").

At start (open), under the host-wide set-up lock: the bridge with the subnet's first address
and a fixed MAC, route_localnet on it, IPv4 forwarding on, our nftables table with the
bridge's rules, and a sweep of what a crashed fork server left on this bridge. Per job:

    reserve   before the job has a cgroup: an address lease, the published host ports held
              (bound, so nothing else can take them; a port in use refuses the job), and
              their DNAT rules
    connect   when the job's init asks (its plan's network step: its network namespace and
              writable layer exist, the overlay is not mounted yet): the veth pair, the job's
              end made as eth0 right inside its namespace, its address, default route, and
              /etc/hosts and /etc/resolv.conf in its writable layer
    release   after the job's link went with its network namespace (LinkWatch): its rules,
              ports and lease

Links and addresses through pyroute2, as host root; the job's namespace is reached through
its spare's pid (/proc/PID/ns/net), entered with setns only to open a netlink socket there.
"""

from __future__ import annotations

import errno
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from typing import Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from lclusterd import limits
from lclusterd.errors import SetupFailed
from lclusterd.runtime import kernel, leases, netconf, nft
from lclusterd.runtime.leases import HostLock, Lease, Leases
from lclusterd.runtime.linkwatch import LinkWatch
from lclusterd.runtime.netconf import NetworkConfig
from lclusterd.runtime.spec import RuntimeSpec
from lclusterd.runtime.userns import IdMap

HOST_RESOLV = "/etc/resolv.conf"
ALIAS = "lclusterd job network"  # marks a bridge as ours (ip link shows it)


@dataclass
class JobNet:
    """One job's share of the network, from reserve() to release()."""

    job_id: str
    lease: Lease
    ports: list[socket.socket] = field(default_factory=list)  # the host ports it publishes, held
    published: list[tuple[int, str]] = field(default_factory=list)  # (host port, protocol)
    rules: list[tuple[str, int]] = field(default_factory=list)  # nftables (chain, handle)
    ifindex: int | None = None  # the host end of its veth while that exists

    @property
    def address(self) -> IPv4Address:
        return self.lease.address

    @property
    def gone(self) -> bool:
        """No link of the job's is left on the host."""
        return self.ifindex is None


@contextmanager
def _netlink(call: str) -> Iterator[None]:
    """pyroute2's NetlinkError as the OSError every other kernel call here raises."""
    try:
        yield
    except NetlinkError as error:
        raise OSError(error.code, f"{call}: {os.strerror(error.code)}") from None


class BridgeNetwork:
    def __init__(self, config: NetworkConfig, nft_path: str, ipr: IPRoute, users_fd: int):
        self.config = config
        self.nft = nft_path
        self.ipr = ipr
        self.users_fd = users_fd
        self.leases = Leases(config.bridge, config.job_addresses())
        self.watch = LinkWatch()
        self.own_netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.bridge_index = 0
        self.by_index: dict[int, JobNet] = {}
        self.by_port: dict[tuple[int, str], str] = {}  # published (port, protocol) -> job id

    @classmethod
    def open(cls, config: NetworkConfig) -> BridgeNetwork:
        """Set the bridge up (or join it) and sweep it. Raises SetupFailed or OSError."""
        config.validate()
        nft_path = nft.find_nft()
        if nft_path is None:
            raise SetupFailed("network", "nft not found: bridge networks need nftables (make prep installs it)")
        with HostLock():
            network = cls(config, nft_path, IPRoute(), leases.use_bridge(config.bridge))
            try:
                network.bridge_index = network._ensure_bridge()
                network._ensure_rules()
                network._sweep()
            except BaseException as error:
                try:
                    network._leave()  # under the lock already held
                except OSError as cleanup_error:
                    error.add_note(f"cleanup also failed: {cleanup_error}")
                raise
        return network

    # -- per job ----------------------------------------------------------------------------

    def reserve(self, spec: RuntimeSpec) -> JobNet | None:
        """An address and the spec's published ports for the job (None for net="none").
        SetupFailed when a port is taken or every address is; nothing is held then."""
        if spec.net == "none":
            return None
        try:
            net = JobNet(spec.job_id, self.leases.acquire(spec.job_id))
        except OSError as error:
            raise SetupFailed("network", error.strerror or str(error)) from None
        comment, rules = nft.job_comment(self.config.bridge, net.address, spec.job_id), []
        try:
            for entry in spec.publish:
                host_port, port, protocol = limits.parse_publish(entry)
                net.ports.append(self._hold_port(host_port, protocol))
                net.published.append((host_port, protocol))
                rules += nft.publish_rules(comment, host_port, net.address, port, protocol)
            if rules:  # one nft exec for all of the job's ports
                net.rules = nft.handles_of(nft.run(self.nft, rules, echo=True))
        except BaseException:
            self.release(net)
            raise
        for key in net.published:
            self.by_port[key] = spec.job_id
        return net

    def _hold_port(self, host_port: int, protocol: str) -> socket.socket:
        """Bind the host port on every IPv4 address (not listening): while the job publishes it,
        no other process can take it and then wait for connections the DNAT rule sends away."""
        owner = self.by_port.get((host_port, protocol))
        if owner is not None:
            raise SetupFailed("publish", f"host port {host_port}/{protocol} is already published by job {owner}")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM)
        try:
            sock.bind(("0.0.0.0", host_port))
        except OSError as error:
            sock.close()
            if error.errno == errno.EADDRINUSE:
                raise SetupFailed("publish", f"host port {host_port}/{protocol} is in use on this host "
                                             "(a process listens on it, or another runtime's job publishes it)") from None
            raise
        return sock

    def connect(self, net: JobNet, pid: int, ids: IdMap | None, hostname: str, upper: str) -> None:
        """Give the spare `pid` the job's eth0, address and route, and its /etc/hosts and
        /etc/resolv.conf in the writable layer at `upper`. Raises OSError."""
        name = netconf.veth_name(net.address)
        netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            # The job's end is made inside its namespace: no move, no rename.
            with _netlink(f"add veth {name} to {self.config.bridge}"):
                self.ipr.link("add", ifname=name, kind="veth", master=self.bridge_index, state="up",
                              peer={"ifname": "eth0", "net_ns_fd": netns})
            with _netlink(f"look up {name}"):
                found = self.ipr.link_lookup(ifname=name)
            if not found:
                raise OSError(errno.ENODEV, f"veth {name} went away (its spare died)")
            net.ifindex = found[0]
            self.by_index[net.ifindex] = net
            self._configure(netns, net.address)
        finally:
            os.close(netns)
        write_etc(f"/proc/{pid}/root{upper}", ids, netconf.hosts_file(net.address, hostname), _host_resolv())

    def _configure(self, netns: int, address: IPv4Address) -> None:
        """eth0 up with the job's address and a default route via the bridge, in the job's
        namespace: a netlink socket opened there (a socket keeps the namespace it was made in)."""
        kernel.setns(netns, kernel.CLONE_NEWNET)
        try:
            inner = IPRoute()
        finally:
            kernel.setns(self.own_netns, kernel.CLONE_NEWNET)
        with inner, _netlink("configure eth0 in the job's network namespace"):
            found = inner.link_lookup(ifname="eth0")
            if not found:
                raise OSError(errno.ENODEV, "the job's eth0 went away (its init died)")
            index = found[0]
            inner.addr("add", index=index, address=str(address), prefixlen=self.config.network.prefixlen)
            inner.link("set", index=index, state="up")
            inner.route("add", gateway=str(self.config.gateway))

    def gone_links(self) -> list[JobNet]:
        """The jobs whose link the kernel removed since the last call (their namespace ended)."""
        indexes, lost = self.watch.gone()
        if lost:  # some notices were dropped: look at every link we wait for
            indexes = [index for index in self.by_index if not self._exists(index)]
        gone = []
        for index in indexes:
            net = self.by_index.pop(index, None)
            if net is not None:
                net.ifindex = None
                gone.append(net)
        return gone

    def _exists(self, index: int) -> bool:
        try:
            self.ipr.link("get", index=index)
            return True
        except NetlinkError:
            return False

    def remove_link(self, net: JobNet) -> None:
        """Delete the job's veth now (its namespace lives on: something else holds it, or the
        job never started). Slow (15-30 ms: see linkwatch.py); the rare path."""
        if net.ifindex is None:
            return
        self.by_index.pop(net.ifindex, None)
        try:
            self.ipr.link("del", index=net.ifindex)
        except NetlinkError as error:
            if error.code != errno.ENODEV:
                raise OSError(error.code, f"delete veth of job {net.job_id}: {os.strerror(error.code)}") from None
        net.ifindex = None

    def release(self, net: JobNet | None) -> None:
        """Remove the job's link if the kernel has not, its rules, let its host ports go and
        free its address. A rule that cannot be removed keeps its lease file, for the next sweep."""
        if net is None:
            return
        for sock in net.ports:
            sock.close()
        for key in net.published:
            if self.by_port.get(key) == net.job_id:
                del self.by_port[key]
        try:
            self.remove_link(net)
            if net.rules:
                nft.run(self.nft, nft.delete_rules(net.rules))
        except OSError:
            os.close(net.lease.fd)  # an orphan now, its address unused: the next start's sweep removes the rest
            raise
        Leases.release(net.lease)

    # -- the bridge ---------------------------------------------------------------------------

    def _ensure_bridge(self) -> int:
        """The bridge's index, made if missing; SetupFailed if it is not ours to use."""
        bridge, gateway = self.config.bridge, IPv4Interface(f"{self.config.gateway}/{self.config.network.prefixlen}")
        with _netlink(f"set up bridge {bridge}"):
            mine = self._check_subnet()
            if not self.ipr.link_lookup(ifname=bridge):
                # A fixed MAC: a bridge without one takes its lowest port's, and changes it as
                # jobs come and go, under the ARP caches of every other job.
                self.ipr.link("add", ifname=bridge, kind="bridge", address=_local_mac())
                self.ipr.link("set", ifname=bridge, ifalias=ALIAS)
            link = self.ipr.link("get", ifname=bridge)[0]
            if link.get_attr("IFLA_IFALIAS") != ALIAS:  # never take over, or later remove, another's
                raise SetupFailed("network", f"a network interface {bridge} exists and is not lclusterd's: choose another bridge")
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

    def _ensure_rules(self) -> None:
        comment = nft.bridge_comment(self.config.bridge)
        present = any(rule.comment == comment for rule in nft.list_rules(self.nft) or [])
        nft.run(self.nft, nft.table() + ([] if present else nft.bridge_rules(self.config.bridge, self.config.network)))

    def _sweep(self) -> None:
        """Remove what fork servers that died left on this bridge: the links and rules of
        addresses whose lease nobody holds, then those leases."""
        orphans = self.leases.orphans()
        live = self.leases.held() - {lease.address for lease in orphans}
        subnet = self.config.network
        with _netlink("sweep the bridge's links"):
            for link in self.ipr.get_links():
                address = netconf.address_of_veth(link.get_attr("IFLA_IFNAME"))
                if address is not None and address in subnet and address not in live:
                    self.ipr.link("del", index=link["index"])
        stale = [(rule.chain, rule.handle) for rule in nft.list_rules(self.nft) or []
                 if (address := nft.job_address(rule.comment, self.config.bridge)) is not None and address not in live]
        if stale:
            nft.run(self.nft, nft.delete_rules(stale))
        for lease in orphans:
            Leases.release(lease)

    def close(self) -> None:
        """Stop using the bridge; the last user on the host removes it and its rules (and the
        table once no bridge has rules in it). Call once no job is left."""
        with HostLock():
            self._leave()

    def _leave(self) -> None:
        try:
            if leases.last_user(self.users_fd):
                self._remove_bridge()
        finally:
            os.close(self.users_fd)
            self.watch.close()
            self.ipr.close()
            os.close(self.own_netns)

    def _remove_bridge(self) -> None:
        bridge = self.config.bridge
        rules = nft.list_rules(self.nft)
        ours = [rule for rule in rules or [] if rule.comment == nft.bridge_comment(bridge)
                or nft.job_address(rule.comment, bridge) is not None]
        if rules is not None and len(ours) == len(rules):  # no other bridge's: the table goes too
            nft.run(self.nft, nft.delete_table())
        elif ours:
            nft.run(self.nft, nft.delete_rules([(rule.chain, rule.handle) for rule in ours]))
        with _netlink(f"delete bridge {bridge}"):
            found = self.ipr.link_lookup(ifname=bridge)
            if found and self.ipr.link("get", index=found[0])[0].get_attr("IFLA_IFALIAS") == ALIAS:
                self.ipr.link("del", index=found[0])
        leases.forget_bridge(bridge)


def write_etc(root: str, ids: IdMap | None, hosts: str, resolv: str) -> None:
    """/etc/hosts and /etc/resolv.conf into the job's writable layer (`root`: its upper
    directory, as the fork server reaches it), owned by the job's root as a copy-up would be."""
    etc = os.path.join(root, "etc")
    try:
        os.mkdir(etc, 0o755)
    except FileExistsError:
        pass
    os.chmod(etc, 0o755, follow_symlinks=False)
    owner = (ids.uid, ids.gid) if ids is not None else (0, 0)
    os.chown(etc, *owner, follow_symlinks=False)
    for name, text in (("hosts", hosts), ("resolv.conf", resolv)):
        fd = os.open(os.path.join(etc, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode())
            os.fchmod(fd, 0o644)
            os.fchown(fd, *owner)
        finally:
            os.close(fd)


def _host_resolv() -> str:
    """The host's resolver configuration, read for each job: it may change (DHCP, VPN)."""
    try:
        with open(HOST_RESOLV) as f:
            return netconf.resolv_conf(f.read())
    except FileNotFoundError:
        return ""


def _sysctl(name: str, value: str) -> None:
    with open(f"/proc/sys/{name}", "w") as f:
        f.write(value)


def _local_mac() -> str:
    """A random locally administered unicast MAC address."""
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{octet:02x}" for octet in octets)
