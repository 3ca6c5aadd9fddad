"""ClusterView: what the prime knows of the cluster, read once when it is elected and then kept
by four watches (queue/, nodes/, drain/, assign/), so that placing a job never polls or
re-reads etcd.

It holds the queue in order (each entry the QUEUED record and its mod revision, which are the
guard the assignment needs: both are written in one transaction), the live nodes and their
offers, the draining nodes, each node's assignments with the memory they requested, the
reservations the scheduler made that the assign watch has not shown yet, and the nodes seen
gone that are still to be buried. The scheduler (scheduler.py) decides; this only follows
etcd. Every read and change of it happens under `lock`.

Every change it follows (an event or a re-read) is also told to its Rooms (rooms.py) as it
happens: a node's offer, its draining, one job more or less on it. So the running totals per
node are never summed again and `place` answers in O(log N) of the fleet; `rooms()`, which
builds them all from the sets above, is kept as the reference the tests compare against.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Collection

from lclusterd.cluster import decode
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Event
from lclusterd.cluster.placement import PRIME_FIRST, Needs, Room
from lclusterd.cluster.rooms import Rooms
from lclusterd.cluster.store import Store
from lclusterd.cluster.watch import Callbacks, Watches
from lclusterd.errors import RecordError
from lclusterd.model import JobRecord, NodeInfo

IN_FLIGHT = sys.maxsize  # the revision of a reservation whose add transaction has not returned


class QueuedJob:
    """A queue entry: the QUEUED record's bytes and mod revision, parsed once when first looked
    at (a job that cannot be placed yet, pinned to a full node or a pool member, is looked at
    again on every pass while other jobs are assigned). `skip`: the scheduler tried it at this
    revision and must not again until the entry changes (a new event makes a new entry)."""

    __slots__ = ("key", "raw", "revision", "_record", "skip", "parents_ok", "limited", "owner")

    def __init__(self, key: str, raw: bytes, revision: int):
        self.key, self.raw, self.revision, self._record, self.skip = key, raw, revision, None, False
        self.parents_ok = False  # -after: the scheduler found every parent EXITED 0 (at this revision)
        self.limited: str | None = None  # the array whose %K it counts against ("": none; None: not looked at)
        self.owner: str | None = None  # whose job (None: not looked at yet)

    def may_have_parents(self) -> bool:
        """Whether the record may name -after parents: it has the key only when it has parents
        (and a command's text could only hold the key escaped, so never this way)."""
        return b'"after":' in self.raw

    def has_parents(self) -> bool:
        """Whether the job waits for -after parents (RecordError as `record`)."""
        return self.may_have_parents() and bool(self.record().spec.after)

    def record(self) -> JobRecord:
        """The QUEUED record; RecordError (logged once) when the entry is not a valid record of
        its key's job: the scheduler then skips it until it changes."""
        if self._record is None:
            self._record = decode.job(self.key, self.raw, self.revision)  # never mutated: transitions make copies
        return self._record


@dataclass
class Reservation:
    """Room the scheduler holds on `node` for a job whose assignment the assign watch has not
    delivered yet; written at `revision` (IN_FLIGHT until its transaction returns)."""

    node: str
    revision: int
    memory: int
    limited: str = ""  # the array it counts against, when that has a %K limit
    owner: str = ""  # whose job: it counts against their --max-running-per-user


class Counted:
    """Jobs assigned, running or reserved, counted by group: an array with a %K limit, or an
    owner (--max-running-per-user). The assignments' groups are kept (job id -> group) so a
    deleted assignment, or a re-read, finds what to count again; a reservation counts until its
    assignment comes or it is given back."""

    def __init__(self):
        self.members: dict[str, set[str]] = {}  # group -> job ids
        self.assigned: dict[str, str] = {}  # job id -> its group, for the assignments

    def count(self, group: str) -> int:
        return len(self.members.get(group, ()))

    def add(self, job_id: str, group: str, assigned: bool = False) -> None:
        if assigned:
            self.assigned[job_id] = group
        self.members.setdefault(group, set()).add(job_id)

    def unassigned(self, job_id: str) -> None:
        self._drop(job_id, self.assigned.pop(job_id, ""))

    def released(self, job_id: str, group: str) -> None:
        """A reservation given back (an assignment of the same job counts on)."""
        if job_id not in self.assigned:
            self._drop(job_id, group)

    def recount(self, reserved: list[tuple[str, str]]) -> None:
        """Count again from the assignments and the (job id, group) of the reservations."""
        self.members = {}
        for job_id, group in [*self.assigned.items(), *reserved]:
            self.members.setdefault(group, set()).add(job_id)

    def _drop(self, job_id: str, group: str) -> None:
        members = self.members.get(group)
        if members is not None:
            members.discard(job_id)
            if not members:
                del self.members[group]


class ClusterView:
    def __init__(self, store: Store, watches: Watches, keys: Keys, on_change: Callable[[], None],
                 policy: str = PRIME_FIRST, prime: str = "", count_owners: bool = False):
        self.count_owners = count_owners  # only with --max-running-per-user: no work for it otherwise
        self.store = store
        self.watches = watches
        self.keys = keys
        self.on_change = on_change  # wakes the scheduler
        self.policy, self.prime = policy, prime  # prime: this node, which prime-first fills first
        self.lock = threading.Lock()
        self._watches: list = []
        self.reset()

    def reset(self) -> None:
        self.queue: OrderedDict[str, QueuedJob] = OrderedDict()
        self.with_parents: set[str] = set()  # queued jobs that may name -after parents (the scheduler's to check)
        self.nodes: dict[str, NodeInfo] = {}  # live (registered) nodes
        self.draining: set[str] = set()
        self.assigned: dict[str, dict[str, int]] = {}  # node -> {job id: requested memory} with an assign key
        self.reservations: dict[str, Reservation] = {}  # job id -> room held, not seen by the assign watch yet
        self.arrays = Counted()  # the members of arrays with a %K limit
        self.owners = Counted()  # each owner's jobs, when counted (count_owners)
        self.assign_revision = 0  # last revision the assign watch delivered
        self.dead: dict[str, int] = {}  # node -> revision at which it was seen gone; to bury
        self.ready = False  # loaded and followed: add-time placement may use it
        self.index = Rooms(self.policy, self.prime)  # the same facts, ordered for placing

    # -- loading and following ---------------------------------------------------------------
    def load(self) -> None:
        """Read everything, then follow it (raises StoreUnavailable)."""
        queue_rev, nodes_rev = self._read_queue(), self._read_nodes()
        drain_rev, assign_rev = self._read_drains(), self._read_assignments()
        with self.lock:  # nodes that died while there was no prime (or this one was elected)
            for node in self.assigned:
                if node not in self.nodes:
                    self.dead.setdefault(node, nodes_rev)
        follow = self.watches.watch
        self._watches = [
            follow(self.keys.queue_prefix, queue_rev + 1, Callbacks(self._queue_events, self._read_queue), "queue"),
            follow(self.keys.nodes_prefix, nodes_rev + 1, Callbacks(self._node_events, self._read_nodes), "nodes"),
            follow(self.keys.drain_prefix, drain_rev + 1, Callbacks(self._drain_events, self._read_drains), "drain"),
            follow(self.keys.assign_all_prefix, assign_rev + 1, Callbacks(self._assign_events, self._read_assignments),
                   "assign"),
        ]
        with self.lock:
            self.ready = True

    def stop(self) -> None:
        for watch in self._watches:
            watch.stop()
        self._watches = []

    def _read_queue(self) -> int:
        kvs, revision = self.store.get_prefix(self.keys.queue_prefix)
        with self.lock:
            self.queue = OrderedDict((Keys.last(kv.key), QueuedJob(kv.key, kv.value, kv.mod_revision))
                                     for kv in sorted(kvs, key=lambda kv: kv.create_revision))
            self.with_parents = {job_id for job_id, entry in self.queue.items() if entry.may_have_parents()}
        self.on_change()
        return revision

    def _read_nodes(self) -> int:
        kvs, revision = self.store.get_prefix(self.keys.nodes_prefix)
        with self.lock:
            before = set(self.nodes)
            self.nodes = {}
            for kv in kvs:
                self._set_node(kv.key, kv.value, kv.mod_revision)
            for node in before - set(self.nodes):
                self.index.remove_node(node)
                self.dead.setdefault(node, revision)
        self.on_change()
        return revision

    def _read_drains(self) -> int:
        kvs, revision = self.store.get_prefix(self.keys.drain_prefix, keys_only=True)
        with self.lock:
            draining = {Keys.last(kv.key) for kv in kvs}
            for node in draining ^ self.draining:
                self.index.set_draining(node, node in draining)
            self.draining = draining
        self.on_change()
        return revision

    def _read_assignments(self) -> int:
        kvs, revision = self.store.get_prefix(self.keys.assign_all_prefix)
        with self.lock:
            self.assigned = {}
            self.arrays.assigned, self.owners.assigned = {}, {}
            for kv in kvs:
                node, job_id = self.keys.assign_parts(kv.key)
                self.assigned.setdefault(node, {})[job_id], limited, owner = JobRecord.assignment_facts(kv.value)
                self._count_assigned(job_id, limited, owner)
            self.assign_revision = revision
            self.reservations = {i: r for i, r in self.reservations.items() if r.revision > revision}
            self.arrays.recount([(i, r.limited) for i, r in self.reservations.items() if r.limited])
            self.owners.recount([(i, r.owner) for i, r in self.reservations.items()] if self.count_owners else [])
            self.index.recount(self._totals())
        self.on_change()
        return revision

    def _set_node(self, key: str, raw: bytes, revision: int) -> None:
        """A node's registration; a malformed one is ignored (decode.py logs it)."""
        try:
            info = decode.node(key, raw, revision)
        except RecordError:
            return
        self.nodes[info.name] = info
        self.index.set_node(info.name, info.capacity, info.memory_bytes, frozenset(info.images), info.subnet,
                            tuple(info.volume_roots))

    def _queue_events(self, events: list[Event]) -> None:
        with self.lock:
            for event in events:
                job_id = Keys.last(event.key)
                if event.kind == "put":
                    self.queue[job_id] = entry = QueuedJob(event.key, event.value, event.mod_revision)
                    if entry.may_have_parents():
                        self.with_parents.add(job_id)
                else:
                    self.queue.pop(job_id, None)
                    self.with_parents.discard(job_id)
        self.on_change()

    def _node_events(self, events: list[Event]) -> None:
        with self.lock:
            for event in events:
                if event.kind == "put":
                    self._set_node(event.key, event.value, event.mod_revision)
                else:  # the lease expired or was revoked: the node is dead (or restarting)
                    name = Keys.last(event.key)
                    self.nodes.pop(name, None)
                    self.index.remove_node(name)
                    self.dead[name] = event.mod_revision
        self.on_change()

    def _drain_events(self, events: list[Event]) -> None:
        with self.lock:
            for event in events:
                node, draining = Keys.last(event.key), event.kind == "put"
                (self.draining.add if draining else self.draining.discard)(node)
                self.index.set_draining(node, draining)
        self.on_change()

    def _assign_events(self, events: list[Event]) -> None:
        with self.lock:
            for event in events:
                self._assign_event(event)
            self.assign_revision = events[-1].mod_revision
        self.on_change()

    def _assign_event(self, event: Event) -> None:
        """One assignment key put or deleted; a reservation it shows is no longer held. The
        counts move as one step (an assignment replacing its reservation moves nothing)."""
        node, job_id = self.keys.assign_parts(event.key)
        jobs = self.assigned.get(node)
        before = jobs.pop(job_id, None) if jobs is not None else None
        jobs_delta, memory_delta = (0, 0) if before is None else (-1, -before)
        if event.kind == "put":
            memory, limited, owner = JobRecord.assignment_facts(event.value)
            self.assigned.setdefault(node, {})[job_id] = memory
            jobs_delta, memory_delta = jobs_delta + 1, memory_delta + memory
            self._count_assigned(job_id, limited, owner)
        else:
            self.arrays.unassigned(job_id)
            self.owners.unassigned(job_id)
        reservation = self.reservations.pop(job_id, None)
        if reservation is not None and reservation.node != node:
            self.index.use(reservation.node, -1, -reservation.memory)
        elif reservation is not None:
            jobs_delta, memory_delta = jobs_delta - 1, memory_delta - reservation.memory
        self.index.use(node, jobs_delta, memory_delta)

    def _count_assigned(self, job_id: str, limited: str, owner: str) -> None:
        if limited:
            self.arrays.add(job_id, limited, assigned=True)
        if self.count_owners:
            self.owners.add(job_id, owner, assigned=True)

    def _totals(self) -> dict[str, tuple[int, int]]:
        """(jobs, memory) counted on each node, from the assignments and reservations."""
        used: dict[str, tuple[int, int]] = {}
        for node, jobs in self.assigned.items():
            used[node] = (len(jobs), sum(jobs.values()))
        for reservation in self.reservations.values():
            count, memory = used.get(reservation.node, (0, 0))
            used[reservation.node] = (count + 1, memory + reservation.memory)
        return used

    # -- what the scheduler asks (hold `lock`) ---------------------------------------------------
    def place(self, memory: int = 0, pinned: str = "", avoid: Collection[str] = (),
              needs: Needs | None = None, image: str = "") -> tuple[str | None, str]:
        """placement.place for this view's policy and prime over rooms(), in O(log N)."""
        return self.index.place(memory, pinned, avoid, needs, image)

    def free_slots(self) -> int:
        """Free slots on the ready nodes, all together."""
        return self.index.free

    def rooms(self) -> dict[str, Room]:
        """What each live node can still take: its capacity and offered memory, less its
        assigned jobs and the reservations on it. Built from the sets, one Room per node: the
        reference for `place` (tests), not what the scheduler runs."""
        used = self._totals()
        rooms = {}
        for name, info in self.nodes.items():
            count, memory = used.get(name, (0, 0))
            rooms[name] = Room(name, info.capacity - count, info.memory_bytes - memory, info.memory_bytes,
                               name in self.draining, info.subnet, tuple(info.volume_roots), frozenset(info.images))
        return rooms

    def reserve(self, job_id: str, reservation: Reservation) -> None:
        before = self.reservations.get(job_id)
        if before is not None:
            self.index.use(before.node, -1, -before.memory)
        self.reservations[job_id] = reservation
        self.index.use(reservation.node, 1, reservation.memory)
        if reservation.limited:
            self.arrays.add(job_id, reservation.limited)
        if self.count_owners:
            self.owners.add(job_id, reservation.owner)

    def at_limit(self, array: str, limit: int) -> bool:
        """Whether `limit` members of `array` are already assigned, running or reserved."""
        return self.arrays.count(array) >= limit

    def running_of(self, owner: str) -> int:
        """How many of `owner`'s jobs are assigned, running or reserved (counted with count_owners)."""
        return self.owners.count(owner)

    def settle(self, job_id: str, revision: int | None) -> None:
        """A reservation's transaction returned: written at `revision`, or not (None: the room
        is given back). One the assign watch already delivered is gone: nothing to do."""
        reservation = self.reservations.get(job_id)
        if reservation is None:
            return
        if revision is not None and revision > self.assign_revision:
            reservation.revision = revision
        else:
            del self.reservations[job_id]
            self.index.use(reservation.node, -1, -reservation.memory)
            self.arrays.released(job_id, reservation.limited)
            self.owners.released(job_id, reservation.owner)

    def skip_until_changed(self, job_id: str, revision: int) -> None:
        """Leave the queue entry of `job_id` alone while it is still at `revision`."""
        entry = self.queue.get(job_id)
        if entry is not None and entry.revision == revision:
            entry.skip = True

    def assigned_from_queue(self, job_id: str, revision: int) -> None:
        """The queued job at `revision` was assigned: out of the queue now (its delete event may
        come later)."""
        entry = self.queue.get(job_id)
        if entry is not None and entry.revision == revision:
            del self.queue[job_id]
            self.with_parents.discard(job_id)

    def buried(self, node: str, gone_at: int) -> None:
        if self.dead.get(node) == gone_at:
            del self.dead[node]
