"""The prime's scheduler: assigns queued jobs to nodes, in batches, from its ClusterView (view.py),
and buries dead nodes (their unfinished jobs become LOST, or the next attempt when retries allow).

With --max-running-per-user N (the prime's), a user's queued jobs wait while N of theirs are
assigned or running, and later jobs of other users are placed past them, so that one user's
long queue cannot hold the cluster for everyone (their record's `waiting` says so).

It also places jobs added on the prime itself at add time (`reserve`, asked by admission.py):
when nothing is queued and a node has room, the add's own transaction writes the job ASSIGNED,
with the same prime guard, and it never enters the queue. That saves the queue entry, its two
watch events and a share of an assignment transaction per job; a job added while others wait,
on a full cluster, or on another node goes through the queue as before (so no queued job is
overtaken by a later add on the same prime).

Every write also compares the prime key's mod revision with the one this node won it at, so
a prime that was paused or cut off and has been replaced cannot assign or bury anything.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from lclusterd.cluster.dependencies import Parents, verdict
from lclusterd.cluster.jobs import Change, Jobs
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Compare, Delete, ModIs
from lclusterd.cluster.linger import Linger
from lclusterd.cluster.placement import PRIME_FIRST, Needs, Placement
from lclusterd.cluster.store import Store
from lclusterd.cluster.view import IN_FLIGHT, ClusterView, Reservation
from lclusterd.cluster.watch import Watches
from lclusterd.errors import JobNotFound, RecordError, StoreUnavailable
from lclusterd.model import ASSIGNED, QUEUED, JobRecord, JobSpec

log = logging.getLogger(__name__)

BATCH = 32  # assignments per transaction (4 etcd ops each; etcd allows 128 per txn)


@dataclass(frozen=True)
class Assignment:
    record: JobRecord
    revision: int  # the QUEUED record's mod revision: the assignment's guard
    node: str


@dataclass(frozen=True)
class WaitNote:
    """Why no node can take a queued job as things stand, for its record."""

    record: JobRecord
    revision: int
    why: str


class Scheduler:
    """Runs only while this node is prime: start(prime_revision) on election, stop() when deposed."""

    def __init__(self, store: Store, watches: Watches, keys: Keys, jobs: Jobs, me: str, policy: str = PRIME_FIRST,
                 max_running_per_user: int = 0):
        self.max_running_per_user = max_running_per_user  # 0: no limit
        self.store = store
        self.keys = keys
        self.jobs = jobs
        self.me = me
        self.policy = policy
        self._kick = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._prime_revision = 0
        self._linger = Linger(BATCH)  # under load, more assignments per transaction
        self.parents = Parents(jobs)
        self.view = ClusterView(store, watches, keys, on_change=self._kick.set, policy=policy, prime=me,
                                count_owners=max_running_per_user > 0)

    # -- life cycle ------------------------------------------------------------------------
    def start(self, prime_revision: int) -> None:
        """Begin scheduling as the prime whose key has `prime_revision` as its mod revision."""
        self._stopped.clear()
        with self.view.lock:
            self.view.reset()
        self._prime_revision = prime_revision
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._kick.set()
        self.view.stop()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _guard(self) -> list[Compare]:
        return [ModIs(self.keys.prime, self._prime_revision)]

    # -- add-time placement (asked by admission on gRPC threads) -------------------------------
    def reserve(self, job_id: str, spec: JobSpec, owner: str = "") -> Placement | None:
        """Place `owner`'s job being added on this node, if it is the prime, nothing is queued,
        the owner is under their limit and a node has room; the room is held until `settle`.
        None: let the job go through the queue."""
        view = self.view
        with view.lock:
            if not view.ready or self._stopped.is_set() or view.queue or view.dead or self._at_cap(owner):
                return None
            memory = spec.memory_bytes or 0
            node, _why = view.place(memory, spec.node, needs=Needs.of(spec), image=spec.image)
            if node is None:
                return None
            view.reserve(job_id, Reservation(node, IN_FLIGHT, memory, owner=owner))
            return Placement(node, self._guard())

    def _at_cap(self, owner: str) -> bool:
        cap = self.max_running_per_user
        return bool(cap) and self.view.running_of(owner) >= cap

    def settle(self, job_id: str, revision: int | None) -> None:
        """The add's transaction for a reserved job returned: written at `revision`, or not
        written (None: the room is given back)."""
        with self.view.lock:
            self.view.settle(job_id, revision)

    # -- burying dead nodes ------------------------------------------------------------------
    def _bury_dead(self) -> None:
        """Each dead node's ASSIGNED/RUNNING jobs become LOST (or their next attempt). A record
        written after the node was seen gone belongs to its next incarnation: left alone."""
        with self.view.lock:
            dead = dict(self.view.dead)
        for node, gone_at in dead.items():
            changes, stale_keys = self._losses(node, gone_at)
            results = self.jobs.commit(changes, self._guard())
            for change in changes:
                if results.get(change.job_id) is not None:
                    what = f"re-queued as attempt {change.record.attempt}" if change.record.state == QUEUED else "LOST"
                    log.warning("job %s: node %s was lost; %s", change.job_id, node, what)
            for key in stale_keys:
                self.store.txn(self._guard(), [Delete(key)])
            with self.view.lock:
                self.view.buried(node, gone_at)

    def _losses(self, node: str, gone_at: int) -> tuple[list[Change], list[str]]:
        """The changes that bury `node`'s jobs, and the assignment keys that name no job of it."""
        kvs, _ = self.store.get_prefix(self.keys.assign_prefix(node), keys_only=True)
        changes: list[Change] = []
        stale_keys = []
        for kv in kvs:
            try:
                record, revision = self.jobs.get(Keys.last(kv.key))
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
        return changes, stale_keys

    # -- assigning ---------------------------------------------------------------------------
    def _next_batch(self) -> tuple[list[Assignment], list[WaitNote]]:
        """Up to BATCH assignments, and notes for jobs no node can take whose record does not
        say so yet. Each assignment holds its room as a reservation (IN_FLIGHT) from here until
        `_assign` settles it, so the next job of the batch is placed around it."""
        batch: list[Assignment] = []
        notes: list[WaitNote] = []
        view = self.view
        full: set[str] = set()  # arrays found at their %K in this pass: their other members are passed over at once
        capped: set[str] = set()  # owners found at --max-running-per-user in this pass: likewise
        with view.lock:
            for job_id, entry in view.queue.items():
                # while every ready node is full nothing can be placed (and scanning a long
                # queue would only re-parse it); jobs no node could ever take get their note later
                if view.free_slots() <= 0 or len(batch) >= BATCH:
                    break
                if entry.skip or entry.limited in full or entry.owner in capped:
                    continue
                try:
                    record = entry.record()
                except RecordError:  # not a record lclusterd wrote (logged once): never assign it
                    entry.skip = True
                    continue
                if record.spec.after and not entry.parents_ok:
                    continue  # waits for its -after parents (_check_parents)
                entry.limited = limited = record.pool if record.array_limit else ""
                if limited and view.at_limit(limited, record.array_limit):
                    full.add(limited)
                    continue  # its array has %K members assigned or running
                if self.max_running_per_user and self._capped(entry, record, notes):
                    capped.add(record.owner)
                    continue
                memory = record.spec.memory_bytes or 0
                avoid = [a.get("node", "") for a in record.history]
                node, why = view.place(memory, record.spec.node, avoid, Needs.of(record.spec), record.spec.image)
                if node is None:
                    if why and why != record.waiting:
                        notes.append(WaitNote(record, entry.revision, why))
                        entry.skip = True  # until the note's own event arrives
                    continue
                view.reserve(job_id, Reservation(node, IN_FLIGHT, memory, limited, record.owner))
                batch.append(Assignment(record, entry.revision, node))
        return batch, notes

    def _capped(self, entry, record: JobRecord, notes: list[WaitNote]) -> bool:
        """Whether the job's owner is at --max-running-per-user (then a note says so, once)."""
        entry.owner = record.owner
        if not self._at_cap(record.owner):
            return False
        why = f"its owner {record.owner or '(none)'} has {self.max_running_per_user} jobs running (--max-running-per-user)"
        if why != record.waiting:
            notes.append(WaitNote(record, entry.revision, why))
            entry.skip = True  # until the note's own event arrives
        return True

    def _assign(self, batch: list[Assignment], notes: list[WaitNote]) -> None:
        changes = [self.jobs.assign(a.record, a.revision, a.node) for a in batch]
        changes += [self.jobs.note_waiting(n.record, n.revision, n.why) for n in notes]
        try:
            results = self.jobs.commit(changes, self._guard())
        except BaseException:
            # unknown whether it landed: give the rooms back; what did land comes as events
            with self.view.lock:
                for a in batch:
                    self.view.settle(a.record.id, None)
            raise
        with self.view.lock:
            for change in changes:
                self._assigned(change, results.get(change.job_id))
        if changes and all(results.get(c.job_id) is None for c in changes) and not self._still_prime():
            log.warning("scheduler: the prime key is no longer ours; assigning nothing more")
            self._stopped.set()

    def _assigned(self, change: Change, revision: int | None) -> None:
        """One change of a batch came back (written at `revision`, or None: not written). An
        assignment's reservation stays until the assign watch shows it, or goes now."""
        view = self.view
        assignment = change.record.state == ASSIGNED  # (a note leaves the entry queued)
        if revision is None:
            view.skip_until_changed(change.job_id, change.expect_revision)
        elif assignment:
            view.assigned_from_queue(change.job_id, change.expect_revision)
        if assignment:
            view.settle(change.job_id, revision)

    def _still_prime(self) -> bool:
        kv = self.store.get(self.keys.prime)
        return kv is not None and kv.mod_revision == self._prime_revision

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.view.load()
                break
            except StoreUnavailable as exc:
                log.warning("scheduler: %s", exc)
                self._stopped.wait(0.5)
        while not self._stopped.is_set():
            self._kick.wait(1.0)
            self._kick.clear()
            try:
                if self.view.dead:
                    self._bury_dead()
                self._check_parents()
            except StoreUnavailable as exc:
                log.warning("scheduler: %s", exc)
                self._stopped.wait(0.5)
                self._kick.set()
                continue
            self._assign_while_queued()

    # -- dependencies (-after) -----------------------------------------------------------------
    def _check_parents(self) -> None:
        """For each queued job with -after parents not yet found done: read their states
        (dependencies.py) and let it start (parents_ok), cancel it, or note what it waits for."""
        view = self.view
        with view.lock:  # (only the entries that may name parents: not the whole queue on every pass)
            entries = [view.queue.get(job_id) for job_id in view.with_parents]
            waiting = [(entry, entry.record()) for entry in entries
                       if entry is not None and not entry.skip and not entry.parents_ok and _has_parents(entry)]
        if not waiting:
            return
        states = self.parents.states(list(dict.fromkeys(p for _, record in waiting for p in record.spec.after)))
        changes = []
        for entry, record in waiting:
            decided = verdict([states[p] for p in record.spec.after])
            if decided.ready:
                entry.parents_ok = True
            elif decided.cancel:
                changes.append(self.jobs.cancel(record, entry.revision, decided.cancel))
            elif decided.waiting != record.waiting:
                changes.append(self.jobs.note_waiting(record, entry.revision, decided.waiting))
        if changes:
            results = self.jobs.commit(changes, self._guard())
            for change in changes:
                if change.record.terminal and results.get(change.job_id) is not None:
                    log.info("job %s: %s", change.job_id, change.record.error)

    def _assign_while_queued(self) -> None:
        while not self._stopped.is_set():
            self._linger.before_batch(len(self.view.queue), self._stopped)
            batch, notes = self._next_batch()
            if not batch and not notes:
                return
            try:
                self._assign(batch, notes)
                self._linger.sent()
            except StoreUnavailable as exc:
                log.warning("scheduler: %s", exc)
                self._stopped.wait(0.5)
                return
            except Exception:
                log.exception("scheduler: assigning failed")
                self._stopped.wait(0.5)
                return


def _has_parents(entry) -> bool:
    try:
        return entry.has_parents()
    except RecordError:  # logged once; the queue pass skips it too
        return False
