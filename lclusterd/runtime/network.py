"""BridgeNetwork: the fork server's side of jobs with net="bridge" (docs/container.md, "Networks").

At start (open), under the host-wide set-up lock (leases.py): the bridge made or joined, and
swept of what a fork server that died left on it (bridge.py). Per job:

    reserve   before the job has a cgroup: an address lease, the published host ports held
              (bound, so nothing else can take them; a port in use refuses the job), and
              their DNAT rules
    connect   when the job's init asks (its plan's network step: its network namespace and
              writable layer exist, the overlay is not mounted yet): the veth pair, the job's
              end made as eth0 right inside its namespace, its address, default route, and
              /etc/hosts and /etc/resolv.conf in its writable layer
    release   when the job has ended: its rules and ports at once; its address once the
              kernel has removed its veth with its network namespace (LinkWatch tells), or
              LINK_GRACE later, when the fork server deletes it itself (something else holds
              the namespace)

Links and addresses through pyroute2, as host root: its IPRoute for the bridge, its messages
over a socket of our own for each job (rtnl.py says why). The job's namespace is reached
through its spare's pid (/proc/PID/ns/net), entered with setns only to open a netlink socket
there.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from lclusterd import limits
from lclusterd.errors import SetupFailed
from lclusterd.runtime import kernel, leases, netconf, nft
from lclusterd.runtime.bridge import Bridge
from lclusterd.runtime.leases import HostLock, Lease, Leases
from lclusterd.runtime.linkwatch import LinkWatch
from lclusterd.runtime.netconf import NetworkConfig
from lclusterd.runtime.nft import Nft
from lclusterd.runtime.rtnl import Rtnl
from lclusterd.runtime.spec import RuntimeSpec
from lclusterd.runtime.userns import IdMap

log = logging.getLogger("lclusterd.forkserver")

HOST_RESOLV = "/etc/resolv.conf"
# How long a finished job's veth may outlive it: the kernel removes it with the job's network
# namespace within milliseconds, unless something else holds that namespace (a process that
# entered it); then the fork server deletes the veth itself.
LINK_GRACE = 2.0


@dataclass
class JobNet:
    """One job's share of the network, from reserve() to release()."""

    job_id: str
    lease: Lease
    ports: list[socket.socket] = field(default_factory=list)  # the host ports it publishes, held
    published: list[tuple[int, str]] = field(default_factory=list)  # (host port, protocol)
    rules: list[tuple[str, int]] = field(default_factory=list)  # nftables (chain, handle)
    veth: str | None = None  # the host end of its veth pair while that exists
    deadline: float | None = None  # once the job ended: when to delete the veth ourselves

    @property
    def address(self) -> IPv4Address:
        return self.lease.address


