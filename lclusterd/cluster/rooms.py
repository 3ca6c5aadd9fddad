"""Rooms: what every live node can still take, kept change by change, so that the prime places
a job in O(log N) of the fleet instead of building a Room per node and scanning them all. Pure.

The view (view.py) reports each change as it sees it: a node registered (or re-registered with
another offer), gone, draining or not, and jobs counted on or off a node (assignments from the
assign watch, reservations the scheduler holds). Rooms keeps the running totals per node (jobs,
memory requested) and, for the nodes that are ready (registered, not draining) and have a free
slot, one ordered structure for its policy:

- prime-first: (free slots, free memory, name) in a sorted list; the best is at its end;
- best-fit: (free memory, name) in a sorted list; the best is the first at or above the -mem;
- first-fit: a max tree of free memory over the live nodes in name order; the best is its
  leftmost leaf at or above the -mem.

Its answers are placement.place's, node and sentence alike (placement.py is the reference;
tests/unit/test_rooms_equivalence.py compares the two on random views), so switching the prime
from one to the other changed no decision. Callers serialise access (the view's lock).
"""

from __future__ import annotations

from typing import Collection

from sortedcontainers import SortedList

from lclusterd.cluster.placement import (BEST_FIT, FIRST_FIT, PRIME_FIRST, Needs, Room, place, place_pinned,
                                         why_no_ready, why_too_big)

State = tuple[int, int, int]  # a ready node's (free slots, free memory, offered memory)


class _Node:
    """One node's facts: its offer while registered, whether it drains, and what is counted on
    it (also while it is not registered: a dead node's assignments stay until it is buried, and
    count against it if it registers again before then, as they always have)."""

    __slots__ = ("capacity", "offered", "live", "draining", "jobs", "used", "subnet", "volume_roots")

    def __init__(self) -> None:
        self.capacity = self.offered = self.jobs = self.used = 0
        self.live = self.draining = False
        self.subnet, self.volume_roots = "", ()

    def state(self) -> State | None:
        if not self.live or self.draining:
            return None
        return self.capacity - self.jobs, self.offered - self.used, self.offered

    def room(self, name: str) -> Room:
        return Room(name, self.capacity - self.jobs, self.offered - self.used, self.offered, self.draining, self.subnet,
                    self.volume_roots)

    def idle(self) -> bool:
        return not (self.live or self.draining or self.jobs or self.used)


