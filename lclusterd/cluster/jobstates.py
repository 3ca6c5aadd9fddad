"""JobStates: the state, node and owner of every job in etcd, followed through the node's jobs/
watch. Three readers: the metrics (jobs by state and node, read at scrape time: a scrape never
scans etcd), the Events call (every change of a job's state, as it happens) and admission's
quota (how many jobs an owner has stored, `owned_by`).

Loaded once at start (jobs/ read in pages), then kept by a share of the node's one watch
stream; after a compaction it re-reads, and listeners get the changes the re-read shows. A
put that leaves a job's state as it was (a note on why it waits) is no change; a record
retention removes leaves the tally without a change. The tally reads only the state and the
node of a record (a JSON decode); a value that is not JSON with a known state is skipped, and
a change told to listeners is decoded strictly first (decode.py, which logs and counts what
it skips).

Memory: a few hundred bytes per job record kept in etcd. Time: one JSON decode per put of a
job record, on the watch thread (and a strict decode for a change while an Events call listens).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from lclusterd.cluster import decode
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Event
from lclusterd.cluster.store import Store
from lclusterd.cluster.watch import Callbacks, Watches
from lclusterd.errors import RecordError
from lclusterd.model import NODE_NAME, JobRecord
from lclusterd.states import STATES

FEED_LIMIT = 10_000  # changes a listener may fall behind before its feed is cut off
RELOAD_PAGE = 1000  # job records per read when loading jobs/ (about 1 MB)
_STATE_NAMES = {state: state for state in STATES}  # one string object per state


@dataclass(frozen=True)
class StateChange:
    """A job entered `record.state`; `previous` is the state the watch saw before ("" for a
    job new to it); `seen_at` when this node saw the change."""

    record: JobRecord
    previous: str
    seen_at: float


class Feed:
    """One listener's changes, oldest first, at most FEED_LIMIT; past that it is cut off
    (`overflowed`) and gets nothing more."""

    def __init__(self, limit: int = FEED_LIMIT):
        self._items: deque[StateChange] = deque()
        self._limit = limit
        self._ready = threading.Condition()
        self.overflowed = False

    def put(self, change: StateChange) -> None:
        with self._ready:
            if len(self._items) >= self._limit:
                self.overflowed = True
            elif not self.overflowed:
                self._items.append(change)
            self._ready.notify()

    def take(self, timeout: float) -> list[StateChange]:
        """The changes so far (waits up to `timeout` seconds for one; [] if none came)."""
        with self._ready:
            if not self._items and not self.overflowed:
                self._ready.wait(timeout)
            items = list(self._items)
            self._items.clear()
            return items

    def wake(self) -> None:
        """Make a waiting take() return now (the listener is going away)."""
        with self._ready:
            self._ready.notify_all()


def _owner(data: dict[str, Any]) -> str:
    owner = data.get("owner")
    return sys.intern(owner) if isinstance(owner, str) and len(owner) <= 64 else ""


def state_and_node(raw: bytes) -> dict[str, Any] | None:
    """The record's JSON when it has a known state and a node that is empty or a node name
    (the metrics' labels come from these); None otherwise."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("state") not in _STATE_NAMES:
        return None
    node = data.get("node") or ""
    return data if isinstance(node, str) and (not node or NODE_NAME.match(node)) else None


class JobStates:
    def __init__(self, store: Store, watches: Watches, keys: Keys):
        self._store = store
        self._watches = watches
        self._keys = keys
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[str, str, str]] = {}  # job id -> (state, node, owner)
        self._counts: dict[tuple[str, str, str], int] = {}  # (state, node, owner) -> jobs
        self._owned: dict[str, int] = {}  # owner -> jobs stored (moves only as jobs come and go)
        self._feeds: list[Feed] = []
        self._watch = None

    def start(self) -> None:
        """Read every job record, then follow jobs/ (StoreUnavailable if etcd cannot be read)."""
        revision = self._reload()
        self._watch = self._watches.watch(self._keys.jobs_prefix, revision + 1, Callbacks(self._on_events, self._reload),
                                          "job states")

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()

    def counts(self) -> dict[tuple[str, str], int]:
        """(state, node) -> jobs, node "" for jobs not placed; only pairs with jobs."""
        with self._lock:
            counted = [(key, count) for key, count in self._counts.items() if count]
        found: dict[tuple[str, str], int] = {}
        for (state, node, _who), count in counted:  # summed here, at scrape time, not at each change
            found[state, node] = found.get((state, node), 0) + count
        return found

    def owned_by(self, owner: str) -> int:
        """How many job records of `owner` etcd holds, any state (as far as the watch has told)."""
        return self._owned.get(owner, 0)

    @contextmanager
    def listen(self) -> Iterator[Feed]:
        """A Feed of every state change from now on, until the block ends."""
        feed = Feed()
        with self._lock:
            self._feeds.append(feed)
        try:
            yield feed
        finally:
            with self._lock:
                self._feeds.remove(feed)

    # -- the watch -----------------------------------------------------------------------------
    def _on_events(self, events: list[Event]) -> None:
        now = time.time()
        with self._lock:
            for event in events:
                data = self._decoded(event.key, event.value, event.mod_revision) if event.kind == "put" else None
                self._set(Keys.last(event.key), data, now, event.key, event.mod_revision)

    def _reload(self) -> int:
        """Read jobs/ afresh: the tally becomes what etcd holds; listeners get what changed.
        In pages of RELOAD_PAGE records at one revision, each folded in as it arrives: one read
        of a long history outgrows etcd's deadline, and holding every decoded record at once
        costs this node hundreds of MB it never gives back."""
        prefix = self._keys.jobs_prefix
        start, end = prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)
        seen: set[str] = set()
        revision = 0
        while True:
            kvs, revision = self._store.get_range(start, end, RELOAD_PAGE, revision)
            now = time.time()
            with self._lock:
                for kv in kvs:
                    job_id = Keys.last(kv.key)
                    seen.add(job_id)
                    self._set(job_id, self._decoded(kv.key, kv.value, kv.mod_revision), now, kv.key, kv.mod_revision)
            if len(kvs) < RELOAD_PAGE:
                break
            start = kvs[-1].key + "\0"
        with self._lock:
            for job_id in [job_id for job_id in self._jobs if job_id not in seen]:
                self._set(job_id, None, time.time())
        return revision

    @staticmethod
    def _decoded(key: str, raw: bytes, revision: int) -> dict[str, Any] | None:
        data = state_and_node(raw)
        if data is None:
            decode.skipped(key, revision, RecordError("the value is not JSON with a known job state"))
        return data

    def _set(self, job_id: str, data: dict[str, Any] | None, now: float, key: str = "", revision: int = 0) -> None:
        """The job's record is now `data` (None: gone, or unreadable), read at `key` with mod
        revision `revision`. Hold the lock."""
        old = self._jobs.get(job_id)
        new = (_STATE_NAMES[data["state"]], sys.intern(data.get("node") or ""), _owner(data)) if data is not None else None
        if new == old:
            return
        if old is not None:
            self._counts[old] -= 1
            if new is None or new[2] != old[2]:
                self._owned[old[2]] -= 1
        if new is None:
            del self._jobs[job_id]
            return
        self._jobs[job_id] = new
        self._counts[new] = self._counts.get(new, 0) + 1
        if old is None or old[2] != new[2]:
            self._owned[new[2]] = self._owned.get(new[2], 0) + 1
        if self._feeds and (old is None or old[0] != new[0]):
            self._tell(job_id, data, old[0] if old else "", now, key, revision)

    def _tell(self, job_id: str, data: dict[str, Any], previous: str, now: float, key: str, revision: int) -> None:
        """Give every listener the change (the record decoded strictly, once for all of them)."""
        try:
            record = JobRecord.from_json(data, job_id)
        except RecordError as error:
            decode.skipped(key, revision, error)
            return
        change = StateChange(record, previous, now)
        for feed in self._feeds:
            feed.put(change)
