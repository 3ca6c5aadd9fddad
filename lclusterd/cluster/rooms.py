"""Rooms: what every live node can still take, kept change by change, so that the prime places
a job in O(log N) of the fleet instead of building a Room per node and scanning them all. Pure.

The view (view.py) reports each change as it sees it: a node registered (or re-registered with
another offer), gone, draining or not, and jobs counted on or off a node (assignments from the
assign watch, reservations the scheduler holds). Rooms keeps the running totals per node (jobs,
memory requested) and, for the nodes that are ready (registered, not draining) and have a free
slot, one ordered structure for its policy (orders.py):

- prime-first: (free slots, free memory, name) in a sorted list; the best is at its end;
- best-fit: (free memory, name) in a sorted list; the best is the first at or above the -mem;
- first-fit: a max tree of free memory over the live nodes in name order; the best is its
  leftmost leaf at or above the -mem.

Its answers are placement.place's, node and sentence alike (placement.py is the reference;
tests/unit/test_rooms_equivalence.py compares the two on random views), so switching the prime
from one to the other changed no decision. Callers serialise access (the view's lock).

Images: a job that names an image may go only to a node that publishes it (NodeInfo.images).
Such jobs are placed from an index of their own per image (the same structures over the
nodes that have it), built the first time a job asks for that image and moved with every
change after that.
"""

from __future__ import annotations

from typing import Collection

from sortedcontainers import SortedList

from lclusterd.cluster.orders import ORDERS
from lclusterd.cluster.placement import (PRIME_FIRST, Needs, Room, place, place_pinned, why_no_image, why_no_ready,
                                         why_too_big)

State = tuple[int, int, int]  # a ready node's (free slots, free memory, offered memory)
NO_IMAGES: frozenset[str] = frozenset()


class _Node:
    """One node's facts: its offer and images while registered, whether it drains, and what is
    counted on it (also while it is not registered: a dead node's assignments stay until it is
    buried, and count against it if it registers again before then, as they always have)."""

    __slots__ = ("capacity", "offered", "live", "draining", "jobs", "used", "images", "subnet", "volume_roots")

    def __init__(self) -> None:
        self.capacity = self.offered = self.jobs = self.used = 0
        self.live = self.draining = False
        self.images = NO_IMAGES
        self.subnet, self.volume_roots = "", ()

    def state(self) -> State | None:
        if not self.live or self.draining:
            return None
        return self.capacity - self.jobs, self.offered - self.used, self.offered

    def room(self, name: str) -> Room:
        return Room(name, self.capacity - self.jobs, self.offered - self.used, self.offered, self.draining, self.subnet,
                    self.volume_roots, self.images)

    def idle(self) -> bool:
        return not (self.live or self.draining or self.jobs or self.used)


class _Index:
    """The ready nodes of one image (or of all: the default image) ordered for the policy,
    their offers (for "the largest ready node offers ..."), how many registered nodes it
    covers and their free slots."""

    __slots__ = ("order", "offers", "live", "free")

    def __init__(self, policy: str):
        self.order = ORDERS[policy]()
        self.offers: SortedList = SortedList()
        self.live = 0  # registered nodes in it
        self.free = 0  # free slots on its ready nodes

    def update(self, name: str, was_in: bool, old: State | None, now_in: bool, new: State | None) -> None:
        """`name` moves from `old` to `new` (None: not ready), and into or out of this index."""
        if now_in and not was_in:
            self.live += 1
            self.order.enter(name)
        self.moved(name, old if was_in else None, new if now_in else None)
        if was_in and not now_in:
            self.live -= 1
            self.order.leave(name)  # (after its move out: LeftmostFit expects its leaf gone)

    def moved(self, name: str, old: State | None, new: State | None) -> None:
        """Move `name` in every structure from its state `old` to `new` (None: not ready)."""
        if old == new:
            return
        old_slots, old_free, old_offer = old or (0, 0, None)
        new_slots, new_free, new_offer = new or (0, 0, None)
        self.free += max(new_slots, 0) - max(old_slots, 0)
        if old_offer != new_offer:
            if old_offer is not None:
                self.offers.remove(old_offer)
            if new_offer is not None:
                self.offers.add(new_offer)
        # only a node with a free slot can take a job, so only those are ordered
        old_key = (old_slots, old_free) if old_slots > 0 else None
        new_key = (new_slots, new_free) if new_slots > 0 else None
        if old_key != new_key:
            self.order.move(name, old_key, new_key)


