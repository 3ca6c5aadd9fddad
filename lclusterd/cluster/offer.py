"""What a node offers its jobs beyond room: a job network (its bridge and subnet) and the host
directories their volumes may come from. Worked out once at start, before the runtime starts
(the fork server takes its bridge and subnet on its command line), and registered in the
node's NodeInfo so that admission and placement send a job only where it can run.

The subnet is --subnet when given; otherwise the node claims one /24 of --cluster-subnet in
etcd: the first one no node holds, by a transaction that writes subnets/<net>_<len> only while
it is absent. A claim has no lease, so the same node name takes its own subnet again after a
restart, and nodes sharing one etcd never share a subnet (a subnet's addresses are leased on
each host, so two nodes of one host on one subnet would hand out the same addresses).
A --subnet given by hand is claimed the same way, so claimed ones keep clear of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from ipaddress import IPv4Network

from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Absent, Put
from lclusterd.cluster.store import Store
from lclusterd.runtime.launcher import NetworkConfig

CLAIMED_PREFIX = 24  # one node's share of --cluster-subnet: 253 jobs' addresses


class OfferError(Exception):
    """This node cannot offer what its options ask for; the message says why in one line."""


@dataclass(frozen=True)
class NodeOffer:
    network: NetworkConfig | None = None  # None: jobs with -net bridge are not for this node
    volume_roots: list[str] = field(default_factory=list)

    @property
    def subnet(self) -> str:
        return self.network.subnet if self.network is not None else ""

    def launcher_options(self) -> dict:
        """The Launcher's keyword arguments for this offer (volume_roots only where it has some)."""
        options: dict = {"network": self.network}
        if self.volume_roots:
            options["volume_roots"] = list(self.volume_roots)
        return options


def node_offer(store: Store, keys: Keys, node: str, bridge: str, subnet: str, cluster_subnet: str,
               volume_roots: list[str]) -> NodeOffer:
    """The node's offer; OfferError with the reason (StoreUnavailable when etcd fails)."""
    roots = checked_volume_roots(volume_roots)
    if not bridge:
        return NodeOffer(None, roots)
    _checked(NetworkConfig(bridge, subnet or cluster_subnet))  # before anything is claimed
    if subnet:
        claim_given(store, keys, node, subnet)
    else:
        subnet = claim_subnet(store, keys, node, cluster_subnet)
    return NodeOffer(_checked(NetworkConfig(bridge, subnet)), roots)


def _checked(network: NetworkConfig) -> NetworkConfig:
    try:
        network.validate()
    except ValueError as exc:
        raise OfferError(f"--bridge/--subnet: {exc}") from None
    return network


def checked_volume_roots(roots: list[str]) -> list[str]:
    """Each --volume-root as given: an absolute, normalised path of an existing directory."""
    for root in roots:
        if not os.path.isabs(root) or os.path.normpath(root) != root.rstrip("/") or root == "/" or "\0" in root:
            raise OfferError(f"--volume-root must be an absolute path written without '.', '..', '//' and not /, "
                             f"not {root!r}")
        if not os.path.isdir(root):
            raise OfferError(f"--volume-root {root} is not a directory")
    return [root.rstrip("/") for root in roots]


def _claims(store: Store, keys: Keys) -> dict[IPv4Network, str]:
    """Every claimed subnet and the node holding it (a key or value not ours is skipped)."""
    kvs, _ = store.get_prefix(keys.subnets_prefix)
    claims = {}
    for kv in kvs:
        try:
            claims[IPv4Network(Keys.last(kv.key).replace("_", "/"))] = kv.value.decode()
        except (ValueError, UnicodeDecodeError):
            continue
    return claims


def claim_subnet(store: Store, keys: Keys, node: str, cluster_subnet: str) -> str:
    """This node's /24 of `cluster_subnet`: the one it claimed before, else the first free one."""
    whole = IPv4Network(cluster_subnet)
    claims = _claims(store, keys)
    for network, owner in sorted(claims.items()):
        if owner == node and network.subnet_of(whole) and network.prefixlen == CLAIMED_PREFIX:
            return str(network)
    for candidate in whole.subnets(new_prefix=max(CLAIMED_PREFIX, whole.prefixlen)):
        if any(candidate.overlaps(network) for network in claims):
            continue
        key = keys.subnet(str(candidate))
        if store.txn([Absent(key)], [Put(key, node.encode())]).succeeded:
            return str(candidate)
        claims[candidate] = "?"  # another node was quicker
    raise OfferError(f"every /{CLAIMED_PREFIX} of --cluster-subnet {whole} is claimed by another node: give this node "
                     "a --subnet of its own, or the cluster a larger --cluster-subnet")


def claim_given(store: Store, keys: Keys, node: str, subnet: str) -> None:
    """Claim the --subnet given by hand, unless another node's claim overlaps it."""
    mine = IPv4Network(subnet)
    for network, owner in _claims(store, keys).items():
        if owner != node and network.overlaps(mine):
            raise OfferError(f"--subnet {mine} overlaps {network}, which node {owner[:63]} holds (claimed in etcd)")
    key = keys.subnet(str(mine))
    if not store.txn([Absent(key)], [Put(key, node.encode())]).succeeded:
        held = store.get(key)
        if held is not None and held.value != node.encode():
            raise OfferError(f"--subnet {mine} was just claimed by another node")
