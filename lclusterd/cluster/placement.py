"""Where the prime puts a job: the scheduling policies. Pure (the scheduler feeds it its view).

A Room is what a node can still take. `place` answers (node, "") or (None, why): an empty
`why` means "every node that could run it is busy: wait for a slot" (no need to tell anyone);
a sentence means the job cannot run anywhere as things stand (too big, pinned to a node that is
gone or draining), and the prime writes it into the record so `-check` shows it.

`place` looks at every node, so it is the reference, not what the prime runs: the prime asks
Rooms (rooms.py), which keeps the same answers in ordered structures and finds them in O(log N);
tests/unit/test_rooms_equivalence.py holds the two to the same node and the same sentence. The
sentences and the pinned case live here once, for both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from lclusterd.cluster.kv import Compare
from lclusterd.limits import parse_volume
from lclusterd.model import JobSpec
from lclusterd.units import format_size

PRIME_FIRST = "prime-first"
FIRST_FIT = "first-fit"
BEST_FIT = "best-fit"
POLICIES = (PRIME_FIRST, FIRST_FIT, BEST_FIT)


@dataclass(frozen=True)
class Placement:
    """Where the prime put a job being added, and the compares its write must hold (the prime
    guard): see Scheduler.reserve."""

    node: str
    guard: list[Compare]


@dataclass(frozen=True)
class Needs:
    """What a job needs of its node beyond room: a job network (-net bridge), and its volumes'
    host directories each under one of the node's --volume-root."""

    bridge: bool = False
    volume_hosts: tuple[str, ...] = ()

    @staticmethod
    def of(spec: JobSpec) -> Needs | None:
        """The spec's needs; None for a job any node can run (the common case, kept cheap)."""
        if spec.net != "bridge" and not spec.volumes:
            return None
        return Needs(spec.net == "bridge", tuple(parse_volume(v).host for v in spec.volumes))

    def met_by(self, subnet: str, volume_roots: Iterable[str]) -> bool:
        if self.bridge and not subnet:
            return False
        roots = tuple(volume_roots)
        return all(under_a_root(host, roots) for host in self.volume_hosts)

    def why_unmet(self, offers: list[tuple[str, tuple[str, ...]]]) -> str:
        """Why no node of `offers` ((subnet, volume roots) each) meets these needs."""
        if self.bridge and not any(subnet for subnet, _ in offers):
            return "no node offers -net bridge: start lclusterd with --bridge NAME (its default, lcl0)"
        roots = sorted({root for _, node_roots in offers for root in node_roots})
        if self.volume_hosts and not roots:
            return "no node allows volumes: start lclusterd with --volume-root DIR"
        outside = [host for host in self.volume_hosts if not under_a_root(host, roots)]
        if outside:
            return f"volume {outside[0]} is under no node's --volume-root (allowed: {', '.join(roots)[:200]})"
        return "no single node offers all of: " + ", ".join(
            (["-net bridge"] if self.bridge else []) + [f"-volume {h}" for h in self.volume_hosts])


def under_a_root(host: str, roots: Iterable[str]) -> bool:
    """Whether the (normalised, absolute) host path is a root of `roots` or beneath one."""
    return any(host == root or host.startswith(root + "/") for root in roots)


@dataclass
class Room:
    name: str
    slots: int  # jobs it can still take (capacity - assigned)
    memory: int  # memory not yet requested by its jobs
    offered: int  # memory it offers in all
    draining: bool = False
    subnet: str = ""  # its job network's subnet ("": none)
    volume_roots: tuple[str, ...] = ()
    images: frozenset[str] = field(default_factory=frozenset)  # what it publishes (NodeInfo.images)

    def fits(self, memory: int) -> bool:
        return self.slots > 0 and memory <= self.memory

    def take(self, memory: int) -> None:
        self.slots -= 1
        self.memory -= memory


def place(policy: str, rooms: dict[str, Room], prime: str, memory: int = 0, pinned: str = "",
          avoid: Iterable[str] = (), needs: Needs | None = None, image: str = "") -> tuple[str | None, str]:
    """The node for a job that requests `memory` bytes (0: none), or None and why not.
    `avoid`: nodes where earlier attempts were lost; used only when no other node fits.
    `needs`: only nodes that meet them are candidates. `image`: only nodes that have it ("":
    every node, each has its rootfs)."""
    if pinned:
        return place_pinned(rooms.get(pinned), pinned, memory, needs, image)
    if image:
        rooms = {name: r for name, r in rooms.items() if image in r.images}
    ready = [r for r in rooms.values() if not r.draining]
    if not ready:
        return None, why_no_image(image, bool(rooms)) if image else why_no_ready(bool(rooms))
    if needs is not None:
        ready = [r for r in ready if needs.met_by(r.subnet, r.volume_roots)]
        if not ready:
            return None, needs.why_unmet([(r.subnet, r.volume_roots) for r in rooms.values() if not r.draining])
    if memory and all(memory > r.offered for r in ready):
        return None, why_too_big(memory, max(r.offered for r in ready), image)
    fits = [r for r in ready if r.fits(memory)]
    avoided = set(avoid)
    candidates = [r for r in fits if r.name not in avoided] or fits
    if not candidates:
        return None, ""
    if policy == FIRST_FIT:
        return min(candidates, key=lambda r: r.name).name, ""
    if policy == BEST_FIT:
        return min(candidates, key=lambda r: (r.memory - memory, r.name)).name, ""
    # prime-first: the original's "primed node" while it has room, then the most free slots
    if any(r.name == prime for r in candidates):
        return prime, ""
    return max(candidates, key=lambda r: (r.slots, r.memory, r.name)).name, ""


def place_pinned(room: Room | None, pinned: str, memory: int, needs: Needs | None = None,
                 image: str = "") -> tuple[str | None, str]:
    """A job pinned to node `pinned` (whose room is `room`, None when it is not registered):
    that node or nothing; earlier lost attempts do not move it."""
    if room is None:
        return None, f"pinned to node {pinned}, which is not registered"
    if image and image not in room.images:
        return None, f"pinned to node {pinned}, which does not have the image {image!r}"
    if room.draining:
        return None, f"pinned to node {pinned}, which is draining"
    if needs is not None and not needs.met_by(room.subnet, room.volume_roots):
        if needs.bridge and not room.subnet:
            return None, f"pinned to node {pinned}, which offers no -net bridge (started with --bridge '')"
        outside = next(h for h in needs.volume_hosts if not under_a_root(h, room.volume_roots))
        return None, f"pinned to node {pinned}, whose --volume-root does not allow volume {outside}"
    if memory > room.offered:
        return None, f"needs {format_size(memory)} of memory; node {pinned} offers {format_size(room.offered)}"
    return (pinned, "") if room.fits(memory) else (None, "")


def why_no_ready(registered: bool) -> str:
    return "no ready node: every registered node is draining" if registered else "no node is registered"


def why_no_image(image: str, registered: bool) -> str:
    """No ready node has `image`: every one that has it drains, or none has it (any more)."""
    if registered:
        return f"every node with the image {image!r} is draining"
    return f"no ready node has the image {image!r} (lclusterd image import {image} PATH on a node)"


def why_too_big(memory: int, largest: int, image: str = "") -> str:
    where = f"the largest ready node with the image {image!r}" if image else "the largest ready node"
    return f"needs {format_size(memory)} of memory; {where} offers {format_size(largest)}"
