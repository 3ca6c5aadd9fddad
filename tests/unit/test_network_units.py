"""The job network's decisions as data (no root, no kernel): published ports and network modes
(limits.py), the spec fields, the bridge's names and numbers and the job's /etc files
(netconf.py), the nftables rules (nft.py), the link watcher's parser (linkwatch.py), address
leases in a directory of their own (leases.py), and where the plan asks for the network."""

from __future__ import annotations

import os
import struct
from ipaddress import IPv4Address, IPv4Network

import pytest

from lclusterd import limits
from lclusterd.errors import InvalidSpec
from lclusterd.runtime import caps, leases, linkwatch, netconf, nft, plan, protocol
from lclusterd.runtime.leases import Leases
from lclusterd.runtime.mounts import Scratch
from lclusterd.runtime.netconf import NetworkConfig
from lclusterd.runtime.result import RunFacts, result_of
from lclusterd.runtime.spec import RuntimeSpec
from lclusterd.runtime.userns import IdMap

# -- published ports and network modes ------------------------------------------------------------


@pytest.mark.parametrize("entry, parsed", [
    ("18080:8080", (18080, 8080, "tcp")), ("53:53/udp", (53, 53, "udp")), ("1:65535/tcp", (1, 65535, "tcp")),
])
def test_publish_entries_parse(entry, parsed):
    assert limits.parse_publish(entry) == parsed


@pytest.mark.parametrize("entry, message", [
    ("8080", "publish takes HOSTPORT:PORT or HOSTPORT:PORT/udp, not '8080'"),
    ("80:80/sctp", "publish takes HOSTPORT:PORT or HOSTPORT:PORT/udp, not '80:80/sctp'"),
    ("0:80", "ports are between 1 and 65535, not 0 (in '0:80')"),
    ("80:70000", "ports are between 1 and 65535, not 70000 (in '80:70000')"),
    ("127.0.0.1:80:80", "publish takes HOSTPORT:PORT or HOSTPORT:PORT/udp, not '127.0.0.1:80:80'"),
])
def test_malformed_publish_entries_are_refused_with_a_sentence(entry, message):
    with pytest.raises(InvalidSpec) as refused:
        limits.parse_publish(entry)
    assert str(refused.value) == message


@pytest.mark.parametrize("net, publish, message", [
    ("host", [], "net must be none or bridge, not 'host'"),
    ("none", ["80:80"], "publishing a port needs net=bridge (a job without a network has only loopback)"),
    ("bridge", ["80:80", "80:8080"], "host port 80/tcp is published twice"),
    ("bridge", [f"{p}:80" for p in range(1, 66)], "at most 64 published ports per job, not 65"),
])
def test_network_checks_refuse_what_could_never_run(net, publish, message):
    with pytest.raises(InvalidSpec) as refused:
        limits.check_network(net, publish)
    assert str(refused.value) == message


def test_the_same_port_may_be_published_for_tcp_and_udp():
    limits.check_network("bridge", ["53:53", "53:53/udp"])


def test_spec_carries_its_network_through_the_protocol():
    spec = RuntimeSpec("j1", ["true"], "/rootfs", net="bridge", publish=["18080:8080", "53:53/udp"])
    decoded = protocol.decode_request(protocol.encode(protocol.Start(spec)))
    assert decoded == protocol.Start(spec)
    assert RuntimeSpec("j2", ["true"], "/rootfs").net == "none"  # the default: loopback only
    started = protocol.JobStarted("j1", 42, 1.5, "10.88.0.5")
    assert protocol.decode_event(protocol.encode(started)) == started


@pytest.mark.parametrize("field, value, message", [
    ("net", 1, "spec field net has the wrong type (int)"),
    ("publish", "80:80", "spec field publish has the wrong type (str)"),
    ("publish", [80], "spec field publish must hold strings only"),
])
def test_spec_network_fields_are_typed(field, value, message):
    data = RuntimeSpec("j1", ["true"], "/rootfs").to_json()
    data[field] = value
    with pytest.raises(InvalidSpec) as refused:
        RuntimeSpec.from_json(data)
    assert str(refused.value) == message


def test_spec_validation_checks_the_network():
    with pytest.raises(InvalidSpec, match="publishing a port needs net=bridge"):
        RuntimeSpec("j1", ["true"], "/rootfs", publish=["80:80"]).validate()


# -- the bridge's names and numbers, the job's files --------------------------------------------------


def test_a_subnet_gives_the_bridge_its_first_address_and_jobs_the_rest():
    config = NetworkConfig("lcl0", "10.88.0.0/16")
    config.validate()
    assert config.gateway == IPv4Address("10.88.0.1")
    addresses = config.job_addresses()
    assert (IPv4Address(addresses[0]), IPv4Address(addresses[-1]), len(addresses)) == (
        IPv4Address("10.88.0.2"), IPv4Address("10.88.255.254"), 65533)
    assert config.to_args() == ["--bridge", "lcl0", "--subnet", "10.88.0.0/16"]


