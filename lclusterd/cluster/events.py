"""JobEvents: one watch on jobs/ that wakes whoever waits for a particular job to change.

Used by Wait and Logs(follow): a waiter subscribes before it reads the record, so a change
between the read and the wait is never missed. A pool's Wait subscribes to all its members at
once (one flag set by any of them). Costs a dict lookup per job change.

It also remembers the newest record the watch delivered for the RECENT most recently changed
jobs. A subscription starts from that record when there is one: since the memory and the
wake-ups are updated under one lock, every later change still wakes the subscriber, so a Wait
needs no etcd read at all for a job that changed since this node started (the usual case).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from contextlib import contextmanager
from typing import Iterator

from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Event
from lclusterd.cluster.store import Store
from lclusterd.cluster.watch import Watch, Watches


RECENT = 10_000  # records remembered (a few MB)


class Subscription:
    """Set whenever jobs/<id> changes; `seen` holds the newest record bytes the watch delivered
    and their mod revision (bytes None when the watch has not seen the job, or after a resync:
    then read the store). One attribute, replaced whole by the watch thread, so a waiter that
    reads it once never pairs one record with another's revision (and so never skips the newer)."""

    def __init__(self, changed: threading.Event | None = None, index: int = 0, touched: deque[int] | None = None) -> None:
        self.changed = changed or threading.Event()
        self.seen: tuple[bytes | None, int] = (None, 0)
        # in a group (subscribe_many): its place, and the group's queue of the places whose job
        # changed, so a waiter looks at those only and not at every member on each wake-up
        self.index, self.touched = index, touched

    @property
    def latest(self) -> bytes | None:
        return self.seen[0]

    @property
    def revision(self) -> int:
        return self.seen[1]

    def wait(self, timeout: float | None) -> bool:
        return self.changed.wait(timeout)

    def is_set(self) -> bool:
        return self.changed.is_set()

    def clear(self) -> None:
        self.changed.clear()


class JobEvents:
    def __init__(self, store: Store, watches: Watches, keys: Keys):
        self._store = store
        self._watches = watches
        self._keys = keys
        self._lock = threading.Lock()
        self._waiters: dict[str, set[Subscription]] = {}
        self._recent: OrderedDict[str, tuple[bytes, int]] = OrderedDict()  # id -> (record, revision)
        self._watch: Watch | None = None

    def start(self) -> None:
        self._watch = self._watches.watch(self._keys.jobs_prefix, self._store.revision() + 1, self, "jobs")

    def stop(self) -> None:
        if self._watch:
            self._watch.stop()

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[Subscription]:
        """A Subscription set whenever jobs/<job_id> changes (clear it before each wait)."""
        with self.subscribe_many([job_id], group=False) as (flag,):
            yield flag

    @contextmanager
    def subscribe_many(self, job_ids: list[str], group: bool = True) -> Iterator[list[Subscription]]:
        """One Subscription per job (in the order given), all sharing one `changed` flag and
        (with `group`) one `touched` queue: a wait on any of them wakes when any of the jobs
        changes, and the queue says which (an index is put there after its `seen`, and must be
        taken out by the waiter); each keeps its own `seen`."""
        shared, touched = threading.Event(), deque() if group else None
        flags = [Subscription(shared, index, touched) for index in range(len(job_ids))]
        with self._lock:
            for job_id, flag in zip(job_ids, flags):
                self._waiters.setdefault(job_id, set()).add(flag)
                flag.seen = self._recent.get(job_id, (None, 0))
        try:
            yield flags
        finally:
            with self._lock:
                for job_id, flag in zip(job_ids, flags):
                    waiting = self._waiters.get(job_id)
                    if waiting is not None:
                        waiting.discard(flag)
                        if not waiting:
                            del self._waiters[job_id]

    def recent(self, job_id: str) -> tuple[bytes, int] | None:
        """The newest record of `job_id` the watch delivered and its mod revision, if it still
        remembers one. It may trail etcd by the watch's delay: good for what never changes in
        a record (its owner, that it is a job) and for a waiter that follows later changes."""
        with self._lock:
            return self._recent.get(job_id)

    def on_events(self, events: list[Event]) -> None:
        with self._lock:
            recent = self._recent
            for event in events:
                job_id = Keys.last(event.key)
                if event.kind == "put":
                    recent[job_id] = (event.value, event.mod_revision)
                    recent.move_to_end(job_id)
                    if len(recent) > RECENT:
                        recent.popitem(last=False)
                else:
                    recent.pop(job_id, None)
                for flag in self._waiters.get(job_id, ()):
                    if event.kind == "put" and event.mod_revision > flag.seen[1]:
                        flag.seen = (event.value, event.mod_revision)
                    if flag.touched is not None:
                        flag.touched.append(flag.index)
                    flag.changed.set()

    def on_resync(self) -> int:
        with self._lock:  # wake everyone: they re-read
            self._recent.clear()
            for flags in self._waiters.values():
                for flag in flags:
                    flag.seen = (None, flag.seen[1])
                    if flag.touched is not None:
                        flag.touched.append(flag.index)
                    flag.changed.set()
        return self._store.revision()