class Rooms:
    def __init__(self, policy: str, prime: str):
        self.policy = policy
        self.prime = prime
        self._nodes: dict[str, _Node] = {}
        orders = {PRIME_FIRST: MostFree, FIRST_FIT: LeftmostFit, BEST_FIT: TightestFit}
        self._order = orders[policy]()
        # offered memory of every ready node, for "the largest ready node offers ..."
        self._offers: SortedList = SortedList()
        self.live = 0  # registered nodes
        self.free = 0  # free slots on ready nodes: the scheduler stops a pass at 0

    # -- changes -------------------------------------------------------------------------------
    def set_node(self, name: str, capacity: int, offered: int, subnet: str = "",
                 volume_roots: tuple[str, ...] = ()) -> None:
        """`name` is registered (again) with this offer."""
        node = self._node(name)
        node.subnet, node.volume_roots = subnet, tuple(volume_roots)
        before = node.state()
        if not node.live:
            node.live = True
            self.live += 1
            self._order.enter(name)
        node.capacity, node.offered = capacity, offered
        self._moved(name, before, node.state())

    def remove_node(self, name: str) -> None:
        """`name`'s registration is gone; what is counted on it stays."""
        node = self._nodes.get(name)
        if node is None or not node.live:
            return
        before = node.state()
        node.live = False
        self.live -= 1
        self._moved(name, before, None)
        self._order.leave(name)
        self._drop_if_idle(name, node)

    def set_draining(self, name: str, draining: bool) -> None:
        node = self._node(name)
        before = node.state()
        node.draining = draining
        self._moved(name, before, node.state())
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
        self._moved(name, before, node.state())
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
              needs: Needs | None = None) -> tuple[str | None, str]:
        """placement.place(policy, every room, prime, memory, pinned, avoid, needs), without looking
        at every room, but for a job with needs (a job network, volumes): those are placed by the
        reference itself over the live nodes, O(N)."""
        if pinned:
            return place_pinned(self.room(pinned), pinned, memory, needs)
        if needs is not None:
            rooms = {name: node.room(name) for name, node in self._nodes.items() if node.live}
            return place(self.policy, rooms, self.prime, memory, "", avoid, needs)
        if not self._offers:
            return None, why_no_ready(self.live > 0)
        largest = self._offers[-1]
        if memory and memory > largest:
            return None, why_too_big(memory, largest)
        if self.policy == PRIME_FIRST and self._fits(self.prime, memory):
            if self.prime not in avoid:
                return self.prime, ""
            best = self._order.pick(memory, avoid)
            # the prime is a candidate unless some node fits that is not avoided
            return (best if best not in avoid else self.prime), ""
        return self._order.pick(memory, avoid), ""

    # -- inside --------------------------------------------------------------------------------
    def _fits(self, name: str, memory: int) -> bool:
        node = self._nodes.get(name)
        return (node is not None and node.live and not node.draining and node.jobs < node.capacity
                and memory <= node.offered - node.used)

    def _node(self, name: str) -> _Node:
        node = self._nodes.get(name)
        if node is None:
            node = self._nodes[name] = _Node()
        return node

    def _drop_if_idle(self, name: str, node: _Node) -> None:
        if node.idle():  # so names of nodes long gone do not pile up
            del self._nodes[name]

    def _moved(self, name: str, old: State | None, new: State | None) -> None:
        """Move `name` in every structure from its state `old` to `new` (None: not ready)."""
        if old == new:
            return
        old_slots, old_free, old_offer = old or (0, 0, None)
        new_slots, new_free, new_offer = new or (0, 0, None)
        self.free += max(new_slots, 0) - max(old_slots, 0)
        if old_offer != new_offer:
            if old_offer is not None:
                self._offers.remove(old_offer)
            if new_offer is not None:
                self._offers.add(new_offer)
        # only a node with a free slot can take a job, so only those are ordered
        old_key = (old_slots, old_free) if old_slots > 0 else None
        new_key = (new_slots, new_free) if new_slots > 0 else None
        if old_key != new_key:
            self._order.move(name, old_key, new_key)


# -- the orders: which ready node with a free slot is best for a job of `memory` bytes ---------
# Each keeps (free slots, free memory) of those nodes by name (`move`, None: not there) and
# answers `pick`: the best node whose free memory is at least `memory`, the best not in `avoid`
# when there is one (earlier attempts of the job were lost there), else the best of all, or
# None when none fits. `avoid` is a job's short history, so skipping it costs a few steps.

class MostFree:
    """prime-first after the prime: most free slots, then most free memory, then the last name."""

    def __init__(self) -> None:
        self._entries: SortedList = SortedList()  # (slots, free memory, name)

    def enter(self, name: str) -> None:
        pass

    leave = enter

    def move(self, name: str, old: tuple[int, int] | None, new: tuple[int, int] | None) -> None:
        if old is not None:
            self._entries.remove((*old, name))
        if new is not None:
            self._entries.add((*new, name))

    def pick(self, memory: int, avoid: Collection[str]) -> str | None:
        """From the most free slots down, one group of equal slots at a time: within a group
        the entries from the job's `memory` up fit, best last. Groups with no node that fits are
        passed over at one bisection each, so a -mem job costs O(log N) per distinct count of
        free slots above its fit (bounded by the largest capacity, not by the fleet). Only
        value ranges (irange), no positions: positional access makes SortedList keep an index
        of positions that every insert and removal then has to update."""
        entries = self._entries
        if not entries:
            return None
        slots, free, name = entries[-1]  # the common case: the best node fits and is not avoided
        if free >= memory and name not in avoid:
            return name
        fallback = None
        while True:
            for _slots, _free, name in entries.irange((slots, memory), (slots + 1,), (True, False), reverse=True):
                if name not in avoid:
                    return name
                fallback = fallback or name
            lower = next(entries.irange(maximum=(slots,), inclusive=(True, False), reverse=True), None)
            if lower is None:
                return fallback
            slots = lower[0]


