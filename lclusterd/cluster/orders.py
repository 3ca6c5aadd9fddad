"""The orders Rooms (rooms.py) keeps the ready nodes with a free slot in, one per scheduling
policy, each answering which of them is best for a job of `memory` bytes. Pure.
"""

from __future__ import annotations

from typing import Collection

from sortedcontainers import SortedList

from lclusterd.cluster.placement import BEST_FIT, FIRST_FIT, PRIME_FIRST

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


ORDERS = {PRIME_FIRST: MostFree, FIRST_FIT: LeftmostFit, BEST_FIT: TightestFit}
