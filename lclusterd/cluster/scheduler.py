"""The prime's scheduler: assigns queued jobs to nodes, in batches, from a view kept by watches.

The view (queue order, nodes and their capacity, assignments per node) is read once when the
node becomes prime and then fed by three watches, so assigning never polls or re-reads: the
queue entry holds the QUEUED record, and its mod revision is the record's (both are written
in one transaction), which is exactly the guard the assignment needs.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.store import Callbacks, Event, Store, Watch
from lclusterd.errors import StoreUnavailable
from lclusterd.model import JobRecord, NodeInfo

log = logging.getLogger(__name__)

BATCH = 32  # assignments per transaction (4 etcd ops each; etcd allows 128 per txn)


def pick_node(capacity: dict[str, int], load: dict[str, int], prime: str) -> str | None:
    """The prime first while it has room (the original's "primed node"), then the node with the
    most free slots; None when every node is full."""
    if load.get(prime, 0) < capacity.get(prime, 0):
        return prime
    free, name = max(((cap - load.get(n, 0), n) for n, cap in capacity.items()), default=(0, None))
    return name if free > 0 else None


class Scheduler:
    """Runs only while this node is prime: start() on election, stop() when deposed."""

    def __init__(self, store: Store, keys: Keys, jobs: Jobs, me: str):
        self.store = store
        self.keys = keys
        self.jobs = jobs
        self.me = me
        self._lock = threading.Lock()
        self._kick = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._watches: list[Watch] = []
        # the view
        self._queue: OrderedDict[str, tuple[bytes, int]] = OrderedDict()  # id -> (record, revision)
        self._stale: dict[str, int] = {}  # id -> revision whose guard failed; skipped until it changes
        self._capacity: dict[str, int] = {}
        self._assigned: dict[str, set[str]] = {}  # node -> ids with an assign key
        self._pending: dict[str, tuple[str, int]] = {}  # id -> (node, revision) assigned, event not seen yet
        self._assign_rev = 0  # last revision the assign watch delivered

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._stopped.clear()
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

    def _load_view(self) -> None:
        queue_rev = self._read_queue()
        nodes_rev = self._read_nodes()
        assign_rev = self._read_assignments()
        self._watches = [
            self.store.watch(self.keys.queue_prefix, queue_rev + 1, Callbacks(self._queue_events, self._read_queue), "queue"),
            self.store.watch(self.keys.nodes_prefix, nodes_rev + 1, Callbacks(self._node_events, self._read_nodes), "nodes"),
            self.store.watch(self.keys.assign_all_prefix, assign_rev + 1, Callbacks(self._assign_events, self._read_assignments), "assign"),
        ]

    def _read_queue(self) -> int:
        kvs, revision = self.store.get_prefix(self.keys.queue_prefix)
        with self._lock:
            self._queue = OrderedDict((Keys.last(kv.key), (kv.value, kv.mod_revision)) for kv in sorted(kvs, key=lambda kv: kv.create_revision))
        self._kick.set()
        return revision

    def _read_nodes(self) -> int:
        kvs, revision = self.store.get_prefix(self.keys.nodes_prefix)
        with self._lock:
            self._capacity = {}
            for kv in kvs:
                self._set_node(kv.value)
        self._kick.set()
        return revision

    def _read_assignments(self) -> int:
        kvs, revision = self.store.get_prefix(self.keys.assign_all_prefix, keys_only=True)
        with self._lock:
            self._assigned = {}
            for kv in kvs:
                node, job_id = self.keys.assign_parts(kv.key)
                self._assigned.setdefault(node, set()).add(job_id)
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
        self._capacity[info.name] = info.capacity

    # -- watch handlers ------------------------------------------------------------------------
    def _queue_events(self, events: list[Event]) -> None:
        with self._lock:
            for event in events:
                job_id = Keys.last(event.key)
                if event.kind == "put":
                    self._queue[job_id] = (event.value, event.mod_revision)
                else:
                    self._queue.pop(job_id, None)
                    self._stale.pop(job_id, None)
        self._kick.set()

    def _node_events(self, events: list[Event]) -> None:
        with self._lock:
            for event in events:
                if event.kind == "put":
                    self._set_node(event.value)
                else:
                    self._capacity.pop(Keys.last(event.key), None)
        self._kick.set()

    def _assign_events(self, events: list[Event]) -> None:
        with self._lock:
            for event in events:
                node, job_id = self.keys.assign_parts(event.key)
                if event.kind == "put":
                    self._assigned.setdefault(node, set()).add(job_id)
                else:
                    self._assigned.get(node, set()).discard(job_id)
                self._pending.pop(job_id, None)
            self._assign_rev = events[-1].mod_revision
        self._kick.set()

    # -- assigning ---------------------------------------------------------------------------
    def _load(self) -> dict[str, int]:
        load = {node: len(ids) for node, ids in self._assigned.items()}
        for node, _ in self._pending.values():
            load[node] = load.get(node, 0) + 1
        return load

    def _next_batch(self) -> list[tuple[str, bytes, int, str]]:
        batch = []
        with self._lock:
            load = self._load()
            for job_id, (raw, revision) in self._queue.items():
                if self._stale.get(job_id) == revision:
                    continue
                node = pick_node(self._capacity, load, self.me)
                if node is None:
                    break
                load[node] = load.get(node, 0) + 1
                batch.append((job_id, raw, revision, node))
                if len(batch) >= BATCH:
                    break
        return batch

    def _assign(self, batch: list[tuple[str, bytes, int, str]]) -> None:
        changes = []
        for job_id, raw, revision, node in batch:
            try:
                changes.append(self.jobs.assign(JobRecord.from_bytes(raw), revision, node))
            except Exception as exc:  # a malformed or non-QUEUED entry: never assign it
                log.warning("skipping queue entry %s: %s", job_id, exc)
                with self._lock:
                    self._stale[job_id] = revision
        results = self.jobs.commit(changes)
        with self._lock:
            for change in changes:
                new_revision = results.get(change.job_id)
                if new_revision is None:
                    self._stale[change.job_id] = change.expect_revision
                    continue
                if self._queue.get(change.job_id, (b"", -1))[1] == change.expect_revision:
                    del self._queue[change.job_id]
                if new_revision > self._assign_rev:
                    self._pending[change.job_id] = (change.record.node, new_revision)

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
            while not self._stopped.is_set():
                batch = self._next_batch()
                if not batch:
                    break
                try:
                    self._assign(batch)
                except StoreUnavailable as exc:
                    log.warning("scheduler: %s", exc)
                    self._stopped.wait(0.5)
                    break
                except Exception:
                    log.exception("scheduler: assigning failed")
                    self._stopped.wait(0.5)
                    break
