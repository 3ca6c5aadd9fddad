"""Prime election: the node that creates the `prime` key under its lease is the prime.

Campaign = txn(create(prime) == 0 -> put prime=<node> under our lease) (the python-etcd3
Lock pattern). A watch on the key wakes the loser when it is deleted; a slow re-check covers
a missed wake-up. While prime, `on_elected` has been called once; when the key stops being
ours (lease lost, deleted), `on_deposed` is called before anything else happens.

`on_elected(revision)` gets the prime key's mod revision: the scheduler compares it in every
write, so a deposed prime that has not noticed yet (paused, cut off) cannot assign anything.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from lclusterd.cluster.keys import Keys
from lclusterd.cluster.node import NodeSession
from lclusterd.cluster.kv import Absent, Delete, Event, ModIs, Put
from lclusterd.cluster.store import Store
from lclusterd.cluster.watch import Watches
from lclusterd.errors import StoreUnavailable

log = logging.getLogger(__name__)

RECHECK_SECONDS = 1.0


class PrimeElection:
    def __init__(self, store: Store, watches: Watches, keys: Keys, session: NodeSession,
                 on_elected: Callable[[int], None], on_deposed: Callable[[], None]):
        self.store = store
        self.watches = watches
        self.keys = keys
        self.session = session
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self.is_prime = False
        self.revision = 0  # the prime key's mod revision while we hold it
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prime election", daemon=True)
        self._watch = None
        session.on_new_lease(lambda _lease: self._wake.set())

    @property
    def name(self) -> str:
        return self.session.info.name

    def start(self) -> None:
        self._watch = self.watches.watch(self.keys.prime, self.store.revision() + 1, self, "prime")
        self._thread.start()

    def on_events(self, events: list[Event]) -> None:
        self._wake.set()

    def on_resync(self) -> int:
        self._wake.set()
        return self.store.revision()

    def _holds_key(self) -> int:
        """The prime key's mod revision if it is ours now (0 if not); campaigns when it is free."""
        me, lease = self.name.encode(), self.session.lease_id
        kv = self.store.get(self.keys.prime)
        if kv is None:
            result = self.store.txn([Absent(self.keys.prime)], [Put(self.keys.prime, me, lease)])
            return result.revision if result.succeeded else 0
        if kv.value == me and kv.lease == lease:
            return kv.mod_revision
        if kv.value == me:  # ours under an older lease of this node: move it to the current one
            result = self.store.txn([ModIs(self.keys.prime, kv.mod_revision)], [Put(self.keys.prime, me, lease)])
            return result.revision if result.succeeded else 0
        return 0

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                revision = self._holds_key()
            except StoreUnavailable as exc:
                log.debug("prime election: %s", exc)
                revision = self.revision if self.is_prime else 0  # keep acting until we know; guards protect us
            holds = revision > 0
            if holds and self.is_prime and revision != self.revision:
                # the key was rewritten (moved to this node's new lease): restart with the new guard
                self.is_prime = False
                self._on_deposed()
            if holds and not self.is_prime:
                log.info("node %s is now the prime", self.name)
                self.is_prime = True
                self.revision = revision
                self._on_elected(revision)
            elif not holds and self.is_prime:
                log.info("node %s is no longer the prime", self.name)
                self.is_prime = False
                self._on_deposed()
            self._wake.wait(RECHECK_SECONDS)
            self._wake.clear()

    def stop(self) -> None:
        """Stop campaigning and step down (the caller revokes the lease, freeing the key)."""
        self._stopped.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._watch:
            self._watch.stop()
        if self.is_prime:
            self.is_prime = False
            self._on_deposed()
        try:
            kv = self.store.get(self.keys.prime)
            if kv is not None and kv.value == self.name.encode() and kv.lease == self.session.lease_id:
                self.store.txn([ModIs(self.keys.prime, kv.mod_revision)], [Delete(self.keys.prime)])
        except StoreUnavailable:
            pass


def prime_duties(*duties):
    """PrimeElection's on_elected and on_deposed for several duties that run only on the prime
    (each with start(prime_revision) and stop())."""
    return lambda revision: [d.start(revision) for d in duties], lambda: [d.stop() for d in duties]
