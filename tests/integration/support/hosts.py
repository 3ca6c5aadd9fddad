"""Separate hosts on one machine: each a network namespace with its own address on a bridge
(made with pyroute2), so nodes and etcd members reach each other only over that network,
as on different machines. The bridge has an address too, so the test itself (in the host's
namespace) reaches them; `Host.run`/`popen` start processes inside a host; `Host.crash`
kills every process in it, as a host that loses power."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from pyroute2 import IPRoute, NetNS, netns


class Host:
    def __init__(self, lan: Lan, name: str, address: str):
        self.lan, self.name, self.address = lan, name, address
        self.netns = f"{lan.bridge}-{name}"

    def command(self, argv: list[str]) -> list[str]:
        """argv run in the host's network namespace, and only there: `ip netns exec` would also
        give it a mount namespace with a /sys of its own, without the cgroup mounts a node needs."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--", *argv]

    def popen(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(log, "ab") as out:
            return subprocess.Popen(self.command(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env)

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv), capture_output=True, text=True, timeout=60, **kwargs)

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def crash(self, timeout: float = 10) -> None:
        """SIGKILL every process in the host's network namespace until none is left. A job's
        processes are in network namespaces of their own, as they would be on a real host
        that lost power: its node is gone, and they are not (the node's next start, or the
        test's cleanup, ends them)."""
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        assert not self.pids(), f"processes left in {self.netns}: {self.pids()}"


class Lan:
    """A bridge with `prefix`.1/24 and a host per name at `prefix`.2, .3, ..."""

    def __init__(self, names: list[str], tag: str | None = None):
        tag = tag or str(os.getpid() % 10000)
        self.bridge = f"lcmh{tag}"  # at most 15 characters with the host's suffix on its netns name
        self.prefix = f"10.233.{int(tag) % 250}"
        self.gateway = f"{self.prefix}.1"
        self.hosts = {name: Host(self, name, f"{self.prefix}.{i + 2}") for i, name in enumerate(names)}

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def up(self) -> Lan:
        self.down()  # what a crashed earlier run of the same tag left
        with IPRoute() as ip:
            ip.link("add", ifname=self.bridge, kind="bridge")
            bridge = ip.link_lookup(ifname=self.bridge)[0]
            ip.addr("add", index=bridge, address=self.gateway, prefixlen=24)
            ip.link("set", index=bridge, state="up")
            for i, host in enumerate(self.hosts.values()):
                self._plug(ip, bridge, host, i)
        return self

    def _plug(self, ip: IPRoute, bridge: int, host: Host, i: int) -> None:
        netns.create(host.netns)
        outside, inside = f"{self.bridge}o{i}", f"{self.bridge}i{i}"
        ip.link("add", ifname=outside, kind="veth", peer=inside)
        ip.link("set", index=ip.link_lookup(ifname=inside)[0], net_ns_fd=host.netns)
        ip.link("set", index=ip.link_lookup(ifname=outside)[0], master=bridge, state="up")
        with NetNS(host.netns) as ns:
            index = ns.link_lookup(ifname=inside)[0]
            ns.link("set", index=index, ifname="eth0")
            ns.addr("add", index=index, address=host.address, prefixlen=24)
            ns.link("set", index=index, state="up")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            ns.route("add", dst="default", gateway=self.gateway)

    def down(self) -> None:
        for host in self.hosts.values():
            if host.netns in netns.listnetns():
                host.crash()
                netns.remove(host.netns)
        with IPRoute() as ip:
            found = ip.link_lookup(ifname=self.bridge)
            if found:
                ip.link("del", index=found[0])  # its veth ends went with their namespaces