@pytest.mark.parametrize("bridge, subnet, message", [
    ("a-bridge-name-too-long", "10.88.0.0/16", "invalid bridge name"),
    ("lo", "10.88.0.0/16", "invalid bridge name 'lo'"),
    ("lcl0", "10.88.0.1/16", "invalid subnet '10.88.0.1/16'"),
    ("lcl0", "10.88.0.0/30", "must be a /8 to a /29"),
    ("lcl0", "8.8.8.0/24", "must be a private range"),
    ("lcl0", "fd00::/64", "expected an IPv4 network"),
])
def test_unusable_bridges_and_subnets_are_refused(bridge, subnet, message):
    with pytest.raises(ValueError, match=message):
        NetworkConfig(bridge, subnet).validate()


def test_veth_names_stand_for_their_address_and_fit_an_interface_name():
    name = netconf.veth_name(IPv4Address("10.88.0.5"))
    assert name == "lv0a580005" and len(name) <= 15
    assert netconf.address_of_veth(name) == IPv4Address("10.88.0.5")
    assert [netconf.address_of_veth(n) for n in ("eth0", "lvxyz", "lv0a58000g", "lcl0")] == [None] * 4


def test_hosts_file_names_the_job_on_its_address():
    assert netconf.hosts_file(IPv4Address("10.88.0.5"), "web") == (
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.88.0.5\tweb\n")


def test_resolv_conf_keeps_the_hosts_resolvers_a_job_can_reach():
    host = ("# written by someone\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\n"
            "nameserver fd00::53%eth0\nsearch example.org  lab\noptions edns0 trust-ad\nsortlist 10.0.0.0\nnameserver\n")
    assert netconf.resolv_conf(host) == ("nameserver 10.255.255.53\nnameserver fd00::53%eth0\n"
                                         "search example.org lab\noptions edns0 trust-ad\n")
    assert netconf.resolv_conf("nameserver 127.0.0.53\noptions edns0\n") == "options edns0\n"  # no resolver: none
    assert netconf.resolv_conf("") == ""


def test_a_runtime_without_a_network_refuses_bridge_jobs_only():
    none = netconf.NoNetwork()
    assert none.reserve(RuntimeSpec("j", ["true"], "/r")) is None
    with pytest.raises(Exception, match="this runtime has no job network"):
        none.reserve(RuntimeSpec("j", ["true"], "/r", net="bridge"))


# -- nftables ---------------------------------------------------------------------------------------------


def test_a_published_port_is_a_dnat_rule_for_arriving_and_local_traffic():
    comment = nft.job_comment("lcl0", IPv4Address("10.88.0.5"), "j1")
    rules = nft.publish_rules(comment, 18080, IPv4Address("10.88.0.5"), 8080, "udp")
    assert [r["add"]["rule"]["chain"] for r in rules] == ["prerouting", "output"]
    for rule in rules:
        body = rule["add"]["rule"]
        assert (body["table"], body["family"], body["comment"]) == ("lclusterd", "inet", "lclusterd job lcl0 10.88.0.5 j1")
        matches = [e["match"] for e in body["expr"] if "match" in e]
        assert {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"} in matches
        assert {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"} in matches
        assert {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": 18080} in matches
        assert body["expr"][-1] == {"dnat": {"family": "ip", "addr": "10.88.0.5", "port": 8080}}
    assert nft.job_address(comment, "lcl0") == IPv4Address("10.88.0.5")
    assert nft.job_address(comment, "lcl1") is None and nft.job_address(nft.bridge_comment("lcl0"), "lcl0") is None


def test_a_bridges_rules_masquerade_outbound_and_guard_the_hosts_loopback():
    rules = [r["add"]["rule"] for r in nft.bridge_rules("lcl0", IPv4Network("10.88.0.0/16"))]
    assert {r["comment"] for r in rules} == {"lclusterd bridge lcl0"}
    assert [r["chain"] for r in rules] == ["postrouting", "postrouting", "postrouting", "guard"]
    outbound = rules[0]["expr"]
    assert {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "lcl0"}} in outbound
    assert outbound[-1] == {"masquerade": None}
    guard = rules[3]["expr"]
    assert {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                      "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}} in guard
    assert guard[-1] == {"drop": None}
    chains = {c["add"]["chain"]["name"]: c["add"]["chain"] for c in nft.table() if "chain" in c["add"]}
    assert (chains["guard"]["type"], chains["guard"]["prio"]) == ("filter", -300)  # before conntrack and NAT


def test_the_handles_nft_echoes_are_what_a_delete_takes():
    echoed = [{"add": {"rule": {"chain": "prerouting", "handle": 9}}}, {"add": {"rule": {"chain": "output", "handle": 10}}},
              {"add": {"table": {"name": "lclusterd"}}}]
    assert nft.handles_of(echoed) == [("prerouting", 9), ("output", 10)]
    assert nft.delete_rules([("output", 10)]) == [
        {"delete": {"rule": {"family": "inet", "table": "lclusterd", "chain": "output", "handle": 10}}}]


# -- the link watcher ------------------------------------------------------------------------------------


def _link_message(kind: int, name: bytes) -> bytes:
    """An ifinfomsg with an MTU attribute, then IFLA_IFNAME (NUL-terminated, padded to 4)."""
    mtu = struct.pack("=HHI", 8, 4, 1500)
    ifname = struct.pack("=HH", 4 + len(name) + 1, 3) + name + b"\0"
    ifname += b"\0" * (-len(ifname) % 4)
    body = struct.pack("=BxHiII", 0, 1, 9, 0, 0) + mtu + ifname
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_the_link_watcher_reads_the_name_of_each_deleted_link():
    datagram = (_link_message(16, b"lv0a580007") + _link_message(linkwatch.RTM_DELLINK, b"lv0a580005")
                + _link_message(linkwatch.RTM_DELLINK, b"eth0"))
    assert linkwatch.deleted_links(datagram) == ["lv0a580005", "eth0"]
    assert linkwatch.deleted_links(struct.pack("=IHHII", 0, 17, 0, 0, 0)) == []  # malformed: no endless loop


# -- address leases ------------------------------------------------------------------------------------


def test_leases_hand_out_each_address_once_and_take_it_back(tmp_path):
    pool = Leases("br", range(int(IPv4Address("10.0.0.2")), int(IPv4Address("10.0.0.5"))), lock_dir=str(tmp_path))
    taken = [pool.acquire(f"job{i}") for i in range(3)]
    assert sorted(str(lease.address) for lease in taken) == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    with pytest.raises(OSError, match="all 3 addresses of the subnet are in use"):
        pool.acquire("job3")
    assert (tmp_path / "br" / str(taken[0].address)).read_text() == "job0\n"
    Leases.release(taken[0])
    assert not (tmp_path / "br" / str(taken[0].address)).exists()
    assert pool.acquire("job4").address == taken[0].address


def test_a_dead_holders_lease_is_an_orphan_that_only_the_sweep_reclaims(tmp_path):
    pool = Leases("br", range(int(IPv4Address("10.0.0.2")), int(IPv4Address("10.0.0.4"))), lock_dir=str(tmp_path))
    crashed, live = pool.acquire("crashed"), pool.acquire("live")
    os.close(crashed.fd)  # as the kernel does for a process that died: the file stays, unlocked
    with pytest.raises(OSError):  # an orphan's address is not handed out again before a sweep
        pool.acquire("another")
    assert pool.held() == {crashed.address, live.address}
    orphans = pool.orphans()
    assert [lease.address for lease in orphans] == [crashed.address]
    Leases.release(orphans[0])
    assert pool.acquire("another").address == crashed.address


def test_the_last_user_of_a_bridge_is_the_one_that_may_remove_it(tmp_path):
    first, second = leases.use_bridge("br", str(tmp_path)), leases.use_bridge("br", str(tmp_path))
    assert leases.last_user(first) is False
    os.close(first)
    assert leases.last_user(second) is True
    leases.forget_bridge("br", str(tmp_path))
    os.close(second)
    assert not (tmp_path / "br").exists()


# -- the plan and the result --------------------------------------------------------------------------


def test_a_bridge_jobs_init_asks_for_its_network_before_the_overlay_is_mounted():
    job = plan.PreparedJob(job_id="j", argv=["true"], env={}, cwd="/", hostname="h", rootfs="/rootfs",
                           cgroup_procs=["/cg/cgroup.procs"], keep_caps=caps.mask_of(caps.DEFAULT_KEEP),
                           ids=IdMap(1 << 30, 1 << 30), network=True)
    order = [name for name, _ in plan.ops(plan.job_plan(job, Scratch("/s"))) if name not in ("step", "umask")]
    assert order.index("stdio") < order.index("chown") < order.index("idmap") < order.index("network") < order.index("mount")
    job.network = False
    assert "network" not in [name for name, _ in plan.ops(plan.job_plan(job, Scratch("/s")))]


def test_a_result_carries_the_jobs_address_unless_it_never_ran():
    facts = RunFacts("j", 42, 1.0, address="10.88.0.5", wait_status=0)
    assert result_of(facts, 2.0).address == "10.88.0.5"
    facts.failure = {"step": "find command", "detail": "command not found in the rootfs: x"}
    assert result_of(facts, 2.0).address is None