class Rooms:
    """Jobs without an image are placed from one index of every node; a job with an image from
    that image's own index, made the first time a job asks for it and kept from then on, so a
    cluster whose jobs name no image pays nothing for images on its hot path."""

    def __init__(self, policy: str, prime: str):
        self.policy = policy
        self.prime = prime
        self._nodes: dict[str, _Node] = {}
        self._all = _Index(policy)
        self._images: dict[str, _Index] = {}  # image -> the index of the nodes that have it

    @property
    def live(self) -> int:
        """Registered nodes."""
        return self._all.live

    @property
    def free(self) -> int:
        """Free slots on ready nodes: the scheduler stops a pass at 0."""
        return self._all.free

    # -- changes -------------------------------------------------------------------------------
    def set_node(self, name: str, capacity: int, offered: int, images: frozenset[str] = NO_IMAGES, subnet: str = "",
                 volume_roots: tuple[str, ...] = ()) -> None:
        """`name` is registered (again) with this offer, these images and this network and volume offer."""
        node = self._node(name)
        node.subnet, node.volume_roots = subnet, tuple(volume_roots)
        before, was_live, had = node.state(), node.live, node.images
        node.live = True
        node.capacity, node.offered, node.images = capacity, offered, images
        self._all.update(name, was_live, before, True, node.state())
        for image in (had | images) if self._images else ():
            index = self._images.get(image)
            if index is not None:
                index.update(name, was_live and image in had, before, image in images, node.state())

    def remove_node(self, name: str) -> None:
        """`name`'s registration is gone; what is counted on it stays."""
        node = self._nodes.get(name)
        if node is None or not node.live:
            return
        before = node.state()
        node.live = False
        self._all.update(name, True, before, False, None)
        for image in node.images if self._images else ():
            index = self._images.get(image)
            if index is not None:
                index.update(name, True, before, False, None)
        node.images = NO_IMAGES
        self._drop_if_idle(name, node)

    def set_draining(self, name: str, draining: bool) -> None:
        node = self._node(name)
        before = node.state()
        node.draining = draining
        self._moved(name, node, before, node.state())
        self._drop_if_idle(name, node)

    def use(self, name: str, jobs: int, memory: int) -> None:
        """Count `jobs` more jobs and `memory` more bytes on `name` (negative: fewer). The hot
        path: called for each reservation, assignment and end."""
        if not jobs and not memory:
            return
        node = self._node(name)
        before = node.state()
        node.jobs += jobs
        node.used += memory
        self._moved(name, node, before, node.state())
        if not node.live:
            self._drop_if_idle(name, node)

    def recount(self, totals: dict[str, tuple[int, int]]) -> None:
        """Replace every node's count by `totals` (name -> (jobs, memory)): after a re-read."""
        for name in set(self._nodes) | set(totals):
            jobs, memory = totals.get(name, (0, 0))
            node = self._nodes.get(name)
            had_jobs, had_memory = (node.jobs, node.used) if node is not None else (0, 0)
            self.use(name, jobs - had_jobs, memory - had_memory)

    # -- answers -------------------------------------------------------------------------------
    def room(self, name: str) -> Room | None:
        """What a live node can still take (None when it is not registered)."""
        node = self._nodes.get(name)
        return node.room(name) if node is not None and node.live else None

    def place(self, memory: int = 0, pinned: str = "", avoid: Collection[str] = (),
              needs: Needs | None = None, image: str = "") -> tuple[str | None, str]:
        """placement.place(policy, every room, prime, memory, pinned, avoid, needs, image), without
        looking at every room, but for a job with needs (a job network, volumes): those are placed
        by the reference itself over the live nodes, O(N)."""
        if pinned:
            return place_pinned(self.room(pinned), pinned, memory, needs, image)
        if needs is not None:
            rooms = {name: node.room(name) for name, node in self._nodes.items() if node.live}
            return place(self.policy, rooms, self.prime, memory, "", avoid, needs, image)
        index = self._index(image) if image else self._all
        if not index.offers:
            return None, why_no_image(image, index.live > 0) if image else why_no_ready(index.live > 0)
        largest = index.offers[-1]
        if memory and memory > largest:
            return None, why_too_big(memory, largest, image)
        if self.policy == PRIME_FIRST and self._fits(self.prime, memory, image):
            if self.prime not in avoid:
                return self.prime, ""
            best = index.order.pick(memory, avoid)
            # the prime is a candidate unless some node fits that is not avoided
            return (best if best not in avoid else self.prime), ""
        return index.order.pick(memory, avoid), ""

    # -- inside --------------------------------------------------------------------------------
    def _index(self, image: str) -> _Index:
        """The index of the nodes that have `image`, built from every node the first time."""
        index = self._images.get(image)
        if index is None:
            index = self._images[image] = _Index(self.policy)
            for name, node in self._nodes.items():
                if node.live and image in node.images:
                    index.update(name, False, None, True, node.state())
        return index

    def _fits(self, name: str, memory: int, image: str = "") -> bool:
        node = self._nodes.get(name)
        return (node is not None and node.live and not node.draining and node.jobs < node.capacity
                and memory <= node.offered - node.used and (not image or image in node.images))

    def _node(self, name: str) -> _Node:
        node = self._nodes.get(name)
        if node is None:
            node = self._nodes[name] = _Node()
        return node

    def _drop_if_idle(self, name: str, node: _Node) -> None:
        if node.idle():  # so names of nodes long gone do not pile up
            del self._nodes[name]

    def _moved(self, name: str, node: _Node, old: State | None, new: State | None) -> None:
        """`name`'s state moved from `old` to `new`: in every index it is in."""
        if old == new:
            return
        self._all.moved(name, old, new)
        if self._images and node.live:
            for image in node.images:
                index = self._images.get(image)
                if index is not None:
                    index.moved(name, old, new)