class BridgeNetwork:
    def __init__(self, config: NetworkConfig, rules: Nft, users_fd: int):
        self.config = config
        self.nft = rules
        self.bridge = Bridge(config, rules)
        self.rtnl = Rtnl()  # the per-job requests (rtnl.py)
        self.users_fd = users_fd
        self.leases = Leases(config.bridge, config.job_addresses())
        self.watch = LinkWatch()
        self.own_netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.bridge_index = 0
        self.links: dict[str, JobNet] = {}  # host ends of veth pairs, until the kernel removed them
        self.by_port: dict[tuple[int, str], str] = {}  # published (port, protocol) -> job id

    @classmethod
    def open(cls, config: NetworkConfig) -> BridgeNetwork:
        """Set the bridge up (or join it) and sweep it. Raises SetupFailed or OSError."""
        config.validate()
        try:
            rules = Nft()
        except OSError as error:
            raise SetupFailed("network", str(error)) from None
        with HostLock():
            network = cls(config, rules, leases.use_bridge(config.bridge))
            try:
                network.bridge_index = network.bridge.set_up()
                network.bridge.sweep(network.leases)
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
            if rules:  # one transaction for all of the job's ports
                net.rules = nft.handles_of(self.nft.run(rules, echo=True))
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
        netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            with self._enter(netns) as inner:
                name = netconf.veth_name(net.address)
                self.rtnl.add_veth(name, self.bridge_index, "eth0", netns)
                net.veth = name
                self.links[name] = net
                index = inner.link_index("eth0")
                inner.add_address(index, net.address, self.config.network.prefixlen)
                inner.set_up(index)
                inner.add_default_route(self.config.gateway)
        finally:
            os.close(netns)
        write_etc(f"/proc/{pid}/root{upper}", ids, netconf.hosts_file(net.address, hostname), _host_resolv())

    def _enter(self, netns: int) -> Rtnl:
        """A netlink socket in the job's namespace (a socket keeps the namespace it was made in),
        made there with setns and back; and, while there, IPv6 off for the links made in it
        from now on (its eth0): the job's network is IPv4, and an IPv6 link coming up costs
        the kernel addresses, DAD and MLD, and the bridge their packets."""
        kernel.setns(netns, kernel.CLONE_NEWNET)
        try:
            try:
                with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as sysctl:
                    sysctl.write("1")
            except FileNotFoundError:
                pass  # a kernel without IPv6
            return Rtnl(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0))
        finally:
            kernel.setns(self.own_netns, kernel.CLONE_NEWNET)

    def release(self, net: JobNet | None) -> None:
        """The job ended: remove its rules, let its host ports go, and free its address once
        its veth is gone (at once, or when on_links or expire sees it go). A rule that cannot
        be removed leaves the lease to the next start's sweep."""
        if net is None:
            return
        for sock in net.ports:
            sock.close()
        for key in net.published:
            if self.by_port.get(key) == net.job_id:
                del self.by_port[key]
        try:
            if net.rules:
                self.nft.run(nft.delete_rules(net.rules))
        except OSError:
            self.links.pop(net.veth or "", None)
            os.close(net.lease.fd)  # an orphan now, its address unused until a sweep removed the rest
            raise
        if net.veth is None:
            Leases.release(net.lease)
        else:
            net.deadline = time.monotonic() + LINK_GRACE

    def on_links(self) -> None:
        """Read which veths the kernel removed; free the addresses of ended jobs among them."""
        names, lost = self.watch.gone()
        if lost:  # some notices were dropped: look at every veth we know
            names = [name for name in self.links if not self._exists(name)]
        for name in names:
            net = self.links.pop(name, None)
            if net is not None:
                self._gone(net)

    @property
    def deadline(self) -> float | None:
        """The nearest time a finished job's veth is to be deleted by us (the fork server's timer)."""
        return min((net.deadline for net in self.links.values() if net.deadline is not None), default=None)

    def expire(self, now: float) -> None:
        """Delete the veths of ended jobs that the kernel has not removed by their deadline.
        Slow (15-30 ms each: see linkwatch.py); the rare path. A failure is logged: the veth and
        the address are the next start's sweep's."""
        for net in [net for net in self.links.values() if net.deadline is not None and net.deadline <= now]:
            try:
                self._delete(net)
            except OSError as error:
                log.warning("job %s: deleting its veth failed: %s", net.job_id, error)

    def _delete(self, net: JobNet) -> None:
        assert net.veth is not None
        del self.links[net.veth]
        try:
            self.rtnl.delete_link(net.veth)
        except OSError as error:
            if error.errno != errno.ENODEV:
                os.close(net.lease.fd)  # an orphan: the next start's sweep deletes it
                raise
        self._gone(net)

    def _gone(self, net: JobNet) -> None:
        net.veth = None
        if net.deadline is not None:  # ended: its address is free now
            Leases.release(net.lease)

    def _exists(self, name: str) -> bool:
        try:
            self.rtnl.link_index(name)
            return True
        except OSError:
            return False

    def close(self) -> None:
        """Stop using the bridge; the last user on the host removes it and its rules (and the
        table once no bridge has rules in it). Call once no job is left: the veths of ended
        jobs that the kernel has not removed yet are deleted now."""
        now = time.monotonic()
        for net in self.links.values():
            net.deadline = now
        self.expire(now)
        with HostLock():
            self._leave()

    def _leave(self) -> None:
        try:
            if leases.last_user(self.users_fd):
                self.bridge.remove()
        finally:
            os.close(self.users_fd)
            self.watch.close()
            self.rtnl.close()
            self.bridge.close()
            self.nft.close()
            os.close(self.own_netns)


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