class TightestFit:
    """best-fit: the least free memory that still holds the job, then the first name."""

    def __init__(self) -> None:
        self._entries: SortedList = SortedList()  # (free memory, name)

    def enter(self, name: str) -> None:
        pass

    leave = enter

    def move(self, name: str, old: tuple[int, int] | None, new: tuple[int, int] | None) -> None:
        if old is not None:
            self._entries.remove((old[1], name))
        if new is not None:
            self._entries.add((new[1], name))

    def pick(self, memory: int, avoid: Collection[str]) -> str | None:
        fallback = None
        for _free, name in self._entries.irange((memory,)):
            if name not in avoid:
                return name
            fallback = fallback or name
        return fallback


NO_ROOM = -1  # a leaf of a node that cannot take a job: below any request (a request is >= 0)


class LeftmostFit:
    """first-fit: the first name whose free memory holds the job. A max tree over the live
    nodes in name order (leaves: free memory, NO_ROOM for a full or draining node) finds the
    leftmost fitting leaf in O(log N). Positions are fixed between rebuilds, so a job counted
    on or off a node is one leaf update. A name seen for the first time waits among `_new`,
    looked at one by one at each pick, until there are more than √N of them; then the next
    pick rebuilds the tree in O(N), dropping the leaves of nodes that left since. So a fleet
    registering node by node while jobs are placed costs O(√N) per registration, not O(N)."""

    def __init__(self) -> None:
        self._live: set[str] = set()
        self._free: dict[str, int] = {}  # live node with a free slot -> its free memory
        self._names: list[str] = []  # leaf i is _names[i]
        self._at: dict[str, int] = {}
        self._new: set[str] = set()  # live, not in the tree yet
        self._size = 1
        self._tree = [NO_ROOM, NO_ROOM]  # 1-based heap layout, leaves from _size on

    def enter(self, name: str) -> None:
        self._live.add(name)
        if name not in self._at:
            self._new.add(name)

    def leave(self, name: str) -> None:
        """(Its leaf is NO_ROOM already: Rooms moves a node out before it leaves.)"""
        self._live.discard(name)
        self._new.discard(name)

    def move(self, name: str, old: tuple[int, int] | None, new: tuple[int, int] | None) -> None:
        if new is None:
            self._free.pop(name, None)
        else:
            self._free[name] = new[1]
        leaf = self._at.get(name)
        if leaf is not None:
            self._set(leaf, NO_ROOM if new is None else new[1])

    def pick(self, memory: int, avoid: Collection[str]) -> str | None:
        if len(self._new) ** 2 > len(self._names):
            self._rebuild()
        fits = sorted(name for name in self._new if self._free.get(name, NO_ROOM) >= memory)
        fallback = None
        leaf = self._leftmost(memory, 0)
        while leaf >= 0:
            name = self._names[leaf]
            if name not in avoid:
                fits.append(name)
                break
            fallback = fallback or name
            leaf = self._leftmost(memory, leaf + 1)
        chosen = [name for name in fits if name not in avoid]
        if chosen:
            return min(chosen)
        return min(fits + [fallback] if fallback else fits, default=None)

    def _rebuild(self) -> None:
        self._names = sorted(self._live)
        self._at = {name: i for i, name in enumerate(self._names)}
        self._size = size = 1 << max(len(self._names) - 1, 0).bit_length()
        tree = [NO_ROOM] * (2 * size)
        for i, name in enumerate(self._names):
            tree[size + i] = self._free.get(name, NO_ROOM)
        for i in range(size - 1, 0, -1):
            tree[i] = max(tree[2 * i], tree[2 * i + 1])
        self._tree = tree
        self._new = set()

    def _set(self, leaf: int, value: int) -> None:
        tree = self._tree
        i = leaf + self._size
        tree[i] = value
        i >>= 1
        while i:
            top = max(tree[2 * i], tree[2 * i + 1])
            if tree[i] == top:
                break  # nothing above changes either
            tree[i] = top
            i >>= 1

    def _leftmost(self, memory: int, start: int) -> int:
        """The first leaf at or after `start` holding at least `memory`, or -1."""
        if start >= self._size:
            return -1
        tree, size = self._tree, self._size
        i = start + size
        while tree[i] < memory:
            while i & 1:  # a right child: its parent's range is done, go up
                i >>= 1
            if i == 0:
                return -1  # climbed past the root: nothing to the right
            i += 1  # the next subtree to the right
        while i < size:
            i = 2 * i if tree[2 * i] >= memory else 2 * i + 1
        return i - size
