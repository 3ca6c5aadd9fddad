"""Resumable etcd watches: a Watch per prefix in a thread of its own, or a share of one
stream for everything under the daemon's prefix (WatchHub). Watches hands out either.

A handler gets every change under its prefix once, in revision order, across disconnects;
when etcd has compacted the history it would resume from, the handler re-reads the state
instead (on_resync) and the watch goes on from there.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Protocol

from lclusterd.cluster.kv import Event
from lclusterd.cluster.store import Store, WatchResponse, WatchStream
from lclusterd.errors import StoreUnavailable

log = logging.getLogger(__name__)


class WatchHandler(Protocol):
    def on_events(self, events: list[Event]) -> None:
        """Called from the watch thread, in revision order."""

    def on_resync(self) -> int:
        """The watched history was compacted: re-read the state and return its revision."""


class Callbacks:
    """A WatchHandler made of two functions."""

    def __init__(self, on_events: Callable[[list[Event]], None], on_resync: Callable[[], int]):
        self.on_events = on_events
        self.on_resync = on_resync


class Watches:
    """Hands out watches: a share of the one stream under the prefix given to share(), or a
    Watch of its own for anything else."""

    def __init__(self, store: Store):
        self._store = store
        self._hub: WatchHub | None = None

    def share(self, prefix: str) -> None:
        """From now on, watches under `prefix` share one etcd watch stream (see WatchHub)."""
        if self._hub is None:
            self._hub = WatchHub(self._store, prefix)
            self._hub.start()

    def watch(self, prefix: str, start_revision: int, handler: WatchHandler, name: str = "") -> Watch | SharedWatch:
        """Deliver every change under `prefix` from `start_revision` on, surviving disconnects."""
        hub = self._hub
        if hub is not None and prefix.startswith(hub.prefix):
            return hub.add(prefix, start_revision, handler)
        watch = Watch(self._store, prefix, start_revision, handler, name or prefix)
        watch.start()
        return watch

    def stop(self) -> None:
        if self._hub is not None:
            self._hub.stop()


class Watch:
    """A watch on one prefix in its own thread; after a disconnect it resumes from the revision
    after the last event it delivered, so no change is missed or delivered twice."""

    def __init__(self, store: Store, prefix: str, start_revision: int, handler: WatchHandler, name: str):
        self._store = store
        self._prefix = prefix
        self._next = start_revision
        self._handler = handler
        self._stopped = threading.Event()
        self._stream: WatchStream | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"watch {name}", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            if self._stream is not None:
                self._stream.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        backoff = 0.05
        while not self._stopped.is_set():
            try:
                with self._lock:
                    if self._stopped.is_set():
                        break
                    self._stream = self._store.open_watch(self._prefix, self._next)
                for response in self._stream:
                    if response.compact_revision:
                        log.warning("watch %s: history compacted at %d, re-reading", self._prefix, response.compact_revision)
                        self._next = self._handler.on_resync() + 1
                        break
                    if response.created:
                        self.connected.set()
                        backoff = 0.05
                    if response.canceled:
                        break
                    self._deliver(response)
            except StoreUnavailable as exc:
                if not self._stopped.is_set():
                    log.debug("watch %s: %s; resuming from revision %d", self._prefix, exc, self._next)
            except Exception:  # a handler bug must not end the watch for good
                log.exception("watch %s: handler failed", self._prefix)
            finally:
                if self._stream is not None:
                    self._stream.cancel()
                self.connected.clear()
            self._stopped.wait(backoff)
            backoff = min(backoff * 2, 1.0)

    def _deliver(self, response: WatchResponse) -> None:
        if response.events:
            self._handler.on_events(response.events)
            self._next = response.events[-1].mod_revision + 1
        elif not response.created and response.revision >= self._next:
            self._next = response.revision + 1


class SharedWatch:
    """One handler's share of a WatchHub: the changes under `prefix` from `start` on."""

    def __init__(self, hub: WatchHub, prefix: str, start: int, handler: WatchHandler):
        self.prefix, self.start, self.handler = prefix, start, handler
        self._hub = hub

    def stop(self) -> None:
        self._hub.remove(self)


class WatchHub:
    """One etcd watch on a whole key prefix, dispatched to the handlers of its sub-prefixes.

    A daemon follows eight prefixes (jobs/, queue/, assign/, kill/, nodes/, ...); with a watch
    each, one job's transaction came back as up to four watch responses, each received by the
    channel's thread and handed to that watch's own thread. Shared, a transaction is one
    response, read and dispatched by one thread (etcd also encodes it once per daemon).

    Handlers are called on the hub's thread, in revision order, and must not block for long.
    A handler added with a start revision the stream has already passed (events it should
    have seen were delivered before it joined) is re-read first: its on_resync runs at once
    under the hub's lock, and it gets the events after the revision that read saw.
    """

    def __init__(self, store: Store, prefix: str):
        self.prefix = prefix
        self._store = store
        self._lock = threading.RLock()  # handlers may add or stop shares from the hub's thread
        self._shares: list[SharedWatch] = []
        self._delivered = 0  # the revision of the last event delivered
        self._watch: Watch | None = None

    def start(self) -> None:
        self._delivered = self._store.revision()
        self._watch = Watch(self._store, self.prefix, self._delivered + 1, self, "shared")
        self._watch.start()

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()

    def add(self, prefix: str, start_revision: int, handler: WatchHandler) -> SharedWatch:
        with self._lock:
            if start_revision <= self._delivered:
                start_revision = handler.on_resync() + 1
            share = SharedWatch(self, prefix, start_revision, handler)
            self._shares = [*self._shares, share]
            return share

    def remove(self, share: SharedWatch) -> None:
        with self._lock:
            self._shares = [s for s in self._shares if s is not share]

    def on_events(self, events: list[Event]) -> None:
        with self._lock:
            for share in self._shares:
                mine = [e for e in events if e.mod_revision >= share.start and e.key.startswith(share.prefix)]
                if mine:
                    try:
                        share.handler.on_events(mine)
                    except Exception:  # one handler's bug must not cost the others their events
                        log.exception("watch %s: handler failed", share.prefix)
            self._delivered = events[-1].mod_revision

    def on_resync(self) -> int:
        """The stream's history was compacted: every share re-reads; the stream resumes after
        the oldest of their reads and each share skips what its own read already covered."""
        with self._lock:
            oldest = self._store.revision()
            for share in self._shares:
                share.start = share.handler.on_resync() + 1
                oldest = min(oldest, share.start - 1)
            self._delivered = oldest
            return oldest
