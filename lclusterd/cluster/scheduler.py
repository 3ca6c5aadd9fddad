"""The prime's scheduler: assigns queued jobs to nodes, in batches, from a view kept by watches,
and buries dead nodes (their unfinished jobs become LOST, or the next attempt when retries allow).

It also places jobs added on the prime itself at add time (`reserve`, called by Jobs.add): when
nothing is queued and a node has room, the add's own transaction writes the job ASSIGNED, with
the same prime guard, and it never enters the queue. That saves the queue entry, its two watch
events and a share of an assignment transaction per job; a job added while others wait, on a
full cluster, or on another node goes through the queue as before (so no queued job is
overtaken by a later add on the same prime).

The view (queue order, live nodes and their capacity, draining nodes, assignments per node) is
read once when the node becomes prime and then fed by four watches, so assigning never polls
or re-reads: the queue entry holds the QUEUED record, and its mod revision is the record's
(both are written in one transaction), which is exactly the guard the assignment needs.

Every write also compares the prime key's mod revision with the one this node won it at, so
a prime that was paused or cut off and has been replaced cannot assign or bury anything.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import OrderedDict

from lclusterd.cluster.jobs import Change, Jobs
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.linger import Linger
from lclusterd.cluster.node import requested_memory
from lclusterd.cluster.placement import PRIME_FIRST, Room, place
from lclusterd.cluster.store import Callbacks, Compare, Delete, Event, ModIs, Store, Watch
from lclusterd.errors import JobNotFound, StoreUnavailable
from lclusterd.model import JobRecord, JobSpec, NodeInfo

log = logging.getLogger(__name__)

BATCH = 32  # assignments per transaction (4 etcd ops each; etcd allows 128 per txn)
_IN_FLIGHT = sys.maxsize  # the revision of a reservation whose add transaction has not returned


class _Queued:
    """A queue entry: the QUEUED record's bytes and mod revision, parsed once when first looked
    at (a job that cannot be placed yet, pinned to a full node or a pool member, is looked at
    again on every pass while other jobs are assigned)."""

    __slots__ = ("raw", "revision", "_record")

    def __init__(self, raw: bytes, revision: int):
        self.raw, self.revision, self._record = raw, revision, None

    def record(self) -> JobRecord:
        if self._record is None:
            self._record = JobRecord.from_bytes(self.raw)  # never mutated: transitions make copies
        return self._record


def pick_node(capacity: dict[str, int], load: dict[str, int], prime: str) -> str | None:
    """Prime-first by slots only (kept for callers that know no memory): the prime while it has
    room, then the node with the most free slots; None when every node is full."""
    rooms = {n: Room(n, cap - load.get(n, 0), 0, 0) for n, cap in capacity.items()}
    return place(PRIME_FIRST, rooms, prime)[0]


class Scheduler:
    """Runs only while this node is prime: start(prime_revision) on election, stop() when deposed."""

    def __init__(self, store: Store, keys: Keys, jobs: Jobs, me: str, policy: str = PRIME_FIRST):
        self.store = store
        self.keys = keys
        self.jobs = jobs
        self.me = me
        self.policy = policy
        self._lock = threading.Lock()
        self._kick = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._watches: list[Watch] = []
        self._prime_revision = 0
        self._linger = Linger(BATCH)  # under load, more assignments per transaction
        self._reset_view()

    def _reset_view(self) -> None:
        self._queue: OrderedDict[str, _Queued] = OrderedDict()
        self._stale: dict[str, int] = {}  # id -> revision whose guard failed; skipped until it changes
        self._nodes: dict[str, NodeInfo] = {}  # live (registered) nodes
        self._draining: set[str] = set()
        self._assigned: dict[str, dict[str, int]] = {}  # node -> {id: requested memory} with an assign key
        self._pending: dict[str, tuple[str, int, int]] = {}  # id -> (node, revision, memory), event not seen yet
        self._assign_rev = 0  # last revision the assign watch delivered
        self._dead: dict[str, int] = {}  # node -> revision at which it was seen gone; to bury
        self._ready = False  # the view is loaded and followed: add-time placement may use it

    # -- life cycle ------------------------------------------------------------------------
    def start(self, prime_revision: int) -> None:
        """Begin scheduling as the prime whose key has `prime_revision` as its mod revision."""
        self._stopped.clear()
        self._reset_view()
        self._prime_revision = prime_revision
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._kick.set()
        for watch in self._watches:
            watch.stop()
        self._watches = []
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _guard(self) -> list[ModIs]:
        return [ModIs(self.keys.prime, self._prime_revision)]

    # -- add-time placement (called by Jobs.add on gRPC threads) ----------------------------
    def reserve(self, job_id: str, spec: JobSpec) -> tuple[str, list[Compare]] | None:
        """Place a job being added on this node, if it is the prime, nothing is queued and a
        node has room: (node, compares the add's transaction must hold), with the room held
        until `settle`. None: let the job go through the queue."""
        with self._lock:
            if not self._ready or self._stopped.is_set() or self._queue or self._dead:
                return None
            memory = spec.memory_bytes or 0
            node, _why = place(self.policy, self._rooms(), self.me, memory, spec.node, [])
            if node is None:
                return None
            self._pending[job_id] = (node, _IN_FLIGHT, memory)
            return node, self._guard()

    def settle(self, job_id: str, revision: int | None) -> None:
        """The add's transaction for a reserved job returned: written at `revision`, or not
        written (None: the room is given back)."""
        with self._lock:
            entry = self._pending.get(job_id)
            if entry is None:  # the assign watch delivered it already, or the view was reset
                return
            if revision is not None and revision > self._assign_rev:
                self._pending[job_id] = (entry[0], revision, entry[2])
            else:
                del self._pending[job_id]

    def _load_view(self) -> None:
        queue_rev = self._read_queue()
        nodes_rev = self._read_nodes()
        drain_rev = self._read_drains()
        assign_rev = self._read_assignments()
        with self._lock:  # nodes that died while there was no prime (or this one was elected)
            for node in self._assigned:
                if node not in self._nodes:
                    self._dead.setdefault(node, nodes_rev)
        self._watches = [
            self.store.watch(self.keys.queue_prefix, queue_rev + 1, Callbacks(self._queue_events, self._read_queue), "queue"),
            self.store.watch(self.keys.nodes_prefix, nodes_rev + 1, Callbacks(self._node_events, self._read_nodes), "nodes"),
            self.store.watch(self.keys.drain_prefix, drain_rev + 1, Callbacks(self._drain_events, self._read_drains), "drain"),
            self.store.watch(self.keys.assign_all_prefix, assign_rev + 1, Callbacks(self._assign_events, self._read_assignments), "assign"),
        ]
        with self._lock:
            self._ready = True

    def _read_queue(self) -> int:
        kvs, revision = self.store.get_prefix(self.keys.queue_prefix)
        with self._lock:
            self._queue = OrderedDict((Keys.last(kv.key), _Queued(kv.value, kv.mod_revision))
                                      for kv in sorted(kvs, key=lambda kv: kv.create_revision))
        self._kick.set()
        return revision

    def _read_nodes(self) -> int:
        kvs, revision = self.store.get_prefix(self.keys.nodes_prefix)
        with self._lock:
            before = set(self._nodes)
            self._nodes = {}
            for kv in kvs:
                self._set_node(kv.value)
            for node in before - set(self._nodes):
                self._dead.setdefault(node, revision)
        self._kick.set()
        return revision

    def _read_drains(self) -> int:
        kvs, revision = self.store.get_prefix(self.keys.drain_prefix, keys_only=True)
        with self._lock:
            self._draining = {Keys.last(kv.key) for kv in kvs}
        self._kick.set()
        return revision

    def _read_assignments(self) -> int:
        kvs, revision = self.store.get_prefix(self.keys.assign_all_prefix)
        with self._lock:
            self._assigned = {}
            for kv in kvs:
                node, job_id = self.keys.assign_parts(kv.key)
                self._assigned.setdefault(node, {})[job_id] = requested_memory(kv.value)
            self._assign_rev = revision
            self._pending = {i: p for i, p in self._pending.items() if p[1] > revision}
        self._kick.set()
        return revision

    def _set_node(self, raw: bytes) -> None:
        try:
            info = NodeInfo.from_bytes(raw)
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring a malformed node entry %r", raw[:80])
            return
        self._nodes[info.name] = info

    # -- watch handlers ------------------------------------------------------------------------
    def _queue_events(self, events: list[Event]) -> None:
        with self._lock:
            for event in events:
                job_id = Keys.last(event.key)
                if event.kind == "put":
                    self._queue[job_id] = _Queued(event.value, event.mod_revision)
                else:
                    self._queue.pop(job_id, None)
                    self._stale.pop(job_id, None)
        self._kick.set()

    def _node_events(self, events: list[Event]) -> None:
        with self._lock:
            for event in events:
                if event.kind == "put":
                    self._set_node(event.value)
                else:  # the lease expired or was revoked: the node is dead (or restarting)
                    name = Keys.last(event.key)
                    self._nodes.pop(name, None)
                    self._dead[name] = event.mod_revision
        self._kick.set()

    def _drain_events(self, events: list[Event]) -> None:
        with self._lock:
            for event in events:
                (self._draining.add if event.kind == "put" else self._draining.discard)(Keys.last(event.key))
        self._kick.set()

    def _assign_events(self, events: list[Event]) -> None:
        with self._lock:
            for event in events:
                node, job_id = self.keys.assign_parts(event.key)
                if event.kind == "put":
                    self._assigned.setdefault(node, {})[job_id] = requested_memory(event.value)
                else:
                    self._assigned.get(node, {}).pop(job_id, None)
                self._pending.pop(job_id, None)
            self._assign_rev = events[-1].mod_revision
        self._kick.set()

    # -- burying dead nodes ------------------------------------------------------------------
    def _bury_dead(self) -> None:
        """Each dead node's ASSIGNED/RUNNING jobs become LOST (or their next attempt). A record
        written after the node was seen gone belongs to its next incarnation: left alone."""
        with self._lock:
            dead = dict(self._dead)
        for node, gone_at in dead.items():
            kvs, _ = self.store.get_prefix(self.keys.assign_prefix(node), keys_only=True)
            changes: list[Change] = []
            stale_keys = []
            for kv in kvs:
                job_id = Keys.last(kv.key)
                try:
                    record, revision = self.jobs.get(job_id)
                except JobNotFound:
                    stale_keys.append(kv.key)
                    continue
                if record.terminal or record.node != node:
                    stale_keys.append(kv.key)
                elif revision < gone_at:
                    when = time.strftime("%Y-%m-%d %H:%M:%S")
                    reason = (f"node {node} was lost (its lease expired; seen gone at {when}) "
                              f"while attempt {record.attempt} was {record.state}")
                    changes.append(self.jobs.lose(record, revision, reason))
            results = self.jobs.commit(changes, self._guard())
            for change in changes:
                if results.get(change.job_id) is not None:
                    what = f"re-queued as attempt {change.record.attempt}" if change.record.state == "QUEUED" else "LOST"
                    log.warning("job %s: node %s was lost; %s", change.job_id, node, what)
            for key in stale_keys:
                self.store.txn(self._guard(), [Delete(key)])
            with self._lock:
                if self._dead.get(node) == gone_at:
                    del self._dead[node]

    # -- assigning ---------------------------------------------------------------------------
    def _rooms(self) -> dict[str, Room]:
        used: dict[str, tuple[int, int]] = {}
        for node, jobs in self._assigned.items():
            used[node] = (len(jobs), sum(jobs.values()))
        for node, _rev, memory in self._pending.values():
            count, mem = used.get(node, (0, 0))
            used[node] = (count + 1, mem + memory)
        rooms = {}
        for name, info in self._nodes.items():
            count, mem = used.get(name, (0, 0))
            rooms[name] = Room(name, info.capacity - count, info.memory_bytes - mem, info.memory_bytes, name in self._draining)
        return rooms

    def _next_batch(self) -> tuple[list[tuple[JobRecord, int, str]], list[tuple[JobRecord, int, str]]]:
        """(assignments, notes): up to BATCH (record, revision, node) to assign, and (record,
        revision, why) for jobs no node can take whose record does not say so yet."""
        batch, notes = [], []
        with self._lock:
            rooms = self._rooms()
            # while every ready node is full nothing can be placed (and scanning a long queue
            # would only re-parse it); jobs no node could ever take get their note later
            free = sum(max(r.slots, 0) for r in rooms.values() if not r.draining)
            for job_id, entry in self._queue.items():
                if free <= 0:
                    break
                revision = entry.revision
                if self._stale.get(job_id) == revision:
                    continue
                try:
                    record = entry.record()
                except Exception as exc:  # a malformed entry: never assign it
                    log.warning("skipping queue entry %s: %s", job_id, exc)
                    self._stale[job_id] = revision
                    continue
                memory = record.spec.memory_bytes or 0
                avoid = [a.get("node", "") for a in record.history]
                node, why = place(self.policy, rooms, self.me, memory, record.spec.node, avoid)
                if node is None:
                    if why and why != record.waiting:
                        notes.append((record, revision, why))
                        self._stale[job_id] = revision  # until the note's own event arrives
                    continue
                rooms[node].take(memory)
                free -= 1
                batch.append((record, revision, node))
                if len(batch) >= BATCH:
                    break
        return batch, notes

    def _assign(self, batch: list[tuple[JobRecord, int, str]], notes: list[tuple[JobRecord, int, str]]) -> None:
        changes = [self.jobs.assign(record, revision, node) for record, revision, node in batch]
        changes += [self.jobs.note_waiting(record, revision, why) for record, revision, why in notes]
        results = self.jobs.commit(changes, self._guard())
        with self._lock:
            for change in changes:
                new_revision = results.get(change.job_id)
                if new_revision is None:
                    self._stale[change.job_id] = change.expect_revision
                    continue
                if change.record.state != "ASSIGNED":  # a note: the entry stays queued
                    continue
                entry = self._queue.get(change.job_id)
                if entry is not None and entry.revision == change.expect_revision:
                    del self._queue[change.job_id]
                if new_revision > self._assign_rev:
                    self._pending[change.job_id] = (change.record.node, new_revision, change.record.spec.memory_bytes or 0)
        if changes and all(results.get(c.job_id) is None for c in changes) and not self._still_prime():
            log.warning("scheduler: the prime key is no longer ours; assigning nothing more")
            self._stopped.set()

    def _still_prime(self) -> bool:
        kv = self.store.get(self.keys.prime)
        return kv is not None and kv.mod_revision == self._prime_revision

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._load_view()
                break
            except StoreUnavailable as exc:
                log.warning("scheduler: %s", exc)
                self._stopped.wait(0.5)
        while not self._stopped.is_set():
            self._kick.wait(1.0)
            self._kick.clear()
            try:
                if self._dead:
                    self._bury_dead()
            except StoreUnavailable as exc:
                log.warning("scheduler: %s", exc)
                self._stopped.wait(0.5)
                self._kick.set()
                continue
            while not self._stopped.is_set():
                self._linger.before_batch(len(self._queue), self._stopped)
                batch, notes = self._next_batch()
                if not batch and not notes:
                    break
                try:
                    self._assign(batch, notes)
                    self._linger.sent()
                except StoreUnavailable as exc:
                    log.warning("scheduler: %s", exc)
                    self._stopped.wait(0.5)
                    break
                except Exception:
                    log.exception("scheduler: assigning failed")
                    self._stopped.wait(0.5)
                    break
