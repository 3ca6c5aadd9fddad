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


@dataclass
class Room:
    name: str
    slots: int  # jobs it can still take (capacity - assigned)
    memory: int  # memory not yet requested by its jobs
    offered: int  # memory it offers in all
    draining: bool = False
    images: frozenset[str] = field(default_factory=frozenset)  # what it publishes (NodeInfo.images)

    def fits(self, memory: int) -> bool:
        return self.slots > 0 and memory <= self.memory

    def take(self, memory: int) -> None:
        self.slots -= 1
        self.memory -= memory


def place(policy: str, rooms: dict[str, Room], prime: str, memory: int = 0, pinned: str = "",
          avoid: Iterable[str] = (), image: str = "") -> tuple[str | None, str]:
    """The node for a job that requests `memory` bytes (0: none), or None and why not.
    `avoid`: nodes where earlier attempts were lost; used only when no other node fits.
    `image`: only nodes that have it ("": every node, each has its rootfs)."""
    if pinned:
        return place_pinned(rooms.get(pinned), pinned, memory, image)
    if image:
        rooms = {name: r for name, r in rooms.items() if image in r.images}
    ready = [r for r in rooms.values() if not r.draining]
    if not ready:
        return None, why_no_image(image, bool(rooms)) if image else why_no_ready(bool(rooms))
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


def place_pinned(room: Room | None, pinned: str, memory: int, image: str = "") -> tuple[str | None, str]:
    """A job pinned to node `pinned` (whose room is `room`, None when it is not registered):
    that node or nothing; earlier lost attempts do not move it."""
    if room is None:
        return None, f"pinned to node {pinned}, which is not registered"
    if image and image not in room.images:
        return None, f"pinned to node {pinned}, which does not have the image {image!r}"
    if room.draining:
        return None, f"pinned to node {pinned}, which is draining"
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
